"""Run the ingest of one partition in a fresh process and print its figures as JSON.

Used by the benchmark for peak-memory figures: the peak RSS of a process that did nothing
else, so a 1x and a 10x day are compared on equal terms.

The peak is the kernel's high-water mark of this process's own memory (`VmHWM`), not
`ru_maxrss`: on Linux `ru_maxrss` survives `exec`, so a probe started by a large parent (the
benchmark itself, after its pandas baseline) would report the parent's size.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.workload import ingest_day


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kB on most systems


def main() -> None:
    """`python -m benchmarks.probe ROOT SOURCE`: ingest the benchmark day and report."""
    root, source = Path(sys.argv[1]), sys.argv[2]
    started = time.perf_counter()
    stats = ingest_day(root, source, root / f"probe-{source}-lake")
    seconds = time.perf_counter() - started
    print(json.dumps({"lines": stats.lines_read, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
