"""The benchmark's workload: one generated day and one ingest of it.

Shared by `benchmarks.run`, `benchmarks.probe` and `benchmarks.profile_ingest`, so that they
measure the same thing. Imports only the pipeline, not the baselines: the memory probe
measures a process that loaded what an ingest loads, nothing more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli.generate import SOURCES, generate_landing_zone
from pipeline.engine.ingest import DEFAULT_PARSE_WORKERS, IngestOptions, RunInfo, ingest_partition
from pipeline.engine.lake import Lake, LakeLocation, LoadRecord
from pipeline.engine.objects import LocalObjectStore
from pipeline.sources import load_sources

DAY = dt.date(2024, 3, 1)
BAD_LINE_RATE = 0.01


def generate_day(root: Path, lines_per_hour: int, sources: Sequence[str] = SOURCES) -> None:
    """Land one full day (`DAY`, all 24 hours, 1% bad lines) of `sources` under `root/landing`."""
    generate_landing_zone(
        root / "landing",
        [DAY],
        sources=sources,
        lines_per_hour=lines_per_hour,
        bad_line_rate=BAD_LINE_RATE,
        missing_hours={},
    )


def ingest_day(
    root: Path,
    source: str,
    lake: Path,
    *,
    run_id: str = "benchmark",
    parse_workers: int = DEFAULT_PARSE_WORKERS,
) -> LoadRecord:
    """The pipeline's ingest of `DAY` of `source` from `root/landing` into the local lake at
    `lake`; returns the attempt's `loads` record."""
    return ingest_partition(
        load_sources()[source],
        DAY,
        landing=LocalObjectStore(root / "landing"),
        output=LocalObjectStore(root / "output"),
        lake=Lake(LakeLocation.local(lake)),
        run=RunInfo(run_id, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
        options=IngestOptions(parse_workers=parse_workers, resume=False),
    ).record
