"""One benchmark in a fresh process: ``python -m bench.child KEY [--quick] --out FILE``.

Each benchmark gets its own interpreter, so one cannot warm caches or grow memory for the next
(the memory benchmark measures this process's RSS). ``--setup`` creates and migrates the database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("key", nargs="?")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--setup", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

    from . import db

    if args.setup:
        db.create_database()
    import django

    django.setup()
    if args.setup:
        db.migrate()
        return 0

    from .registry import BY_KEY
    from .report import Result

    benchmark = BY_KEY[args.key]
    module = benchmark.load()
    started = time.perf_counter()
    try:
        result = module.run(args.quick)
    except Exception:
        result = Result(benchmark.key, module.TITLE, error=traceback.format_exc())
    result.seconds = time.perf_counter() - started
    text = json.dumps(result.to_json(), indent=2)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
