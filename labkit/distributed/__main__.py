"""``python -m labkit.distributed`` (and ``torchrun -m labkit.distributed``): see
:mod:`labkit.distributed.cli`."""

import sys

from labkit.distributed.cli import main

if __name__ == "__main__":
    sys.exit(main())
