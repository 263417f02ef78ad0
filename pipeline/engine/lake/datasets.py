"""A table's files as a pyarrow dataset, through pyarrow's own (native) file systems.

Delta gives the files (its log's add actions); pyarrow reads them, with the partition column
taken from their `partition_date=YYYY-MM-DD/` folder, and with the table's declared schema,
so files written before a column was added read NULL for it. DuckDB scans such a dataset
with projection and filter pushdown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from pipeline.engine.lake.location import LakeLocation
from pipeline.engine.lake.schemas import PARTITION_COLUMN

_PARTITIONING = ds.partitioning(pa.schema([pa.field(PARTITION_COLUMN, pa.date32())]), flavor="hive")


def table_files(delta_table: DeltaTable, days: Collection[dt.date] | None = None) -> list[str]:
    """Relative paths of a snapshot's files, only those of `days` when given."""
    actions = pa.table(delta_table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    if days is not None:
        wanted = pa.array(sorted(days), pa.date32())
        actions = actions.filter(pc.is_in(actions.column(f"partition.{PARTITION_COLUMN}"), value_set=wanted))
    return actions.column("path").to_pylist()


def files_dataset(location: LakeLocation, table_uri: str, schema: pa.Schema, paths: list[str]) -> ds.Dataset:
    """The given files of a table (relative paths) as one dataset of `schema`.

    Read by their full paths (`bucket/prefix/...` on S3), so that an error reading one names
    it whole: a file relative to its table would name neither the bucket nor the table."""
    table = location.filesystem(table_uri)
    root = table.base_path.rstrip("/")
    return ds.dataset(
        [f"{root}/{path}" for path in paths],
        schema=schema,
        format="parquet",
        filesystem=table.base_fs,
        partitioning=_PARTITIONING,
        partition_base_dir=root,
    )
