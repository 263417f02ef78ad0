"""Run the ingest of one partition in a fresh process and print its figures as JSON.

Used by the benchmark for peak-memory figures: the peak RSS of a process that did nothing
else, so a 1x and a 10x day are compared on equal terms.

The peak is the kernel's high-water mark of this process's own memory (`VmHWM`), not
`ru_maxrss`: on Linux `ru_maxrss` survives `exec`, so a probe started by a large parent (the
benchmark itself, after its pandas baseline) would report the parent's size.

A sampler thread also records what the resident memory is made of at its sampled peak: private
(anonymous) memory, which the process allocated, and file-backed pages, which are mostly the
code of the libraries it has run (shared with every process that maps them, and dropped by the
kernel under pressure). The lake's `deltalake` library alone is a 130 MB binary.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

from benchmarks.workload import ingest_day


def _status_mb(names: tuple[str, ...]) -> dict[str, float]:
    """The named memory figures of `/proc/self/status` (Linux), in MiB."""
    figures: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in names:
                figures[name] = int(value.split()[0]) / 1024
    return figures


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    try:
        return _status_mb(("VmHWM",))["VmHWM"]
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kB on most systems


def resident_parts_mb() -> dict[str, float]:
    """This process's resident memory now, in MiB: total, anonymous and file-backed."""
    return _status_mb(("VmRSS", "RssAnon", "RssFile"))


class ResidentSampler:
    """Samples `resident_parts_mb()` every few milliseconds and keeps the sample of the highest
    total (Linux only: elsewhere it records nothing)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.at_peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> ResidentSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                parts = resident_parts_mb()
            except OSError:
                return
            if parts.get("VmRSS", 0.0) > self.at_peak.get("VmRSS", 0.0):
                self.at_peak = parts
            self._stop.wait(self.interval_s)


def main() -> None:
    """`python -m benchmarks.probe ROOT SOURCE`: ingest the benchmark day and report."""
    root, source = Path(sys.argv[1]), sys.argv[2]
    with ResidentSampler() as sampler:
        started = time.perf_counter()
        stats = ingest_day(root, source, root / f"probe-{source}-lake")
        seconds = time.perf_counter() - started
    figures = {"lines": stats.lines_read, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    if sampler.at_peak:
        figures["anonymous_at_peak_mb"] = sampler.at_peak["RssAnon"]
        figures["file_backed_at_peak_mb"] = sampler.at_peak["RssFile"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
