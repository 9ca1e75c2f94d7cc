"""``python -m bench``: run the benchmarks (see ``--help`` and docs/performance.md)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
