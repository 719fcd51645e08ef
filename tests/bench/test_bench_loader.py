"""The 'loader' benchmark suite runs and reports one row per pipeline (no timings are asserted)."""

from attnkit.bench import SUITES


def test_loader_suite_runs_at_tiny_size():
    run, columns, _ = SUITES["loader"]
    rows = run(repeats=1, num_images=300, batch_size=16, batches=2, workers=(0,))
    assert [row["pipeline"] for row in rows] == ["DeviceLoader", "DataLoader, 0 workers"]
    assert rows[0]["speedup"] == 1.0 and all(row["images_per_s"] > 0 for row in rows)
    assert {key for key, _, _ in columns} <= set(rows[0])
