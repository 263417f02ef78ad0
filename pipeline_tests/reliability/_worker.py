"""Ingest one partition in its own process, optionally stopping at a fault-injection hook.

Run by the crash and concurrency tests. A hook is installed by monkeypatching *inside this
process only* (product code has no test hooks): when the run reaches the named point it
creates the marker file and sleeps, so the test can SIGKILL it exactly there.

Hooks:
- `mid_file`: after the reader yielded the 2nd batch of a file (the file is half read);
- `mid_write`: during the 3rd write of events rows into the day's new data files (uncommitted);
- `dlq_write`: during the first write of DLQ rows of two rows or more;
- `after_events_commit`: the day's events are committed, its DLQ and metrics not yet;
- `after_dlq_commit`: events and DLQ committed, metrics not yet;
- `before_seal`: every table committed, the `loads` row (the seal) not yet appended;
- `before_manifest`: sealed, the manifest not yet written;
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
from pipeline.engine.lake import Lake, LakeLocation  # noqa: E402
from pipeline.engine.lake.files import DayFileWriter  # noqa: E402
from pipeline.engine.lake.tables import SourceTables  # noqa: E402
from pipeline.engine.objects import LocalObjectStore  # noqa: E402
from pipeline.sources import load_sources  # noqa: E402

_COMMIT_HOOKS = {"after_events_commit": "events", "after_dlq_commit": "dlq"}


def _lake(url: str, lock_wait_s: float, lease_s: float) -> Lake:
    """A local lake, or one in S3 reached with the standard AWS environment (the test's moto)."""
    if not url.startswith("s3://"):
        return Lake(LakeLocation.local(Path(url)), lock_wait_s=lock_wait_s)
    import boto3

    from pipeline.engine.lake import S3ClientSettings

    client = boto3.session.Session().client("s3")
    return Lake(LakeLocation.s3(url, S3ClientSettings()), s3_client=client, lock_wait_s=lock_wait_s, lease_s=lease_s)


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("landing", "output", "lake", "source", "day", "hook", "marker", "run-id"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20)
    parser.add_argument("--lock-wait-s", type=float, default=300.0)
    parser.add_argument("--lease-s", type=float, default=120.0)
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
    elif args.hook in ("mid_write", "dlq_write"):
        original_write = DayFileWriter.write
        calls = {"events": 0, "dlq": 0}
        target, nth = ("events", 3) if args.hook == "mid_write" else ("dlq", 1)

        def write(self, batch):  # type: ignore[no-untyped-def]
            kind = "dlq" if "reasons" in self.file_schema.names else "events"
            # Count only writes that can be cut in half (single DLQ rows are common).
            calls[kind] += batch.num_rows >= 2
            if kind == target and calls[kind] == nth and batch.num_rows >= 2:
                original_write(self, batch.slice(0, batch.num_rows // 2))
                stop_here()
            original_write(self, batch)

        DayFileWriter.write = write  # type: ignore[method-assign]
    elif args.hook in _COMMIT_HOOKS:
        original_replace = SourceTables.replace_day

        def replace_day(self, table, *arguments, **keywords):  # type: ignore[no-untyped-def]
            version = original_replace(self, table, *arguments, **keywords)
            if table == _COMMIT_HOOKS[args.hook]:
                stop_here()
            return version

        SourceTables.replace_day = replace_day  # type: ignore[method-assign]
    elif args.hook == "before_seal":
        original_append = SourceTables.append_loads

        def append_loads(self, records):  # type: ignore[no-untyped-def]
            records = list(records)
            if records and records[0].seals:
                stop_here()
            return original_append(self, records)

        SourceTables.append_loads = append_loads  # type: ignore[method-assign]
    elif args.hook == "before_manifest":
        original_manifest = ingest_module._write_manifest

        def write_manifest(*arguments, **keywords):  # type: ignore[no-untyped-def]
            stop_here()
            original_manifest(*arguments, **keywords)

        ingest_module._write_manifest = write_manifest  # type: ignore[assignment]
    elif args.hook == "manifest_write":
        import os

        original_rename = os.replace

        def replace(source, target, *arguments, **keywords):  # type: ignore[no-untyped-def]
            if str(target).endswith(".json"):
                stop_here()
            return original_rename(source, target, *arguments, **keywords)

        os.replace = replace  # type: ignore[assignment]
    elif args.hook != "none":
        raise SystemExit(f"unknown hook {args.hook}")

    result = ingest_module.ingest_partition(
        load_sources()[args.source],
        dt.date.fromisoformat(args.day),
        landing=LocalObjectStore(Path(args.landing)),
        output=LocalObjectStore(Path(args.output)),
        lake=_lake(args.lake, args.lock_wait_s, args.lease_s),
        run=ingest_module.RunInfo(run_id=args.run_id, quarantined_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
        options=ingest_module.IngestOptions(chunk_bytes=args.chunk_bytes),
    )
    record = result.record
    print(record.status, record.rows_loaded, record.rows_quarantined, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
