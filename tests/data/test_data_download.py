"""Downloads end to end against a local HTTP server, resume, checksums, and safe tar extraction."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

import official_formats as fmt
from attnkit.data import ChecksumError, DownloadError, UnsafeArchiveError, load_dataset
from attnkit.data import cifar, idx, svhn
from attnkit.data._download import Resource, download_file, safe_extract_tar


def _serve_cifar(monkeypatch, server, name: str, archive: bytes, md5: str | None = None) -> str:
    """Serve ``archive`` as NAME's official file and make the checksum table expect it; returns its URL path."""
    spec = cifar.ARCHIVES[name]
    resource = dataclasses.replace(spec.resource, md5=md5 or fmt.md5(archive))
    monkeypatch.setitem(cifar.ARCHIVES, name, dataclasses.replace(spec, resource=resource))
    path = f"/{name}/{resource.filename}"
    server.files[path] = archive
    return path


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- end to end: each official format over HTTP ---------------------------------------------------------


def test_cifar10_binary_download_end_to_end(file_server, monkeypatch, tmp_path):
    archive, truth = fmt.cifar10_archive()
    _serve_cifar(monkeypatch, file_server, "cifar10", archive)
    train = load_dataset("cifar10", "train", root=tmp_path, download=True, mirror=file_server.url)
    test = load_dataset("cifar10", "test", root=tmp_path, download=True, mirror=file_server.url)

    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    np.testing.assert_array_equal(train.images.numpy(), fmt.images(10, first=truth["train_first"]))
    np.testing.assert_array_equal(test.images.numpy(), fmt.images(3, first=truth["test_first"]))
    assert train.labels.tolist() == truth["train_labels"] and test.labels.tolist() == [9, 0, 4]
    assert train.labels.dtype == torch.int64
    assert train.classes == fmt.CIFAR10_NAMES
    assert train.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    # Channel order, by hand: record byte 1 is red (0, 0), byte 1 + 1024 green (0, 0), byte 1 + 32 red (1, 0).
    record = (tmp_path / "cifar10/cifar-10-batches-bin/data_batch_1.bin").read_bytes()[:3073]
    assert train.images[0, 0, 0, 0] == record[1] == 11
    assert train.images[0, 1, 0, 0] == record[1 + 1024] == 78
    assert train.images[0, 0, 1, 0] == record[1 + 32] == 16
    assert train.images[0, 2, 0, 1] == record[1 + 2048 + 1] == 148
    assert file_server.requests == [("/cifar10/cifar-10-binary.tar.gz", None)]  # the test split reuses the files
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(".extract-*"))


def test_cifar100_binary_uses_fine_labels(file_server, monkeypatch, tmp_path):
    archive, truth = fmt.cifar100_archive()
    _serve_cifar(monkeypatch, file_server, "cifar100", archive)
    monkeypatch.setenv("ATTNKIT_DATA_MIRROR", file_server.url)  # the mirror from the environment this time
    train = load_dataset("cifar100", "train", root=tmp_path, download=True)
    test = load_dataset("cifar100", "test", root=tmp_path)
    assert train.labels.tolist() == [97, 0, 42, 99] and test.labels.tolist() == [5, 63]
    np.testing.assert_array_equal(train.images.numpy(), fmt.images(4, first=0))
    np.testing.assert_array_equal(test.images.numpy(), fmt.images(2, first=50))
    assert train.classes == truth["fine_names"] and train.num_classes == 100


def test_idx_gzip_download_end_to_end(file_server, monkeypatch, tmp_path):
    digits = {"train": fmt.images(5, channels=1, size=28)[:, 0], "test": fmt.images(2, channels=1, size=28, first=9)[:, 0]}
    labels = {"train": np.array([3, 1, 4, 1, 5], np.uint8), "test": np.array([9, 2], np.uint8)}
    spec = idx.IDX_SETS["fashion-mnist"]
    replaced = {}
    for kind, table, arrays in (("images", spec.images, digits), ("labels", spec.labels, labels)):
        replaced[kind] = {}
        for split, resource in table.items():
            body = fmt.idx_gz(arrays[split])
            file_server.files[f"/fashion-mnist/{resource.filename}"] = body
            replaced[kind][split] = dataclasses.replace(resource, md5=fmt.md5(body))
    monkeypatch.setitem(idx.IDX_SETS, "fashion-mnist", dataclasses.replace(spec, **replaced))

    train = load_dataset("fashion-mnist", "train", root=tmp_path, download=True, mirror=file_server.url)
    test = load_dataset("fashion-mnist", "test", root=tmp_path, download=True, mirror=file_server.url)
    assert train.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), digits["train"])
    assert train.images[1, 0, 2, 3] == fmt.pixel(1, 0, 2, 3) == 37  # row 2, column 3 of sample 1
    assert train.labels.tolist() == [3, 1, 4, 1, 5] and test.labels.tolist() == [9, 2]
    assert train.classes[9] == "Ankle boot" and train.mean == (0.2860,)
    assert sorted(p.name for p in (tmp_path / "fashion-mnist").iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    )


def test_svhn_mat_download_end_to_end(file_server, monkeypatch, tmp_path):
    x, y = fmt.svhn_arrays(12)
    body = fmt.svhn_mat(x, y)
    resource = dataclasses.replace(svhn.SVHN_FILES["test"], md5=fmt.md5(body))
    monkeypatch.setitem(svhn.SVHN_FILES, "test", resource)
    file_server.files["/svhn/test_32x32.mat"] = body
    data = load_dataset("svhn", "test", root=tmp_path, download=True, mirror=file_server.url)
    assert data.images.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(data.images.numpy(), fmt.images(12))
    assert data.images[5, 2, 7, 1] == x[7, 1, 2, 5]  # X is indexed (row, column, channel, sample)
    assert data.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # the stored 10 means the digit 0


def test_missing_files_without_download_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("cifar10", root=tmp_path)
    assert _files(tmp_path) == []


# --- failures leave nothing half written ----------------------------------------------------------------


def test_truncated_transfer_raises_keeps_only_the_part_and_resumes(file_server, monkeypatch, tmp_path):
    archive, _ = fmt.cifar10_archive()
    path = _serve_cifar(monkeypatch, file_server, "cifar10", archive)
    file_server.truncate.add(path)
    with pytest.raises(DownloadError, match=r"stopped after \d+ of \d+ bytes.*resumes"):
        load_dataset("cifar10", root=tmp_path, download=True, mirror=file_server.url)
    part = tmp_path / "cifar10/cifar-10-binary.tar.gz.part"
    assert _files(tmp_path) == ["cifar10", "cifar10/cifar-10-binary.tar.gz.part"]  # no final file, nothing extracted
    assert part.read_bytes() == archive[: len(archive) // 2]

    file_server.truncate.clear()  # the connection is fine again: the next call resumes with a Range request
    data = load_dataset("cifar10", root=tmp_path, download=True, mirror=file_server.url)
    assert file_server.requests[-1] == (path, f"bytes={len(archive) // 2}-")
    assert len(data) == 10 and not part.exists()
    assert (tmp_path / "cifar10/cifar-10-binary.tar.gz").read_bytes() == archive


def test_truncated_archive_fails_its_checksum_and_is_deleted(file_server, monkeypatch, tmp_path):
    archive, _ = fmt.cifar10_archive()
    _serve_cifar(monkeypatch, file_server, "cifar10", archive[:-100], md5=fmt.md5(archive))  # whole, short file
    with pytest.raises(ChecksumError, match="md5 is .*expected"):
        load_dataset("cifar10", root=tmp_path, download=True, mirror=file_server.url)
    assert _files(tmp_path) == ["cifar10"]


def test_checksum_mismatch_leaves_nothing(file_server, monkeypatch, tmp_path):
    archive, _ = fmt.cifar10_archive()
    _serve_cifar(monkeypatch, file_server, "cifar10", archive, md5="0" * 32)
    with pytest.raises(ChecksumError, match="not the official one"):
        load_dataset("cifar10", root=tmp_path, download=True, mirror=file_server.url)
    assert _files(tmp_path) == ["cifar10"]


def test_resume_of_an_existing_part_file(file_server, tmp_path):
    body = bytes(range(256)) * 40
    file_server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:1000])
    download_file(f"{file_server.url}/f.bin", dest, Resource("f.bin", "unused", sha256=fmt.sha256(body)))
    assert dest.read_bytes() == body and file_server.requests == [("/f.bin", "bytes=1000-")]


def test_server_ignoring_range_restarts_from_zero(file_server, tmp_path):
    body = bytes(range(256)) * 40
    file_server.files["/f.bin"] = body
    file_server.ignore_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(b"junk that must not be kept")
    download_file(f"{file_server.url}/f.bin", tmp_path / "f.bin", Resource("f.bin", "unused", md5=fmt.md5(body)))
    assert (tmp_path / "f.bin").read_bytes() == body and _files(tmp_path) == ["f.bin"]


def test_complete_part_file_answered_416_is_verified_and_kept(file_server, tmp_path):
    body = b"x" * 5000
    file_server.files["/f.bin"] = body
    (tmp_path / "f.bin.part").write_bytes(body)
    download_file(f"{file_server.url}/f.bin", tmp_path / "f.bin", Resource("f.bin", "unused", md5=fmt.md5(body)))
    assert (tmp_path / "f.bin").read_bytes() == body and len(file_server.requests) == 1


def test_http_error_is_clear(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{file_server.url}/missing.bin", tmp_path / "m.bin", Resource("m.bin", "unused", md5="0" * 32))
    assert _files(tmp_path) == []


def test_existing_corrupt_file_is_reported_not_used(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn/test_32x32.mat").write_bytes(b"not the file")
    with pytest.raises(ChecksumError, match="delete .* download=True"):
        load_dataset("svhn", "test", root=tmp_path)


# --- tar extraction -------------------------------------------------------------------------------------


def _tar(members: list[tuple[str, str, str | bytes]]) -> bytes:
    """(kind, name, content or link target) -> tar bytes; kind is 'file', 'symlink' or 'hardlink'."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = payload
                tar.addfile(info)
    return buffer.getvalue()


GOOD = ("file", "data/good.txt", b"fine")


@pytest.mark.parametrize(
    "bad",
    [
        ("file", "../escape.txt", b"x"),
        ("file", "data/../../escape.txt", b"x"),
        ("file", "/tmp/attnkit-absolute.txt", b"x"),
        ("symlink", "data/link", "../../outside"),
        ("symlink", "data/link", "/etc/passwd"),
        ("hardlink", "data/hard", "../outside"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-relative", "symlink-absolute", "hardlink"],
)
def test_malicious_tar_members_are_refused_before_anything_is_written(tmp_path, bad):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar([GOOD, bad]))
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract_tar(archive, target)
    assert os.listdir(target) == []  # not even the good member
    assert not os.path.exists("/tmp/attnkit-absolute.txt") and not (tmp_path / "escape.txt").exists()


def test_paths_through_an_archive_symlink_are_refused(tmp_path):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar([("symlink", "data/up", "."), ("file", "data/up/x.txt", b"x")]))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_tar(archive, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_malicious_member_in_a_downloaded_cifar_archive(file_server, monkeypatch, tmp_path):
    archive = fmt.tar_gz({"cifar-10-batches-bin/test_batch.bin": b"\x00" * 3073, "../evil.bin": b"x"})
    _serve_cifar(monkeypatch, file_server, "cifar10", archive)
    with pytest.raises(UnsafeArchiveError):
        load_dataset("cifar10", "test", root=tmp_path, download=True, mirror=file_server.url)
    assert _files(tmp_path) == ["cifar10", "cifar10/cifar-10-binary.tar.gz"]  # verified download kept, nothing extracted


def test_safe_extraction_keeps_inside_links_and_replaces_partial_folders(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar([GOOD, ("symlink", "data/latest", "good.txt"), ("hardlink", "data/copy", "data/good.txt")]))
    target = tmp_path / "out"
    (target / "data").mkdir(parents=True)
    (target / "data/stale.txt").write_text("left over from an interrupted attempt")
    assert safe_extract_tar(archive, target) == ["data"]
    assert sorted(os.listdir(target / "data")) == ["copy", "good.txt", "latest"]
    assert (target / "data/latest").read_bytes() == b"fine" and (target / "data/copy").read_bytes() == b"fine"


def test_damaged_archive_is_a_clear_error_and_writes_nothing(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(fmt.tar_gz({"data/a.bin": os.urandom(20000)})[:-2000])
    with pytest.raises(ValueError, match="damaged"):
        safe_extract_tar(archive, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_part_file_longer_than_the_file_is_discarded_after_416(file_server, tmp_path):
    body = b"y" * 3000
    file_server.files["/f.bin"] = body
    (tmp_path / "f.bin.part").write_bytes(body + b"junk")
    download_file(f"{file_server.url}/f.bin", tmp_path / "f.bin", Resource("f.bin", "unused", md5=fmt.md5(body)))
    assert (tmp_path / "f.bin").read_bytes() == body and _files(tmp_path) == ["f.bin"]
    assert file_server.requests == [("/f.bin", "bytes=3004-"), ("/f.bin", None)]


# --- connection resets, full disks, killed extractions -----------------------------------------------------


def test_a_reset_connection_keeps_every_byte_that_arrived_and_resumes(file_server, tmp_path):
    body = os.urandom(200_000)
    file_server.files["/f.bin"] = body
    file_server.reset.add("/f.bin")
    resource = Resource("f.bin", "unused", md5=fmt.md5(body))
    with pytest.raises(DownloadError, match="broke off after 100000 bytes") as error:
        download_file(f"{file_server.url}/f.bin", tmp_path / "f.bin", resource)
    assert "\n" not in str(error.value) and (tmp_path / "f.bin.part").read_bytes() == body[:100_000]
    file_server.reset.clear()
    download_file(f"{file_server.url}/f.bin", tmp_path / "f.bin", resource)
    assert file_server.requests[-1] == ("/f.bin", "bytes=100000-") and (tmp_path / "f.bin").read_bytes() == body


def test_a_file_larger_than_the_free_space_is_refused_before_writing(file_server, tmp_path):
    from attnkit.errors import user_message

    file_server.files["/huge.bin"] = b"x" * 1000
    file_server.announce["/huge.bin"] = 10 ** 14  # 100 TB announced
    with pytest.raises(OSError) as error:
        download_file(f"{file_server.url}/huge.bin", tmp_path / "huge.bin", Resource("huge.bin", "unused", md5="0" * 32))
    assert error.value.errno == errno.ENOSPC and _files(tmp_path) == []
    message = user_message(error.value)
    assert message.startswith(f"not enough space to download {file_server.url}/huge.bin: it needs 95,367,432 MiB")
    assert f"({tmp_path / 'huge.bin.part'}); free some space" in message


def test_a_killed_extractions_folder_is_removed_by_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    target = tmp_path / "out"
    (target / f".extract-{dead.pid}-k1ll3d" / "data").mkdir(parents=True)
    (target / f".extract-{os.getpid()}-mine").mkdir()  # a live process's (this one's): left alone
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar([GOOD]))
    assert safe_extract_tar(archive, target) == ["data"]
    assert sorted(os.listdir(target)) == [f".extract-{os.getpid()}-mine", "data"]


def test_a_full_disk_during_extraction_says_so(tmp_path, monkeypatch):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar([GOOD]))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", full)
    with pytest.raises(OSError, match="No space left on device while extracting ok.tar") as error:
        safe_extract_tar(archive, tmp_path / "out")
    assert "damaged" not in str(error.value) and error.value.filename == str(tmp_path / "out")
