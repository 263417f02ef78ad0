"""Ingest one partition in its own process, optionally stopping at a fault-injection hook.

Run by the crash and concurrency tests. A hook is installed by monkeypatching *inside this
process only* (product code has no test hooks): when the run reaches the named point it
creates the marker file and sleeps, so the test can SIGKILL it exactly there.

Hooks:
- `mid_file`: after the reader yielded the 2nd batch of a file (the file is half read);
- `mid_batch`: during the 3rd events insert, after half of that batch's rows were inserted;
- `dlq_write`: during the first DLQ insert of two rows or more, after half of its rows were inserted;
- `before_manifest`: after the transaction committed, before the manifest is written;
- `manifest_write`: the manifest's temporary file is written, not yet renamed into place;
- `none`: run to the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.engine import ingest as ingest_module  # noqa: E402
from pipeline.engine.objects import LocalObjectStore  # noqa: E402
from pipeline.engine.warehouse import Warehouse  # noqa: E402
from pipeline.sources import load_sources  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("landing", "output", "warehouse", "source", "day", "hook", "marker", "run-id"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20)
    args = parser.parse_args()
    marker = Path(args.marker) if args.marker else None

    def stop_here() -> None:
        assert marker is not None
        marker.touch()
        time.sleep(600)  # the test SIGKILLs us here

    if args.hook == "mid_file":
        original_reader = ingest_module.iter_line_batches

        def reader(stream, chunk_bytes):  # type: ignore[no-untyped-def]
            for number, batch in enumerate(original_reader(stream, chunk_bytes), start=1):
                yield batch
                if number == 2:
                    stop_here()

        ingest_module.iter_line_batches = reader  # type: ignore[assignment]
    elif args.hook in ("mid_batch", "dlq_write"):
        original_insert = Warehouse.insert
        calls = {"events": 0, "dlq": 0}
        target, nth = ("events", 3) if args.hook == "mid_batch" else ("dlq", 1)

        def insert(connection, table, frame):  # type: ignore[no-untyped-def]
            kind = table.rsplit(".", 1)[-1]
            # Count only inserts that can be cut in half (DLQ batches of one row are common: rows
            # failing a schema check come later, judged together).
            calls[kind] += frame.height >= 2
            if kind == target and calls[kind] == nth and frame.height >= 2:
                original_insert(connection, table, frame.head(frame.height // 2))
                stop_here()
            original_insert(connection, table, frame)

        Warehouse.insert = staticmethod(insert)  # type: ignore[assignment]
    elif args.hook == "before_manifest":
        original_write = ingest_module._write_manifest

        def write_manifest(*arguments, **keywords):  # type: ignore[no-untyped-def]
            stop_here()
            original_write(*arguments, **keywords)

        ingest_module._write_manifest = write_manifest  # type: ignore[assignment]
    elif args.hook == "manifest_write":
        import os

        original_replace = os.replace

        def replace(source, target, *arguments, **keywords):  # type: ignore[no-untyped-def]
            if str(target).endswith(".json"):
                stop_here()
            return original_replace(source, target, *arguments, **keywords)

        os.replace = replace  # type: ignore[assignment]
    elif args.hook != "none":
        raise SystemExit(f"unknown hook {args.hook}")

    stats = ingest_module.ingest_partition(
        load_sources()[args.source],
        dt.date.fromisoformat(args.day),
        landing=LocalObjectStore(Path(args.landing)),
        output=LocalObjectStore(Path(args.output)),
        warehouse=Warehouse(Path(args.warehouse), lock_timeout_s=300),
        run_id=args.run_id,
        quarantined_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        chunk_bytes=args.chunk_bytes,
    )
    print(stats.status, stats.rows_loaded, stats.rows_quarantined, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
