"""``python -m vhdmend``: same as the ``vhdmend`` console script."""

from __future__ import annotations

import sys

from vhdmend.cli import main

if __name__ == "__main__":
    sys.exit(main())
