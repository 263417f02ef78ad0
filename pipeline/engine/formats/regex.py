"""`regex`: a regular expression with one named group per field (the original format).

Example (`docs/sources.md`): the built-in `access` and `app` sources.
"""

from __future__ import annotations

import polars as pl

from pipeline.engine.formats import LINE_PROBLEM, RecordFormat
from pipeline.engine.records import TEXT
from pipeline.sources.spec import SourceSpec

# An empty group after the pattern: "" when the line matched, null when not (a group around
# the whole pattern would copy every line once more; measured ~13% of the regex pass).
MATCH_GROUP = "__matched"


class RegexRecords(RecordFormat):
    """Fields are the named groups of `pattern`; a record it does not match fails `matches_format`."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.pattern = f"(?:{spec.pattern})(?P<{MATCH_GROUP}>)"

    def extract(self, records: pl.DataFrame) -> pl.DataFrame:
        groups = records.select(pl.col(TEXT).str.extract_groups(self.pattern).alias("groups")).unnest("groups")
        return groups.select(
            *self.spec.columns,
            pl.when(pl.col(MATCH_GROUP).is_null()).then(pl.lit("matches_format")).alias(LINE_PROBLEM),
        )
