"""python -m bench [name ...]: run the named benchmarks (default: all)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = ["transfer", "jobs", "engine", "containers", "api", "science", "viewer", "bundle", "fuzz"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="./manage bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=BENCHMARKS + [[]], help="benchmarks to run (default: all)")
    args = parser.parse_args()
    for name in args.names or BENCHMARKS:
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"bench.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
