"""``python -m ptycho``: the ``ptycho-patches`` command line (see :mod:`ptycho.cli`)."""

import sys

from ptycho.cli import main

if __name__ == "__main__":
    sys.exit(main())
