"""Runs the benchmarks in bench/, prints their tables and saves their raw results as JSON.

Usage: .venv/bin/python bench/run.py [name ...] [--runs N] [--base IMAGE]

Every module bench/<name>.py other than the helpers (run, measure) is a benchmark with
run(args) -> dict (bench/ is on the import path since it holds this script). The dict is saved whole
to bench/results/<name>-<timestamp>.json and its "tables" entries ({title, header, rows}) are printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from types import ModuleType
from typing import Any

from measure import BENCH_DIR, DEFAULT_BASE_IMAGE, BenchError

RESULTS_DIR = os.path.join(BENCH_DIR, "results")
HELPER_MODULES = ("run", "measure")


def available_benchmarks() -> list[str]:
    """Every module in bench/ except the helpers is a benchmark, named after its file."""
    names = (os.path.splitext(entry)[0] for entry in sorted(os.listdir(BENCH_DIR)) if entry.endswith(".py"))
    return [name for name in names if name not in HELPER_MODULES]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    benchmarks = available_benchmarks()
    parser = argparse.ArgumentParser(description="Run the benchmarks in bench/ (default: all of them).")
    parser.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run, from: {', '.join(benchmarks)}")
    parser.add_argument("--runs", type=positive_int, default=5, help="rounds per benchmark (default: 5)")
    parser.add_argument("--base", default=DEFAULT_BASE_IMAGE, help=f"base image (default: {DEFAULT_BASE_IMAGE})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in benchmarks]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(benchmarks)}")
    args.names = args.names or benchmarks
    return args


def load(name: str) -> ModuleType:
    return importlib.import_module(name)


def render_table(table: dict[str, Any]) -> str:
    rows = [[str(cell) for cell in table["header"]]] + [[str(cell) for cell in row] for row in table["rows"]]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([table["title"], line(rows[0]), rule] + [line(row) for row in rows[1:]])


def save(name: str, result: dict[str, Any]) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, sort_keys=False)
        handle.write("\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for name in args.names:
        print(f"== {name}", flush=True)
        try:
            result = load(name).run(args)
        except BenchError as error:
            print(f"benchmark {name} failed: {error}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print(f"benchmark {name} interrupted", file=sys.stderr, flush=True)
            return 130
        path = save(name, result)
        for table in result.get("tables", []):
            print("\n" + render_table(table), flush=True)
        print(f"\nraw results: {os.path.relpath(path)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
