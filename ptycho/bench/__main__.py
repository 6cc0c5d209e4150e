"""``python -m ptycho.bench``: the benchmark (see :mod:`ptycho.bench`); ``--training``: :mod:`ptycho.bench.training`."""

import sys

from ptycho.bench import main

if __name__ == "__main__":
    if "--training" in sys.argv[1:]:
        from ptycho.bench import training

        sys.exit(training.main([a for a in sys.argv[1:] if a != "--training"]))
    sys.exit(main())
