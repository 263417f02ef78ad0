"""Benchmark of the line formats: the parse path of one generated day per format.

Each format gets the same day as the `access` row of `benchmarks.run` (by default 2,000,000
lines in 24 hourly files, 1% bad lines of the format's typical kinds), written uncompressed
(about 4.4 GB for all formats at the default size, deleted afterwards) and parsed, in rounds
interleaving the formats, on one thread by `PartitionParser` exactly as an ingest parses a file: read and
split, decode, extract, cast, validate (pandera for the suspect rows), split into events and
quarantine. No storage: the load is the same for every format and is measured by
`benchmarks.run`. Reported per line and per byte, against the regex path of the built-in
`access` source on the lines of `pipeline.cli.generate` (the benchmark suite's own day).

`python -m benchmarks.formats [--lines N] [--repeat R]`, or `measure()` from `benchmarks.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import polars as pl

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.formats import delimited
from pipeline.engine.parse import PartitionParser, PendingValidation
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES, iter_line_batches
from pipeline.sources import load_sources
from pipeline.sources.presets import apply_preset
from pipeline.sources.spec import SourceSpec

DAY = dt.date(2024, 3, 1)
BAD_LINE_RATE = 0.01
# Formats whose parse must not cost more per byte than the regex path (issue 13).
PER_BYTE_TARGET = ("json", "delimited_alb", "delimited_cloudfront")
# Regex sources measured on another format's lines (what a user writes today for those logs).
SAME_LINES = {"regex_json": "json", "regex_alb": "delimited_alb"}
# The delimited formats again without the native tokenizer (a machine without a C compiler).
POLARS_PATH = {"delimited_alb_polars": "delimited_alb", "delimited_cloudfront_polars": "delimited_cloudfront"}
SAME_LINES |= POLARS_PATH
_LEVELS = ["debug", "info", "info", "info", "warn", "error"]
_PATHS = ["/", "/api/v1/items", "/api/v1/items/42", "/login", "/static/app.js", "/search?q=widgets"]
_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


def sources() -> dict[str, SourceSpec]:
    """The source measured for each format."""
    json_like = {
        "first_day": "2020-01-01",
        "timestamp": {"field": "timestamp", "from": "time", "format": "%Y-%m-%dT%H:%M:%S%.f%#z"},
        "fields": {
            "level": {"checks": {"isin": ["debug", "info", "warn", "error"]}},
            "logger": {},
            "message": {"from": "msg"},
            "status": {"type": "integer", "checks": {"in_range": [100, 599]}},
            "duration": {"type": "float", "from": "duration_ms", "nullable": True},
            "method": {"from": "request.method"},
            "path": {"from": "request.path"},
        },
        "daily_metrics": {"records": "count(*)"},
    }
    logfmt_like = {**json_like, "format": "logfmt"}
    logfmt_like["fields"] = {**json_like["fields"], "method": {"from": "method"}, "path": {"from": "path"}}  # type: ignore[dict-item]
    bodies: dict[str, dict[str, Any]] = {
        "json": {**json_like, "format": "json"},
        "logfmt": logfmt_like,
        "syslog_rfc3164": {"preset": "syslog_rfc3164", "first_day": "2020-01-01"},
        "delimited_alb": {"preset": "aws_alb", "first_day": "2020-01-01"},
        "delimited_cloudfront": {"preset": "cloudfront", "first_day": "2020-01-01"},
    }
    found = {"regex_access": load_sources()["access"]}
    found |= {name: SourceSpec(name=name, **apply_preset(body)) for name, body in bodies.items()}
    # What a user writes today for the same lines: a regex with a named group per field.
    quote = '"((?:[^"\\\\]|\\\\.)*)"'
    json_pattern = (
        '^\\{"time":"(?P<timestamp>[^"]*)","level":"(?P<level>[^"]*)","logger":"(?P<logger>[^"]*)",'
        + '"msg":'
        + quote.replace("(", "(?P<message>", 1)
        + ',"status":(?P<status>[^,]*),'
        + '"duration_ms":(?P<duration>[^,]*),"request":\\{"method":"(?P<method>[^"]*)","path":"(?P<path>[^"]*)"\\}\\}$'
    )
    regex_json = {**json_like, "pattern": json_pattern}
    regex_json["timestamp"] = {"field": "timestamp", "format": "%Y-%m-%dT%H:%M:%S%.f%#z"}
    regex_json["fields"] = {
        name: {k: v for k, v in field.items() if k != "from"} for name, field in json_like["fields"].items()
    }  # type: ignore[union-attr]
    found["regex_json"] = SourceSpec(name="regex_json", **regex_json)
    found["regex_alb"] = _regex_alb(found["delimited_alb"])
    found |= {name: found[native] for name, native in POLARS_PATH.items()}
    return found


def _regex_alb(alb: SourceSpec) -> SourceSpec:
    """The aws_alb preset written as a regex (groups named like its fields, `\\S+` or a
    quoted group per column, the later columns optional), as AWS's Athena examples do."""
    columns = alb.format.columns or []  # type: ignore[union-attr]
    named = {location[0]: name for name, location in alb.column_locations().items()}
    quoted = {"request", "user_agent", "trace_id", "domain_name", "chosen_cert_arn", "actions_executed",
              "redirect_url", "error_reason", "target_port_list", "target_status_code_list", "classification",
              "classification_reason"}  # fmt: skip
    parts = []
    for column in columns:
        group = f"(?P<{named[column]}>" if column in named else "("
        parts.append(f'"{group}[^"]*)"' if column in quoted else f"{group}\\S+)")
    required, optional = parts[:25], parts[25:]
    pattern = "^" + " ".join(required) + "".join(f"(?: {part}" for part in optional) + ")?" * len(optional)
    fields = {name: field.model_dump(exclude={"from_"}, exclude_defaults=True) for name, field in alb.fields.items()}
    timestamp = {"field": "timestamp", "format": alb.timestamp.format}
    return SourceSpec(name="regex_alb", first_day=alb.first_day, pattern=pattern + "(?: .*)?$", timestamp=timestamp,
                      fields=fields, daily_metrics={"records": "count(*)"})  # fmt: skip


def _columns(n: int, seed: int) -> pl.DataFrame:
    """Random values shared by the generators: times through the day, levels, statuses, ..."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 86_400, n))
    return pl.DataFrame(
        {
            "hour": seconds // 3600,
            "at": pl.Series(seconds * 1_000_000 + rng.integers(0, 1_000_000, n)).cast(pl.Duration("us")),
            "level": pl.Series(_LEVELS).gather(rng.integers(0, len(_LEVELS), n)),
            "path": pl.Series(_PATHS).gather(rng.integers(0, len(_PATHS), n)),
            "status": rng.choice([200, 200, 200, 201, 304, 404, 500], n),
            "duration": np.round(rng.gamma(2.0, 20.0, n), 3),
            "client": pl.Series(rng.integers(1, 255, n)).cast(pl.String),
            "pid": rng.integers(100, 40_000, n),
            "bytes": rng.integers(0, 50_000, n),
            "number": np.arange(n),
            "bad": rng.random(n) < BAD_LINE_RATE,
            "fault": rng.integers(0, 3, n),
        }
    ).with_columns((pl.lit(dt.datetime.combine(DAY, dt.time())) + pl.col("at")).alias("time"))


def _time(fmt: str) -> pl.Expr:
    return pl.col("time").dt.strftime(fmt)


def _lines(name: str, frame: pl.DataFrame) -> pl.Expr:
    """The good line of each row, in the format `name`."""
    message = pl.format("handled request {} for client {}", "number", "client")
    if name == "json":
        return pl.struct(
            _time("%Y-%m-%dT%H:%M:%S%.3fZ").alias("time"),
            "level",
            pl.lit("svc.api").alias("logger"),
            message.alias("msg"),
            "status",
            pl.col("duration").alias("duration_ms"),
            pl.struct(pl.lit("GET").alias("method"), "path").alias("request"),
        ).struct.json_encode()
    if name == "logfmt":
        return pl.format(
            'time={} level={} logger=svc.api msg="{}" status={} duration_ms={} method=GET path={}',
            _time("%Y-%m-%dT%H:%M:%S%.3fZ"), "level", message, "status", "duration", "path",
        )  # fmt: skip
    if name == "syslog_rfc3164":
        return pl.format(
            "<{}>{} web{} app[{}]: {}", pl.col("pid") % 192, _time("%b %e %H:%M:%S"), "client", "pid", message
        )
    if name == "delimited_alb":
        return pl.concat_str(
            pl.lit("https"), _time("%Y-%m-%dT%H:%M:%S%.6fZ"), pl.lit("app/balancer/50dc6c495c0c9188"),
            pl.format("10.0.0.{}:2817", "client"), pl.lit("10.0.1.7:80"), pl.lit("0.001"), pl.col("duration") / 1000,
            pl.lit("0.000"), "status", "status", pl.lit("182"), "bytes",
            pl.format('"GET https://example.com:443{} HTTP/1.1"', "path"), pl.lit(f'"{_AGENT}"'),
            pl.lit("ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2"),
            pl.lit("arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067"),
            pl.format('"Root=1-58337262-{}"', "number"), pl.lit('"example.com" "-" 0'),
            _time("%Y-%m-%dT%H:%M:%S%.6fZ"), pl.lit('"forward" "-" "-" "10.0.1.7:80" "200" "-" "-"'),
            separator=" ",
        )  # fmt: skip
    if name == "delimited_cloudfront":
        return pl.concat_str(
            _time("%Y-%m-%d"), _time("%H:%M:%S"), pl.lit("LAX1"), "bytes", pl.format("192.0.2.{}", "client"),
            pl.lit("GET"), pl.lit("d111111abcdef8.cloudfront.net"), "path", "status", pl.lit("-"),
            pl.lit(_AGENT.replace(" ", "%20")), pl.lit("-"), pl.lit("-"), pl.lit("Hit"),
            pl.format("SOX4xwn4XV6Q4rgb7XiVGOHms_{}==", "number"), pl.lit("d111111abcdef8.cloudfront.net"),
            pl.lit("https"), pl.lit("23"), pl.col("duration") / 1000, pl.lit("-"), pl.lit("TLSv1.2"),
            pl.lit("ECDHE-RSA-AES128-GCM-SHA256"), pl.lit("Hit"), pl.lit("HTTP/2.0"), pl.lit("-"), pl.lit("-"),
            pl.lit("11040"), pl.lit("0.001"), pl.lit("Hit"), pl.lit("text/html"), pl.lit("78"), pl.lit("-"),
            pl.lit("-"), separator="\t",
        )  # fmt: skip
    raise ValueError(f"no generator for {name!r}")


_CLOUDFRONT_HEADER = (
    "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
    "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header "
    "cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type "
    "sc-content-type sc-content-len sc-range-start sc-range-end\n"
)


def _bad(line: pl.Expr) -> pl.Expr:
    """A damaged line of three kinds: cut in half, a status of 999 (set in `generate`), or not
    the format at all."""
    return (
        pl.when(pl.col("fault") == 0)
        .then(line.str.slice(0, line.str.len_chars() // 2))
        .when(pl.col("fault") == 1)
        .then(line)
        .otherwise(pl.lit("upstream timed out while reading response header from upstream"))
    )


def generate(root: Path, name: str, lines: int, seed: int = 13) -> list[Path]:
    """Write `lines` lines of format `name` for `DAY` as 24 hourly files under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "regex_access":
        return _access_files(root, lines)
    name = SAME_LINES.get(name, name)
    frame = _columns(lines, seed)
    wrong = pl.col("bad") & (pl.col("fault") == 1)
    frame = frame.with_columns(pl.when(wrong).then(999).otherwise(pl.col("status")).alias("status"))
    text = frame.select(
        "hour", pl.when(pl.col("bad")).then(_bad(_lines(name, frame))).otherwise(_lines(name, frame)).alias("line")
    )
    paths = []
    for (hour,), part in text.group_by("hour", maintain_order=True):
        path = root / f"{name}-{hour:02d}.log"
        with path.open("wb") as stream:
            if name == "delimited_cloudfront":
                stream.write(_CLOUDFRONT_HEADER.encode())
            part.select("line").write_csv(stream, include_header=False, quote_style="never")
        paths.append(path)
    return paths


def _access_files(root: Path, lines: int) -> list[Path]:
    """The benchmark suite's own access day (`pipeline.cli.generate`), decompressed."""
    landing = root / "landing"
    generate_landing_zone(landing, [DAY], sources=["access"], lines_per_hour=max(1, lines // 24),
                          bad_line_rate=BAD_LINE_RATE, missing_hours={})  # fmt: skip
    paths = []
    for index, landed in enumerate(sorted(landing.rglob("*.log*"))):
        path = root / f"regex_access-{index:02d}.log"
        opener: Callable[..., Any] = gzip.open if landed.name.endswith(".gz") else open
        with opener(landed, "rb") as source, path.open("wb") as target:
            shutil.copyfileobj(source, target)
        paths.append(path)
    shutil.rmtree(landing)
    return paths


def parse_day(spec: SourceSpec, paths: list[Path]) -> dict[str, int]:
    """Parse the files as one partition's ingest does (one thread); return what it counted."""
    parser = PartitionParser(spec, DAY)
    pending = PendingValidation()
    counts = {"lines": 0, "rows_loaded": 0, "rows_quarantined": 0, "lines_ignored": 0, "continuation_lines": 0}
    batches = []
    for path in paths:
        with path.open("rb") as stream:
            batches.extend(parser.parse_file(iter_line_batches(stream, DEFAULT_CHUNK_BYTES), path.name, pending))
            # Keep only the counts: the batches' frames are dropped as an ingest would load them.
            for batch in batches:
                counts["lines"] += batch.lines_read
                counts["rows_loaded"] += batch.events.height
                counts["rows_quarantined"] += batch.quarantined.height
                counts["lines_ignored"] += batch.lines_ignored
                counts["continuation_lines"] += batch.continuation_lines
            batches.clear()
    judged = parser.judge(pending)
    counts["rows_loaded"] += judged.events.height
    counts["rows_quarantined"] += judged.quarantined.height
    return counts


def measure(workdir: Path, lines: int, repeat: int = 3) -> dict[str, dict[str, Any]]:
    """Generate every format's day, parse each `repeat` times in interleaved rounds (so that a
    burst of load from elsewhere hits them alike; each keeps its best round), delete them."""
    specs = sources()
    days: dict[str, list[Path]] = {}
    for name in specs:
        if name in POLARS_PATH:  # the very files of its native twin (generated just before)
            days[name] = days[POLARS_PATH[name]]
            continue
        shutil.rmtree(workdir / name, ignore_errors=True)
        days[name] = generate(workdir / name, name, lines)
    sizes = {name: sum(path.stat().st_size for path in paths) for name, paths in days.items()}
    figures: dict[str, dict[str, Any]] = {}
    for round_number in range(repeat):
        for name, spec in specs.items():
            without_native = mock.patch.object(delimited, "native_tokenizer", lambda: None)
            with without_native if name in POLARS_PATH else contextlib.nullcontext():
                started = time.perf_counter()
                counts = parse_day(spec, days[name])
                seconds = time.perf_counter() - started
            figure = figures.setdefault(name, {**counts, "rounds_s": []})
            figure["rounds_s"].append(seconds)
        print(f"formats round {round_number + 1} of {repeat} done")
    for name, figure in figures.items():
        accounted = figure["rows_loaded"] + figure["rows_quarantined"] + figure["lines_ignored"]
        assert figure["lines"] == accounted + figure["continuation_lines"], f"{name}: a line was lost"
        size = sizes[name]
        seconds = min(figure["rounds_s"])
        figure.update(
            bytes=size,
            bytes_per_line=size / figure["lines"],
            seconds=seconds,
            lines_per_s=figure["lines"] / seconds,
            bytes_per_s=size / seconds,
            quarantine_rate=figure["rows_quarantined"] / (figure["rows_loaded"] + figure["rows_quarantined"]),
        )
        shutil.rmtree(workdir / name, ignore_errors=True)
        print(f"format {name}: {figure['lines']:,} lines, {size / 1e6:,.0f} MB in {seconds:.2f} s (best)")
    return figures


def report_rows(figures: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """Rows for `benchmarks.run`'s table: (measure, value, target, met); none without figures."""
    if "regex_access" not in figures:
        return []
    regex = figures["regex_access"]["bytes_per_s"]
    rows: list[tuple[str, str, str, bool | None]] = []
    for name, figure in figures.items():
        value = f"{figure['lines_per_s'] / 1e3:,.0f}k l/s {figure['bytes_per_s'] / 1e6:,.0f} MB/s"
        ratio = figure["bytes_per_s"] / regex
        # The ratio is bytes/s against the regex path of `access` (1.00x for itself).
        label = f"parse {name} ({ratio:.2f}x per byte)"
        if name in PER_BYTE_TARGET:
            rows.append((label, value, ">= regex/byte", ratio >= 1))
        else:
            rows.append((label, value, "", None))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the format measures alone and print their rows."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.formats", description=__doc__)
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines per format (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="parses of each day; the best counts (default 3)")
    parser.add_argument("--workdir", default="benchmarks/output/formats")
    args = parser.parse_args(argv)
    figures = measure(Path(args.workdir), args.lines, args.repeat)
    for name, value, target, met in report_rows(figures):
        print(f"{name:<44} {value:>26} {target:>12}  {'' if met is None else 'yes' if met else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
