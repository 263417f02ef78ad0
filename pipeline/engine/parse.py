"""Parse and validate batches of raw lines, vectorised, and split them into events and quarantine.

For one source and one data date, `PartitionParser.parse_file` turns the line batches of a
file into `ParsedBatch`es: valid records (typed columns) and quarantined records (the raw
line and every reason it failed). Every line read is accounted for: loaded, quarantined,
folded into a multi-line record as a continuation, or ignored as blank.

Stages, each a polars expression over the whole batch:
1. decode UTF-8 (a batch with invalid bytes falls back to per-line decoding);
2. fold multi-line records (sources with `record_start`);
3. match the line pattern, cast fields to their types;
4. validate: a vectorised pre-filter mirroring the schema's checks passes the clearly valid rows;
   the rest are held (`PendingValidation`) and judged by pandera (polars backend) together,
   failures collected by row position.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from pipeline.engine.reader import FileReadError, LineBatch
from pipeline.sources.spec import FieldSpec, SourceSpec

# An empty group after the pattern: "" when the line matched, null when not (a group around
# the whole pattern would copy every line once more; measured ~13% of the regex pass).
_MATCH_GROUP = "__matched"
_ROW = "__row"
# Longest failing value kept in a reason; the full evidence is in `raw_line`.
_MAX_VALUE_CHARS = 200

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "float": pl.Float64(),
    "timestamp": pl.Datetime("us", "UTC"),
}

REASON_DTYPE = pl.Struct({"field": pl.String, "check": pl.String, "value": pl.String})
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "raw_line": pl.String(),
    "raw_bytes": pl.Binary(),
    "reasons": pl.List(REASON_DTYPE),
    "reason": pl.String(),
}


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


class PendingValidation:
    """Rows the pre-filter suspects, held until pandera judges them together, with the reasons
    already found for them. Keyed by file and line; safe to share between parse threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[pl.DataFrame] = []
        self._reasons: list[pl.DataFrame] = []
        self.count = 0

    def hold(self, rows: pl.DataFrame, reasons: list[pl.DataFrame]) -> None:
        """Keep `rows` (and their reasons) until judged, copied into buffers of their own."""
        rows = _compacted(rows)
        reasons = [_compacted(reason) for reason in reasons if reason.height]
        with self._lock:
            self._rows.append(rows)
            self._reasons.extend(reasons)
            self.count += rows.height

    def take(self) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
        """Everything held so far (rows, reasons); the holder is empty afterwards."""
        with self._lock:
            taken = self._rows, self._reasons
            self._rows, self._reasons, self.count = [], [], 0
        return taken


def _compacted(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of `frame` that owns its string data.

    polars strings are views into shared buffers: a few rows filtered out of a batch would keep
    the whole batch's text alive while held (measured: peak RSS of a 20-million-line day
    doubled). Going through Arrow's offset-based layout copies just these rows' bytes.
    """
    return pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))  # type: ignore[return-value]


@dataclass
class ParsedBatch:
    """The outcome of one batch of lines."""

    events: pl.DataFrame
    quarantined: pl.DataFrame
    lines_read: int
    lines_ignored: int
    continuation_lines: int
    # Rows of this batch held for pandera (`PendingValidation`): they come out as events or
    # quarantine rows of the batch that judges them. Over a whole file (or partition, once all
    # is judged): lines_read = events + quarantined + lines_ignored + continuation_lines.
    held: int = 0


def quarantine_entry(
    source_file: str, line_number: int, field: str, check: str, value: str, partial: bytes = b""
) -> pl.DataFrame:
    """A single quarantine row for evidence that is not a whole line (e.g. an unreadable
    file); `partial` is the part of a line read before the problem."""
    try:
        raw_line, raw_bytes = partial.decode("utf-8"), None
    except UnicodeDecodeError:
        raw_line, raw_bytes = partial.decode("utf-8", errors="backslashreplace"), partial
    return pl.DataFrame(
        {
            "source_file": [source_file],
            "line_number": [line_number],
            "raw_line": [raw_line],
            "raw_bytes": [raw_bytes],
            "reasons": [[{"field": field, "check": check, "value": value}]],
            "reason": [f"{field}: {check} ({value})"],
        },
        schema=QUARANTINE_SCHEMA,
    )


def _decode(lines: pa_arrow.LargeBinaryArray) -> tuple[pl.Series, pl.Series | None]:
    """Decode lines as UTF-8. Returns the text and, only when some line is not valid
    UTF-8, the raw bytes (null for valid lines); invalid bytes show as `\\xNN` in the text."""
    try:
        return pl.Series("text", pc.cast(lines, pa_arrow.large_string())), None
    except pa_arrow.ArrowInvalid:
        pass
    texts: list[str] = []
    raws: list[bytes | None] = []
    for raw in lines.to_pylist():
        try:
            texts.append(raw.decode("utf-8"))
            raws.append(None)
        except UnicodeDecodeError:
            texts.append(raw.decode("utf-8", errors="backslashreplace"))
            raws.append(raw)
    return pl.Series("text", texts, dtype=pl.String), pl.Series("raw_bytes", raws, dtype=pl.Binary)


def _pandera_check(name: str, args: object) -> pa.Check:
    factory = getattr(pa.Check, name)
    return factory(*args) if isinstance(args, list) and name in {"in_range", "str_length"} else factory(args)


class PartitionParser:
    """Parses the files of one source for one data date."""

    def __init__(self, spec: SourceSpec, day: dt.date) -> None:
        self.spec = spec
        self.day = day
        # The source's pattern plus an empty group that tells matched lines from the rest.
        self.record_pattern = f"(?:{spec.pattern})(?P<{_MATCH_GROUP}>)"
        tolerance = dt.timedelta(minutes=spec.timestamp.tolerance_minutes)
        day_start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        self.earliest = day_start - tolerance
        self.latest = day_start + dt.timedelta(days=1) + tolerance
        self._day_check = f"within_day({day.isoformat()} UTC ±{spec.timestamp.tolerance_minutes} min)"
        self.schema = self._build_schema()
        self._partial_schemas: dict[tuple[str, ...], pa.DataFrameSchema] = {}
        self._events_schema = events_schema(spec)

    def _build_schema(self) -> pa.DataFrameSchema:
        columns = {
            self.spec.timestamp.field: pa.Column(
                POLARS_TYPES["timestamp"],
                checks=[pa.Check.in_range(self.earliest, self.latest, include_max=False)],
                nullable=False,
            )
        }
        for name, field in self.spec.fields.items():
            columns[name] = pa.Column(
                POLARS_TYPES[field.type],
                checks=[_pandera_check(check, args) for check, args in field.checks.items()],
                nullable=field.nullable,
            )
        # Extra bookkeeping columns (row position, file, line) are allowed through.
        return pa.DataFrameSchema(columns, strict=False, name=f"{self.spec.name}_events")

    # -- stage 3: fields -------------------------------------------------------------
    def _typed(self, name: str, field: FieldSpec) -> tuple[pl.Expr, list[tuple[pl.Expr, str]]]:
        """Expression producing the typed column, and the failures to flag: (expression true
        where the value failed, check name) pairs."""
        raw = pl.col(name)
        if field.replace:
            raw = raw.replace(field.replace)
        if field.null_values:
            raw = pl.when(raw.is_in(field.null_values)).then(None).otherwise(raw)
        if field.type == "string":
            return raw.alias(name), []
        if field.type == "timestamp":
            typed, failures = self._timestamp(raw, "parses_as_timestamp")
            return typed.alias(name), failures
        typed = raw.str.strip_chars().cast(POLARS_TYPES[field.type], strict=False)
        return typed.alias(name), [(raw.is_not_null() & typed.is_null(), f"parses_as_{field.type}")]

    def _timestamp(self, raw: pl.Expr, parse_check: str) -> tuple[pl.Expr, list[tuple[pl.Expr, str]]]:
        """The UTC timestamp of `raw` in the source's format, and its failures (as `_typed`):
        `parse_check` where the text is not such a timestamp, `exists_in_timezone(ZONE)` where
        it is a local time the zone skips or repeats at a clock change."""
        spec = self.spec.timestamp
        parsed = raw.str.strptime(pl.Datetime("us"), spec.format, strict=False)
        if "%S" in spec.format:
            # chrono reads second 60 (a leap second) and polars moves it into the next minute
            # (23:59:60 into the next day): not the time the line says, so it does not parse.
            # No other field of a valid timestamp reads ":60".
            parsed = pl.when(raw.str.contains(":60", literal=True)).then(None).otherwise(parsed)
        if "%z" in spec.format or "%:z" in spec.format:
            typed = parsed.dt.convert_time_zone("UTC")
            return typed, [(raw.is_not_null() & typed.is_null(), parse_check)]
        # Local times that do not exist or are ambiguous (DST changes) become null and are
        # quarantined rather than silently shifted.
        typed = parsed.dt.replace_time_zone(spec.timezone, ambiguous="null", non_existent="null").dt.convert_time_zone(
            "UTC"
        )
        return typed, [
            (raw.is_not_null() & parsed.is_null(), parse_check),
            (parsed.is_not_null() & typed.is_null(), f"exists_in_timezone({spec.timezone})"),
        ]

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
        carry: pl.DataFrame | None = None
        seen_record_start = False
        for batch, is_last in _lookahead(batches):
            frame = self._line_frame(batch)
            lines_read = frame.height
            if not self.spec.multiline:
                blank = frame["text"].str.strip_chars() == ""
                ignored = int(blank.sum())
                records = frame.filter(~blank)
                batch_parsed = self._finish(records, source_file, lines_read, ignored, 0, None, pending)
                yield self._judged(batch_parsed, pending, own_pending, is_last)
                continue
            if carry is not None:
                frame = pl.concat([carry, frame], how="vertical_relaxed")
                carry = None
            starts = frame["text"].str.contains(self.spec.record_start or "")
            record_id = starts.cast(pl.Int64).cum_sum()
            if not seen_record_start:
                # Lines before the first record of the file continue nothing: quarantined
                # (blank ones ignored).
                orphan_rows = frame.filter(record_id == 0)
                frame = frame.filter(record_id > 0)
                record_id = record_id.filter(record_id > 0)
                orphan_blank = orphan_rows["text"].str.strip_chars() == ""
                ignored = int(orphan_blank.sum())
                orphans = orphan_rows.filter(~orphan_blank)
            else:
                ignored, orphans = 0, None
            seen_record_start = seen_record_start or bool(starts.any())
            frame = frame.with_columns(record_id.alias("record_id"))
            if not is_last and frame.height:
                last_id = frame["record_id"][-1]
                carry = frame.filter(pl.col("record_id") == last_id).drop("record_id")
                frame = frame.filter(pl.col("record_id") != last_id)
            if frame.height:
                # Blank lines that end a record separate records; they are not part of the message.
                trailing_blank = (pl.col("text").str.strip_chars() != "").cast(
                    pl.Int32
                ).reverse().cum_sum().reverse().over("record_id") == 0
                before = frame.height
                frame = frame.filter(~trailing_blank)
                ignored += before - frame.height
            continuation = frame.height - int(frame["record_id"].n_unique()) if frame.height else 0
            records = self._fold(frame) if continuation else frame.drop("record_id")
            batch_parsed = self._finish(records, source_file, lines_read, ignored, continuation, orphans, pending)
            yield self._judged(batch_parsed, pending, own_pending, is_last)

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

    def _line_frame(self, batch: LineBatch) -> pl.DataFrame:
        text, raw_bytes = _decode(batch.lines)
        frame = pl.DataFrame(
            {
                "line_number": pl.int_range(
                    batch.first_line_number, batch.first_line_number + len(batch.lines), dtype=pl.Int64, eager=True
                ),
                "text": text,
            }
        )
        if raw_bytes is None:
            return frame.with_columns(pl.lit(None, dtype=pl.Binary).alias("raw_bytes"))
        return frame.with_columns(raw_bytes)

    def _fold(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Merge each record's continuation lines into its text (multi-line records)."""
        folded = frame.group_by("record_id", maintain_order=True).agg(
            pl.col("line_number").first(),
            pl.col("text").str.join("\n"),
            pl.col("raw_bytes"),
        )
        invalid = folded["raw_bytes"].list.eval(pl.element().is_not_null()).list.any()
        if not invalid.any():
            return folded.with_columns(pl.lit(None, dtype=pl.Binary).alias("raw_bytes")).drop("record_id")
        # Rare: rebuild the exact bytes of records holding invalid UTF-8.
        rebuilt = [
            _record_bytes(parts, text) if bad else None
            for parts, text, bad in zip(
                folded["raw_bytes"].to_list(), folded["text"].to_list(), invalid.to_list(), strict=True
            )
        ]
        return folded.with_columns(pl.Series("raw_bytes", rebuilt, dtype=pl.Binary)).drop("record_id")

    def _finish(
        self,
        records: pl.DataFrame,
        source_file: str,
        lines_read: int,
        ignored: int,
        continuation: int,
        orphans: pl.DataFrame | None,
        pending: PendingValidation,
    ) -> ParsedBatch:
        """Match and type records; split them into events and quarantine, holding the rows that
        may fail the schema in `pending` for pandera."""
        frame, reasons = self._typed_frame(records)
        matched = frame.filter(pl.col(_MATCH_GROUP).is_not_null()).select(_ROW, *self.spec.columns)
        suspect_rows, _columns = self._suspects(matched)
        held = 0
        if suspect_rows.len():
            is_suspect = pl.col(_ROW).is_in(suspect_rows.implode())
            file_column = pl.lit(source_file, dtype=pl.String).alias("source_file")
            positions = frame.select(_ROW, file_column, "line_number")
            held_rows = frame.filter(is_suspect).select(
                file_column, "line_number", "text", "raw_bytes", *self.spec.columns
            )
            held = held_rows.height
            pending.hold(
                held_rows,
                [reason.join(positions, on=_ROW).filter(is_suspect).drop(_ROW) for reason in reasons],
            )
            frame = frame.filter(~is_suspect)
            reasons = [reason.filter(~is_suspect) for reason in reasons]
        events, quarantined = self._split(frame, reasons, source_file)
        if orphans is not None and orphans.height:
            quarantined = pl.concat([quarantined, _orphan_rows(orphans, source_file)])
        return ParsedBatch(
            events.cast(self._events_schema),  # type: ignore[arg-type]
            quarantined.sort("line_number"),
            lines_read,
            ignored,
            continuation,
            held,
        )

    def _typed_frame(self, records: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        """Match the pattern and cast every field; return the frame (one row per record, with a
        row position) and the reasons found so far (line and parse problems) as
        `(row, field, check, value)` frames."""
        ts_field = self.spec.timestamp.field
        frame = (
            records.with_row_index(_ROW)
            .with_columns(pl.col("text").str.extract_groups(self.record_pattern).alias("__groups"))
            .unnest("__groups")
        )
        # Typed columns and, for non-string fields, flags for values that failed to parse:
        # (field, check, flag column) per kind of failure.
        ts_typed, ts_failures = self._timestamp(pl.col(ts_field), f"parses_as_timestamp({self.spec.timestamp.format})")
        typed_exprs = [ts_typed.alias(ts_field)]
        failures = [(ts_field, check, flag) for flag, check in ts_failures]
        for name, field in self.spec.fields.items():
            typed, field_failures = self._typed(name, field)
            typed_exprs.append(typed)
            failures.extend((name, check, flag) for flag, check in field_failures)
        flags = [flag.alias(f"__failed_{index}") for index, (_name, _check, flag) in enumerate(failures)]
        raw_values = [pl.col(name).alias(f"__raw_{name}") for name in dict.fromkeys(name for name, _, _ in failures)]
        frame = frame.with_columns(*raw_values).with_columns(*typed_exprs, *flags)

        matched = pl.col(_MATCH_GROUP).is_not_null()
        reasons: list[pl.DataFrame] = []
        line_problems = [
            (pl.col("raw_bytes").is_not_null(), "valid_utf8"),
            (~matched, "matches_format"),
        ]
        for condition, check in line_problems:
            bad = frame.filter(condition)
            if bad.height:
                reasons.append(_reasons(bad[_ROW], "line", check, bad["text"]))
        for index, (name, check, _flag) in enumerate(failures):
            bad = frame.filter(matched & pl.col(f"__failed_{index}"))
            if bad.height:
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
        reasons.extend(self._validate(frame.select(_ROW, *self.spec.columns)))
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
        evidence = ["line_number", "text", "raw_bytes", *(["source_file"] if source_file is None else [])]
        quarantined = failures.join(frame.select(_ROW, *evidence), on=_ROW, how="left").select(
            file_column.alias("source_file"),
            "line_number",
            pl.col("text").alias("raw_line"),
            "raw_bytes",
            "reasons",
            "reason",
        )
        return events, quarantined.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]

    def _suspects(self, typed_frame: pl.DataFrame) -> tuple[pl.Series, list[str]]:
        """Rows that may fail the schema, and the columns they may fail on, in one polars query.

        pandera's `validate` costs a fixed ~30 ms per call plus a query per column and check;
        running it only on these rows and columns keeps pandera the judge of what is valid
        while the common all-good batch costs one vectorised pass. The query mirrors pandera's
        built-in checks (same operators; nulls ignored by checks and caught by nullability);
        `test_parse_prefilter.py` proves it never misses a row pandera rejects.
        """
        per_column = {
            name: pl.all_horizontal(conditions).alias(name)
            for name, column in self.schema.columns.items()
            if (conditions := _passes(name, column))
        }
        if not per_column:
            return typed_frame[_ROW].clear(), []
        outcome = typed_frame.select(*per_column.values())
        failing = [name for name in outcome.columns if not outcome[name].all()]
        if not failing:
            return typed_frame[_ROW].clear(), []
        ok = outcome.select(pl.all_horizontal(failing).alias("ok"))["ok"]
        return typed_frame[_ROW].filter(~ok), failing

    def _schema_for(self, columns: tuple[str, ...]) -> pa.DataFrameSchema:
        """The schema restricted to `columns` (cached: few distinct combinations occur)."""
        schema = self._partial_schemas.get(columns)
        if schema is None:
            schema = self.schema.select_columns(list(columns))
            self._partial_schemas[columns] = schema
        return schema

    def _validate(self, typed_frame: pl.DataFrame) -> list[pl.DataFrame]:
        """Run the pandera schema on the suspect rows; return failures as (row, field, check, value)."""
        if not typed_frame.height:
            return []
        suspects, columns = self._suspects(typed_frame)
        if suspects.is_empty():
            return []
        subset = typed_frame.filter(pl.col(_ROW).is_in(suspects.implode()))
        try:
            self._schema_for(tuple(columns)).validate(subset, lazy=True)
        except SchemaErrors as errors:
            cases = errors.failure_cases
            data_failures = cases.filter(pl.col("index").is_not_null())
            if data_failures.height < cases.height:
                # A failure without a row position is a schema problem (e.g. a column of the
                # wrong type): that is a bug in the source definition, not bad data.
                raise
            rows = subset[_ROW].gather(data_failures["index"].cast(pl.UInt32))
            check = pl.col("check")
            renamed = (
                pl.when((pl.col("column") == self.spec.timestamp.field) & check.str.starts_with("in_range"))
                .then(pl.lit(self._day_check))
                .otherwise(check)
                .alias("check")
            )
            return [
                pl.DataFrame(
                    {
                        _ROW: rows,
                        "field": data_failures["column"],
                        "check": data_failures.select(renamed)["check"],
                        "value": data_failures["failure_case"].cast(pl.String).str.slice(0, _MAX_VALUE_CHARS),
                    }
                )
            ]
        return []


def _check_expression(value: pl.Expr, check: pa.Check) -> pl.Expr:
    """The row-wise outcome of one pandera built-in check, as pandera's polars backend computes it."""
    arguments = check.statistics
    name = check.name
    if name == "in_range":
        lower = (
            value >= arguments["min_value"] if arguments.get("include_min", True) else value > arguments["min_value"]
        )
        upper = (
            value <= arguments["max_value"] if arguments.get("include_max", True) else value < arguments["max_value"]
        )
        return lower & upper
    if name == "greater_than_or_equal_to":
        return value >= arguments["min_value"]
    if name == "greater_than":
        return value > arguments["min_value"]
    if name == "less_than_or_equal_to":
        return value <= arguments["max_value"]
    if name == "less_than":
        return value < arguments["max_value"]
    if name == "isin":
        return value.is_in(list(arguments["allowed_values"]))
    if name == "notin":
        return value.is_in(list(arguments["forbidden_values"])).not_()
    if name == "str_length":
        return value.str.len_chars().is_between(arguments["min_value"], arguments["max_value"])
    if name == "str_matches":
        pattern = arguments["pattern"]
        pattern = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        return value.str.contains(pattern if pattern.startswith("^") else f"^{pattern}")
    # Unknown to the pre-filter: send every row to pandera rather than guess.
    return pl.lit(False)


def _passes(name: str, column: pa.Column) -> list[pl.Expr]:
    """Conditions a row must meet for one column: nullability, then each check (nulls pass checks)."""
    value = pl.col(name)
    conditions = [] if column.nullable else [value.is_not_null()]
    conditions.extend((_check_expression(value, check) | value.is_null()).fill_null(False) for check in column.checks)
    return conditions


def _orphan_rows(orphans: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """Quarantine rows for continuation lines with no record before them in their file."""
    return orphans.select(
        pl.lit(source_file, dtype=pl.String).alias("source_file"),
        "line_number",
        pl.col("text").alias("raw_line"),
        "raw_bytes",
        pl.concat_list(
            pl.struct(
                pl.lit("line").alias("field"),
                pl.lit("follows_a_record").alias("check"),
                pl.lit("continuation line with no record before it in its file").alias("value"),
            )
        ).alias("reasons"),
        pl.lit("line: follows_a_record (got continuation line with no record before it in its file)").alias("reason"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _record_bytes(raw_lines: list[bytes | None], text: str) -> bytes:
    """The exact bytes of a folded record: raw bytes where a line was not UTF-8, else its text."""
    texts = text.split("\n")
    return b"\n".join(raw if raw is not None else line.encode() for raw, line in zip(raw_lines, texts, strict=True))


def _reasons(rows: pl.Series, field: str, check: str, values: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            _ROW: rows.cast(pl.UInt32),
            "field": pl.Series([field] * len(rows), dtype=pl.String),
            "check": pl.Series([check] * len(rows), dtype=pl.String),
            "value": values.cast(pl.String).str.slice(0, _MAX_VALUE_CHARS),
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
