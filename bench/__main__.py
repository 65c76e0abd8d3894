"""`python -m bench [--quick] [--only SECTION,...]`: every benchmark and fault drill in one run.

Prints one Markdown table per measurement, writes them to `bench/results/<date>[-quick].md`, scans
every log the run produced for secrets, and exits non-zero if a drill's asserted outcome failed or a
secret leaked. Quick mode (CI's smoke test) finishes in about four minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import drills, faults, poller, replicas, scale, stop, strategies
from bench.leaks import scan
from bench.report import Context, DrillFailed, Table

SECTIONS = {"strategies": strategies, "scale": scale, "poller": poller, "drills": drills, "faults": faults,
            "stop": stop, "replicas": replicas}
RESULTS = Path(__file__).resolve().parent / "results"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; about four minutes (CI smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections: " + ", ".join(SECTIONS))
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    failures: list[str] = []
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        ctx = Context(quick=args.quick, tmp=Path(tmp))
        for name in names:
            print(f"== {name} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                section = await SECTIONS[name].run(ctx)
            except DrillFailed as exc:
                failures.append(f"{name}: {exc}")
                section = list(getattr(exc, "tables", []))
            except Exception as exc:  # noqa: BLE001 - report the section, run the others
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                section = []
            for table in section:
                print(table.markdown(), flush=True)
            tables += section
            print(f"== {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        leak_table, leaks = scan(ctx)
        tables.append(leak_table)
        print(leak_table.markdown(), flush=True)
        if leaks:
            failures.append(f"secrets found in logs: {leaks}")
    elapsed = time.monotonic() - started
    header = (f"# Benchmark results, {'quick' if args.quick else 'full'} mode\n\n"
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · Python {platform.python_version()} · "
              f"{platform.machine()} · sections: {', '.join(names)} · {elapsed:.0f} s\n\n"
              "Reproduce: `python -m bench" + (" --quick" if args.quick else "") + "`\n\n")
    failed = "".join(f"- FAILED: {f}\n" for f in failures)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{datetime.now(UTC):%Y-%m-%d}{'-quick' if args.quick else ''}.md"
        out.write_text(header + (failed + "\n" if failed else "") + "\n".join(t.markdown() for t in tables))
        print(f"written to {out.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    print(f"total {elapsed:.0f} s", file=sys.stderr)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
