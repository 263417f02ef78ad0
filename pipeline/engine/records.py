"""From raw line batches to records: UTF-8 decoding and multi-line folding, vectorised.

Internal column names start with `__`; field names cannot (they start with a letter), so a
field may be called `text` or `raw_bytes` without clashing with the record's own columns.
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pyarrow as pa_arrow
import pyarrow.compute as pc

from pipeline.engine.reader import LineBatch

TEXT = "__text"
RAW_BYTES = "__line_bytes"
RECORD_ID = "__record_id"
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "raw_line": pl.String(),
    "raw_bytes": pl.Binary(),
    "reasons": pl.List(pl.Struct({"field": pl.String, "check": pl.String, "value": pl.String})),
    "reason": pl.String(),
}


def count_failed_checks(quarantined: pl.DataFrame, counter: Counter[str]) -> None:
    """Add each rule's quarantined rows (`field: check`, one per reason) of `quarantined` to `counter`."""
    rules = (
        quarantined.select(pl.col("reasons").explode())
        .unnest("reasons")
        .select(pl.format("{}: {}", "field", "check").alias("rule"))
        .group_by("rule")
        .len()
    )
    for rule, count in rules.iter_rows():
        counter[rule] += count


def rules_by_rows(failed_checks: Counter[str]) -> dict[str, int]:
    """Quarantined rows per rule, most rows first and ties by rule name: the same order in
    `loads`, the manifest, metadata, messages and `pipeline sources check` on every run (a
    Counter's ties follow the order polars happened to group in)."""
    return dict(sorted(failed_checks.items(), key=lambda item: (-item[1], item[0])))


def decode(lines: pa_arrow.LargeBinaryArray) -> tuple[pl.Series, pl.Series | None]:
    """Decode lines as UTF-8. Returns the text and, only when some line is not valid
    UTF-8, the raw bytes (null for valid lines); invalid bytes show as `\\xNN` in the text."""
    try:
        return pl.Series(TEXT, pc.cast(lines, pa_arrow.large_string())), None
    except pa_arrow.ArrowInvalid:
        pass
    texts: list[str] = []
    raws: list[bytes | None] = []
    # Rare (a batch holding invalid UTF-8): each line is decoded on its own to find which.
    for raw in lines.to_pylist():
        try:
            texts.append(raw.decode("utf-8"))
            raws.append(None)
        except UnicodeDecodeError:
            texts.append(raw.decode("utf-8", errors="backslashreplace"))
            raws.append(raw)
    return pl.Series(TEXT, texts, dtype=pl.String), pl.Series(RAW_BYTES, raws, dtype=pl.Binary)


def line_frame(batch: LineBatch) -> pl.DataFrame:
    """A batch as a frame: `line_number`, the text, and the raw bytes of non-UTF-8 lines."""
    text, raw_bytes = decode(batch.lines)
    frame = pl.DataFrame(
        {
            "line_number": pl.int_range(
                batch.first_line_number, batch.first_line_number + len(batch.lines), dtype=pl.Int64, eager=True
            ),
            TEXT: text,
        }
    )
    if raw_bytes is None:
        return frame.with_columns(pl.lit(None, dtype=pl.Binary).alias(RAW_BYTES))
    return frame.with_columns(raw_bytes)


def fold(frame: pl.DataFrame) -> pl.DataFrame:
    """Merge each record's continuation lines into its text (multi-line records); any other
    column (a format's per-line state) is the record's first line's."""
    others = [column for column in frame.columns if column not in ("line_number", TEXT, RAW_BYTES, RECORD_ID)]
    folded = frame.group_by(RECORD_ID, maintain_order=True).agg(
        pl.col("line_number").first(),
        pl.col(TEXT).str.join("\n"),
        pl.col(RAW_BYTES),
        *(pl.col(column).first() for column in others),
    )
    invalid = folded[RAW_BYTES].list.eval(pl.element().is_not_null()).list.any()
    if not invalid.any():
        return folded.with_columns(pl.lit(None, dtype=pl.Binary).alias(RAW_BYTES)).drop(RECORD_ID)
    # Rare: rebuild the exact bytes of records holding invalid UTF-8.
    rebuilt = [
        _record_bytes(parts, text) if bad else None
        for parts, text, bad in zip(folded[RAW_BYTES].to_list(), folded[TEXT].to_list(), invalid.to_list(), strict=True)
    ]
    return folded.with_columns(pl.Series(RAW_BYTES, rebuilt, dtype=pl.Binary)).drop(RECORD_ID)


def _record_bytes(raw_lines: list[bytes | None], text: str) -> bytes:
    """The exact bytes of a folded record: raw bytes where a line was not UTF-8, else its text."""
    texts = text.split("\n")
    return b"\n".join(raw if raw is not None else line.encode() for raw, line in zip(raw_lines, texts, strict=True))


def line_quarantine(lines: pl.DataFrame, source_file: str, check: str, value: str) -> pl.DataFrame:
    """Quarantine rows for whole lines that fail one line-level check (same reason for all)."""
    return lines.select(
        pl.lit(source_file, dtype=pl.String).alias("source_file"),
        "line_number",
        pl.col(TEXT).alias("raw_line"),
        pl.col(RAW_BYTES).alias("raw_bytes"),
        pl.concat_list(
            pl.struct(
                pl.lit("line").alias("field"),
                pl.lit(check).alias("check"),
                pl.lit(value).alias("value"),
            )
        ).alias("reasons"),
        pl.lit(f"line: {check} (got {value})").alias("reason"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def orphan_rows(orphans: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """Quarantine rows for continuation lines with no record before them in their file."""
    return line_quarantine(
        orphans, source_file, "follows_a_record", "continuation line with no record before it in its file"
    )
