"""Parse and validate batches of raw lines, vectorised, and split them into events and quarantine.

For one source and one data date, `PartitionParser.parse_file` turns the line batches of a
file into `ParsedBatch`es: valid records (typed columns) and quarantined records (the raw
line and every reason it failed). Every line read is accounted for: loaded, quarantined,
folded into a multi-line record as a continuation, or ignored (blank, or a header or comment
line of a delimited format).

Stages, each a polars expression over the whole batch:
1. decode UTF-8 (a batch with invalid bytes falls back to per-line decoding), drop the lines
   the format ignores (`pipeline.engine.records`, `RecordFormat.prepare`);
2. fold multi-line records (sources with `record_start`);
3. the source's format finds each column's text (`pipeline.engine.formats`), shared code casts
   it to its type (null values, aliases, timestamps: `pipeline.engine.timestamps`);
4. validate: a vectorised pre-filter mirroring the schema's checks passes the clearly valid rows;
   the rest are held (`PendingValidation`) and judged by pandera (polars backend) together,
   failures collected by row position (`pipeline.engine.validation`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import polars as pl

from pipeline.engine.batches import ParsedBatch, PendingValidation, quarantine_entry
from pipeline.engine.formats import LINE_DETAIL, LINE_PROBLEM, RecordFormat, record_format
from pipeline.engine.formats.regex import RegexRecords
from pipeline.engine.reader import FileReadError, LineBatch
from pipeline.engine.records import QUARANTINE_SCHEMA, RAW_BYTES, RECORD_ID, TEXT, fold, line_frame, orphan_rows
from pipeline.engine.timestamps import TimestampReader
from pipeline.engine.validation import MAX_VALUE_CHARS, POLARS_TYPES, ROW, SchemaJudge
from pipeline.sources.spec import FieldSpec, SourceSpec

_ROW = ROW
REASON_DTYPE = pl.Struct({"field": pl.String, "check": pl.String, "value": pl.String})
__all__ = [
    "JUDGE_ROWS",
    "POLARS_TYPES",
    "QUARANTINE_SCHEMA",
    "REASON_DTYPE",
    "ParsedBatch",
    "PartitionParser",
    "PendingValidation",
    "events_schema",
    "quarantine_entry",
]


def events_schema(spec: SourceSpec) -> dict[str, pl.DataType]:
    """Column types of a source's valid rows as produced by the parser."""
    schema: dict[str, pl.DataType] = {
        "source_file": pl.String(),
        "line_number": pl.Int64(),
        spec.timestamp.field: POLARS_TYPES["timestamp"],
    }
    schema.update({name: POLARS_TYPES[field.type] for name, field in spec.fields.items()})
    return schema


# Suspect rows are judged by pandera in groups of up to this many rather than per batch or
# per file: each pandera call costs a fixed ~15 ms, which per 4 MiB batch was ~15% of the
# ingest's CPU, and per hourly file of a small day ~35%. Bounds the rows held back (a 2M-line
# day at 1% bad lines: one call; memory of a 10x day stays flat, see benchmarks/).
JUDGE_ROWS = 20_000
REASON_COLUMNS = ("field", "check", "value")
_HELD_KEY = ("source_file", "line_number")


@dataclass(frozen=True)
class _CastPlan:
    """How a parser types a batch (see `PartitionParser._cast_plan`)."""

    # First step: the text of each field that can fail, kept as `__raw_<field>`, and each field
    # with null values or aliases cleaned in place. Typing the cleaned columns in a step of
    # their own lets polars share each cast between the typed column and its failure flags,
    # which it did not when the cleaning was part of both (a timestamp with null values was
    # parsed three times: 17 against 5 ms per 4 MiB batch of ALB lines).
    clean: list[pl.Expr]
    # Second step: each field cast to its type under its own name, and `__failed_<i>`, true
    # where failure i happened.
    cast: list[pl.Expr]
    failures: list[tuple[str, str]]  # (field, check) of failure i
    found: list[pl.Expr]  # one boolean per kind of problem: does the batch have any?


class PartitionParser:
    """Parses the files of one source for one data date."""

    def __init__(self, spec: SourceSpec, day: dt.date) -> None:
        self.spec = spec
        self.day = day
        self.format = record_format(spec)
        zone = spec.timestamp.timezone
        self.timestamps = TimestampReader(spec.timestamp.formats, zone, day)
        # Timestamp fields are read in their own format, by default the source timestamp's.
        self._field_timestamps = {
            name: TimestampReader(field.formats or spec.timestamp.formats, zone, day)
            for name, field in spec.fields.items()
            if field.type == "timestamp"
        }
        self.judge_schema = SchemaJudge(spec, day)
        self.schema = self.judge_schema.schema
        self.earliest, self.latest = self.judge_schema.earliest, self.judge_schema.latest
        self._events_schema = events_schema(spec)
        self._casts = self._cast_plan()

    @property
    def record_pattern(self) -> str | None:
        """The full regular expression a regex source's records are matched with."""
        return self.format.pattern if isinstance(self.format, RegexRecords) else None

    # -- stage 3: fields -------------------------------------------------------------
    @staticmethod
    def _cleaned(name: str, field: FieldSpec) -> pl.Expr | None:
        """The field's text with its aliases replaced and its null values nulled, or None when
        the field declares neither."""
        if not field.replace and not field.null_values:
            return None
        raw = pl.col(name)
        if field.replace:
            raw = raw.replace(field.replace)
        if field.null_values:
            raw = pl.when(raw.is_in(field.null_values)).then(None).otherwise(raw)
        return raw.alias(name)

    def _typed(self, name: str, field: FieldSpec) -> tuple[pl.Expr, list[tuple[pl.Expr, str]]]:
        """Expression producing the typed column from the cleaned text (`_cleaned`), and the
        failures to flag: (expression true where the value failed, check name) pairs."""
        raw = pl.col(name)
        if field.type == "string":
            return raw, []
        if field.type == "timestamp":
            typed, failures = self._field_timestamps[name].read(raw, "parses_as_timestamp")
            return typed.alias(name), failures
        typed = raw.str.strip_chars().cast(POLARS_TYPES[field.type], strict=False)
        return typed.alias(name), [(raw.is_not_null() & typed.is_null(), f"parses_as_{field.type}")]

    # -- stages 1-4 -------------------------------------------------------------------
    def parse_file(
        self, batches: Iterable[LineBatch], source_file: str, pending: PendingValidation | None = None
    ) -> Iterator[ParsedBatch]:
        """Parse every batch of one file; multi-line records are carried across batches.

        Rows the pre-filter suspects are held back for pandera, which judges them together.
        With `pending` given (shared by the files of a partition), they are held there and the
        caller judges them (`judge`); without it, they are judged when `JUDGE_ROWS` are held
        and at the end of the file, and come out with a later batch of the same file.
        """
        own_pending = pending is None
        pending = PendingValidation() if pending is None else pending
        file_format = self.format.for_file()  # the format's state for this file (W3C headers)
        carry: pl.DataFrame | None = None
        seen_record_start = False
        for batch, is_last in _lookahead(batches):
            frame = line_frame(batch)
            lines_read = frame.height
            frame, ignored = file_format.prepare(frame)
            header_lines = file_format.take_header_lines()
            if not self.spec.multiline:
                blank = frame[TEXT].str.strip_chars() == ""
                blank_lines = int(blank.sum())
                ignored += blank_lines
                # Most batches have no blank line: the filter would only copy the frame.
                records = frame.filter(~blank) if blank_lines else frame
                batch_parsed = self._finish(records, file_format, source_file, lines_read, ignored, 0, None, pending)
                yield _with_headers(self._judged(batch_parsed, pending, own_pending, is_last), header_lines)
                continue
            if carry is not None:
                frame = pl.concat([carry, frame], how="vertical_relaxed")
                carry = None
            starts = frame[TEXT].str.contains(self.spec.record_start or "")
            record_id = starts.cast(pl.Int64).cum_sum()
            orphans = None
            if not seen_record_start:
                # Lines before the first record of the file continue nothing: quarantined
                # (blank ones ignored).
                orphan_lines = frame.filter(record_id == 0)
                frame = frame.filter(record_id > 0)
                record_id = record_id.filter(record_id > 0)
                orphan_blank = orphan_lines[TEXT].str.strip_chars() == ""
                ignored += int(orphan_blank.sum())
                orphans = orphan_lines.filter(~orphan_blank)
            seen_record_start = seen_record_start or bool(starts.any())
            frame = frame.with_columns(record_id.alias(RECORD_ID))
            if not is_last and frame.height:
                last_id = frame[RECORD_ID][-1]
                carry = frame.filter(pl.col(RECORD_ID) == last_id).drop(RECORD_ID)
                frame = frame.filter(pl.col(RECORD_ID) != last_id)
            if frame.height:
                # Blank lines that end a record separate records; they are not part of the message.
                trailing_blank = (pl.col(TEXT).str.strip_chars() != "").cast(
                    pl.Int32
                ).reverse().cum_sum().reverse().over(RECORD_ID) == 0
                before = frame.height
                frame = frame.filter(~trailing_blank)
                ignored += before - frame.height
            continuation = frame.height - int(frame[RECORD_ID].n_unique()) if frame.height else 0
            records = fold(frame) if continuation else frame.drop(RECORD_ID)
            batch_parsed = self._finish(
                records, file_format, source_file, lines_read, ignored, continuation, orphans, pending
            )
            yield _with_headers(self._judged(batch_parsed, pending, own_pending, is_last), header_lines)

    def _judged(self, batch: ParsedBatch, pending: PendingValidation, own: bool, end_of_file: bool) -> ParsedBatch:
        """`batch`, plus the verdict on the held rows when the file judges its own and it is time."""
        if not own or not pending.count or not (end_of_file or pending.count >= JUDGE_ROWS):
            return batch
        judged = self.judge(pending)
        return ParsedBatch(
            pl.concat([batch.events, judged.events]),
            pl.concat([batch.quarantined, judged.quarantined]).sort("line_number"),
            batch.lines_read,
            batch.lines_ignored,
            batch.continuation_lines,
            batch.held,
        )

    def _finish(
        self,
        records: pl.DataFrame,
        file_format: RecordFormat,
        source_file: str,
        lines_read: int,
        ignored: int,
        continuation: int,
        orphans: pl.DataFrame | None,
        pending: PendingValidation,
    ) -> ParsedBatch:
        """Extract and type records; split them into events and quarantine, holding the rows
        that may fail the schema in `pending` for pandera."""
        frame, reasons = self._typed_frame(records, file_format)
        matched = frame.filter(pl.col(LINE_PROBLEM).is_null()).select(_ROW, *self.spec.columns)
        suspect_rows, _columns = self._suspects(matched)
        held = 0
        if suspect_rows.len():
            is_suspect = pl.col(_ROW).is_in(suspect_rows.implode())
            file_column = pl.lit(source_file, dtype=pl.String).alias("source_file")
            positions = frame.select(_ROW, file_column, "line_number")
            held_rows = frame.filter(is_suspect).select(file_column, "line_number", TEXT, RAW_BYTES, *self.spec.columns)
            held = held_rows.height
            pending.hold(
                held_rows,
                [reason.join(positions, on=_ROW).filter(is_suspect).drop(_ROW) for reason in reasons],
            )
            frame = frame.filter(~is_suspect)
            reasons = [reason.filter(~is_suspect) for reason in reasons]
        events, quarantined = self._split(frame, reasons, source_file)
        if orphans is not None and orphans.height:
            quarantined = pl.concat([quarantined, orphan_rows(orphans, source_file)])
        return ParsedBatch(
            events.cast(self._events_schema),  # type: ignore[arg-type]
            quarantined.sort("line_number"),
            lines_read,
            ignored,
            continuation,
            held,
        )

    def _cast_plan(self) -> _CastPlan:
        """The expressions that type a batch's extracted columns and flag the values that fail,
        built once: they depend only on the source and the day, and building them again for
        every batch cost ~2 ms of Python per batch for a source of 30 fields."""
        ts_field = self.spec.timestamp.field
        ts_typed, ts_failures = self.timestamps.read(
            pl.col(ts_field), f"parses_as_timestamp({self.spec.timestamp.format_label})"
        )
        typed_exprs = [ts_typed.alias(ts_field)]
        failures = [(ts_field, check, flag) for flag, check in ts_failures]
        cleaned: list[pl.Expr] = []
        for name, field in self.spec.fields.items():
            if (clean := self._cleaned(name, field)) is not None:
                cleaned.append(clean)
            typed, field_failures = self._typed(name, field)
            typed_exprs.append(typed)
            failures.extend((name, check, flag) for flag, check in field_failures)
        flag_names = [f"__failed_{index}" for index in range(len(failures))]
        flags = [flag.alias(flag_name) for (_name, _check, flag), flag_name in zip(failures, flag_names, strict=True)]
        # The text as read, for the reasons; taken in the same step that cleans the columns.
        raw_values = [pl.col(name).alias(f"__raw_{name}") for name in dict.fromkeys(name for name, _, _ in failures)]
        in_format = pl.col(LINE_PROBLEM).is_null()
        found = [
            pl.col(RAW_BYTES).is_not_null().any().alias("__not_utf8"),
            (~in_format).any().alias("__off_format"),
            *((in_format & pl.col(flag_name)).any().alias(flag_name) for flag_name in flag_names),
        ]
        kinds = [(name, check) for name, check, _ in failures]
        return _CastPlan([*raw_values, *cleaned], [*typed_exprs, *flags], kinds, found)

    def _typed_frame(self, records: pl.DataFrame, file_format: RecordFormat) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        """Extract every column with the format and cast it; return the frame (one row per
        record, with a row position) and the reasons found so far (line and parse problems)
        as `(row, field, check, value)` frames."""
        plan = self._casts
        records = records.with_row_index(_ROW)
        extracted = file_format.extract(records)
        frame = pl.concat([records.select(_ROW, "line_number", TEXT, RAW_BYTES), extracted], how="horizontal")
        # Typed columns and, for non-string fields, flags for values that failed to parse.
        frame = frame.lazy().with_columns(plan.clean).with_columns(plan.cast).collect()
        # One pass finds which kinds of problem the batch has at all: most batches have a few of
        # the dozens possible, and gathering the rows of each kind costs a pass of its own.
        found = frame.select(plan.found).row(0, named=True)

        in_format = pl.col(LINE_PROBLEM).is_null()
        reasons: list[pl.DataFrame] = []
        if found["__not_utf8"]:
            not_utf8 = frame.select(_ROW, TEXT, RAW_BYTES).filter(pl.col(RAW_BYTES).is_not_null())
            reasons.append(_reasons(not_utf8[_ROW], "line", "valid_utf8", not_utf8[TEXT]))
        if found["__off_format"]:
            off_format = frame.filter(~in_format)
            detail = off_format[LINE_DETAIL] if LINE_DETAIL in off_format.columns else off_format[TEXT]
            reasons.append(
                _reasons(off_format[_ROW], "line", off_format[LINE_PROBLEM], detail.fill_null(off_format[TEXT]))
            )
        for index, (name, check) in enumerate(plan.failures):
            flag = f"__failed_{index}"
            if found[flag]:
                bad = frame.select(_ROW, LINE_PROBLEM, flag, f"__raw_{name}").filter(in_format & pl.col(flag))
                reasons.append(_reasons(bad[_ROW], name, check, bad[f"__raw_{name}"]))
        return frame, reasons

    def judge(self, pending: PendingValidation) -> ParsedBatch:
        """Validate every held row with pandera (one call) and split them into events and
        quarantine; `pending` is empty afterwards. The batch reads no line of its own."""
        rows, held_reasons = pending.take()
        if not rows:
            return ParsedBatch(
                pl.DataFrame(schema=self._events_schema), pl.DataFrame(schema=QUARANTINE_SCHEMA), 0, 0, 0
            )
        frame = pl.concat(rows).with_row_index(_ROW)
        positions = frame.select(_ROW, *_HELD_KEY)
        reasons = [reason.join(positions, on=_HELD_KEY).select(_ROW, *REASON_COLUMNS) for reason in held_reasons]
        reasons.extend(self.judge_schema.failures(frame.select(_ROW, *self.spec.columns)))
        events, quarantined = self._split(frame, reasons, None)
        return ParsedBatch(events.cast(self._events_schema), quarantined, 0, 0, 0)  # type: ignore[arg-type]

    def _split(
        self, frame: pl.DataFrame, reasons: list[pl.DataFrame], source_file: str | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Rows without a reason become events; the others quarantine rows with every reason.
        The file is `source_file`, or the frame's `source_file` column when None."""
        file_column = pl.col("source_file") if source_file is None else pl.lit(source_file, dtype=pl.String)
        event_columns = (file_column.alias("source_file"), "line_number", *self.spec.columns)
        if not reasons:
            return frame.select(*event_columns), pl.DataFrame(schema=QUARANTINE_SCHEMA)
        failures = (
            pl.concat(reasons)
            .unique(subset=[_ROW, "field", "check"], keep="first", maintain_order=True)
            # A value that failed to parse is null for pandera too: its not_nullable adds nothing.
            .filter(~((pl.col("check") == "not_nullable") & (pl.len().over(_ROW, "field") > 1)))
            .sort(_ROW, maintain_order=True)
            .group_by(_ROW, maintain_order=True)
            .agg(
                pl.struct(*REASON_COLUMNS).alias("reasons"),
                pl.format("{}: {} (got {})", "field", "check", pl.col("value").fill_null("null"))
                .str.join("; ")
                .alias("reason"),
            )
        )
        events = frame.filter(~pl.col(_ROW).is_in(failures[_ROW].implode())).select(*event_columns)
        evidence = ["line_number", TEXT, RAW_BYTES, *(["source_file"] if source_file is None else [])]
        quarantined = failures.join(frame.select(_ROW, *evidence), on=_ROW, how="left").select(
            file_column.alias("source_file"),
            "line_number",
            pl.col(TEXT).alias("raw_line"),
            pl.col(RAW_BYTES).alias("raw_bytes"),
            "reasons",
            "reason",
        )
        return events, quarantined.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]

    def _suspects(self, typed_frame: pl.DataFrame) -> tuple[pl.Series, list[str]]:
        """Rows that may fail the schema, and the columns they may fail on (see `SchemaJudge`)."""
        return self.judge_schema.suspects(typed_frame)


def _reasons(rows: pl.Series, field: str, check: str | pl.Series, values: pl.Series) -> pl.DataFrame:
    checks = check if isinstance(check, pl.Series) else pl.Series([check] * len(rows), dtype=pl.String)
    return pl.DataFrame(
        {
            _ROW: rows.cast(pl.UInt32),
            "field": pl.Series([field] * len(rows), dtype=pl.String),
            "check": checks.cast(pl.String),
            "value": values.cast(pl.String).str.slice(0, MAX_VALUE_CHARS),
        }
    )


def _lookahead(batches: Iterable[LineBatch]) -> Iterator[tuple[LineBatch, bool]]:
    """Yield each batch with a flag telling whether it is the file's last one.

    If reading fails, the batch in hand is still yielded (as the last) before the error
    propagates, so no line that was read goes unaccounted.
    """
    iterator = iter(batches)
    try:
        current = next(iterator)
    except StopIteration:
        return
    while True:
        try:
            following = next(iterator)
        except StopIteration:
            yield current, True
            return
        except FileReadError:
            yield current, True
            raise
        yield current, False
        current = following


def _with_headers(batch: ParsedBatch, header_lines: tuple[tuple[int, str], ...]) -> ParsedBatch:
    """`batch` carrying the header lines its lines were read with."""
    return replace(batch, header_lines=header_lines) if header_lines else batch
