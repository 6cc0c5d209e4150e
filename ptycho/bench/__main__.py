"""``python -m ptycho.bench``: the benchmark (see :mod:`ptycho.bench`)."""

import sys

from ptycho.bench import main

if __name__ == "__main__":
    sys.exit(main())
