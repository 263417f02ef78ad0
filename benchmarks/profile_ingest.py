"""Profile the ingest of one partition with pyinstrument: where does the time go?

`python -m benchmarks.profile_ingest [--lines 2000000] [--source access] [--workers 1]`
generates the partition (deterministically, as `benchmarks.run` does), ingests it once under
pyinstrument and prints the call tree (and writes it as HTML next to the results).

pyinstrument samples the thread it was started on only, so the default is one parse worker:
the whole pipeline (read, parse, validate, quarantine, load) then runs on that thread and the
percentages are shares of the ingest's CPU work. `--workers 2` profiles the threaded shape
(the main thread then shows mostly waiting for the parse threads and loading).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from pyinstrument import Profiler

from benchmarks.workload import generate_day, ingest_day
from pipeline.settings import PROJECT_ROOT


def main(argv: list[str] | None = None) -> int:
    """Generate, ingest under the profiler, print the profile."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_ingest", description=__doc__)
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--source", default="access", choices=["access", "app"])
    parser.add_argument("--workers", type=int, default=1, help="parse threads (pyinstrument sees the main one)")
    parser.add_argument("--workdir", default=str(PROJECT_ROOT / "benchmarks" / "output" / "profile"))
    parser.add_argument("--reuse", action="store_true", help="reuse already generated files in --workdir")
    args = parser.parse_args(argv)
    root = Path(args.workdir)
    per_hour = max(1, args.lines // 24)
    if not (args.reuse and (root / "landing" / args.source).exists()):
        shutil.rmtree(root, ignore_errors=True)
        generate_day(root, per_hour, [args.source])
    lake = root / "profile-lake"
    shutil.rmtree(lake, ignore_errors=True)
    profiler = Profiler(interval=0.001)
    started = time.perf_counter()
    profiler.start()
    stats = ingest_day(root, args.source, lake, run_id="profile", parse_workers=args.workers)
    profiler.stop()
    seconds = time.perf_counter() - started
    print(f"{stats.lines_read:,} lines in {seconds:.2f} s = {stats.lines_read / seconds:,.0f} lines/s (profiled)")
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    html = root / f"profile-{args.source}.html"
    html.write_text(profiler.output_html())
    print(f"HTML profile: {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
