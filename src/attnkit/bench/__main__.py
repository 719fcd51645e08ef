"""``python -m attnkit.bench SUITE [--device D] [--repeats N] [--json PATH]``: the benchmarks without the CLI."""

from . import main

if __name__ == "__main__":
    main()
