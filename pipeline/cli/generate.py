"""Deterministic generator for a sample landing zone of hourly log files.

Layout written::

    {root}/{source}/dt=YYYY-MM-DD/hour=HH/<name>.log[.gz]

Two sources are supported:

* ``access`` - Apache/nginx "combined" access-log lines.
* ``app``    - Python-logging style application records, some ERROR records
  followed by a multi-line traceback (continuation lines).

A small, exactly counted share of lines is deliberately malformed so that the
quarantine path of the pipeline can be exercised and asserted against.

Everything is derived from ``seed`` via per-(source, day, hour, file)
``random.Random`` instances - never the global RNG or the wall clock - so the
same arguments always produce byte-identical files (gzip ``mtime`` is 0).

Run as ``python -m pipeline.cli.generate --root data/landing --start 2024-01-15
--days 7``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

__all__ = [
    "SOURCES",
    "GeneratedPartition",
    "default_demo_days",
    "generate_demo_landing_zone",
    "generate_landing_zone",
    "main",
]

SOURCES: tuple[str, ...] = ("access", "app")

# Lines are built and written in chunks of this size: large enough that the
# per-write overhead vanishes, small enough to bound memory for huge hours.
_CHUNK_LINES = 50_000
# Upper bound on the per-file pools of pre-rendered line fragments; picking
# from pools is what keeps ~1M lines/hour cheap.
_POOL_MAX = 4096
# Share of hours written by two "servers" instead of one.
_TWO_FILE_SHARE = 0.15
# Share of access files that write timestamps in a non-UTC offset.
_OFFSET_FILE_SHARE = 0.10
# Share of ERROR app records followed by a traceback.
_TRACEBACK_SHARE = 0.01
# Share of app files with >=1 bad record whose first bad record is forced to
# be leading garbage (otherwise that kind would almost never appear).
_LEADING_GARBAGE_SHARE = 0.3

# Spelled out because strftime("%b") follows the process locale.
_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_SEC = tuple(f"{s:02d}" for s in range(60))
_MS = tuple(f"{ms:03d}" for ms in range(1000))


@dataclass(frozen=True)
class GeneratedPartition:
    """Exact figures for one (source, day) partition that was generated."""

    source: str
    day: date
    files: int
    lines: int  # physical lines written (app: including traceback lines)
    records: int  # logical records (access: == lines)
    bad_records: int  # records a strict parser must quarantine
    continuation_lines: int  # app traceback lines folded into a record
    hours_present: tuple[int, ...]


@dataclass
class _Counts:
    """Mutable per-file tally filled in while a file's chunks are produced."""

    lines: int = 0
    records: int = 0
    bad: int = 0
    continuation: int = 0


# --------------------------------------------------------------------------
# helpers


def _derive_seed(seed: int, *parts: object) -> int:
    """Stable 64-bit seed from ``seed`` and ``parts``.

    ``hash()`` is salted per process for str, so a cryptographic digest is
    used to keep runs reproducible across interpreters.
    """
    key = "|".join([str(seed), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _cum(weights: Sequence[float]) -> list[float]:
    """Cumulative weights for ``Random.choices`` (avoids re-summing per call)."""
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(rng: random.Random, items: Sequence[str], cum: Sequence[float]) -> str:
    return rng.choices(items, cum_weights=cum, k=1)[0]


def _bad_positions(rng: random.Random, n: int, rate: float) -> list[int]:
    """Sorted positions of bad lines: ``n * rate`` on average, exact count.

    The fractional part is resolved by one coin flip so that tiny files still
    get bad lines at the requested long-run rate.
    """
    expected = n * rate
    k = int(expected)
    if rng.random() < expected - k:
        k += 1
    k = min(k, n)
    return sorted(rng.sample(range(n), k)) if k else []


def _write_file(path: Path, chunks: Iterator[str], *, compress: bool) -> None:
    """Write text chunks to ``path`` atomically (temp file + rename).

    Atomic replacement keeps a concurrently running sensor from picking up a
    half-written file. gzip uses ``mtime=0`` and no embedded file name so the
    compressed bytes are deterministic too.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw:
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                    for chunk in chunks:
                        gz.write(chunk.encode("utf-8"))
            else:
                for chunk in chunks:
                    raw.write(chunk.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# access source

_USERS = ("-", "alice", "bob", "carol", "deploy", "admin")
_USERS_CUM = _cum((95, 1.5, 1, 1, 1, 0.5))
_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE")
_METHODS_CUM = _cum((85, 8, 4, 2, 1))
_PROTOS = ("HTTP/1.1", "HTTP/2.0")
_PROTOS_CUM = _cum((75, 25))
_STATUSES = ("200", "204", "301", "304", "404", "500", "503")
_STATUSES_CUM = _cum((80, 1.5, 3.5, 7, 6, 1.2, 0.8))
_REFERRERS = (
    "-",
    "https://example.com/",
    "https://example.com/products/",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://example.com/search?q=widgets",
)
_REFERRERS_CUM = _cum((50, 15, 10, 12, 4, 3, 6))
# No double quotes inside user agents: the truncation defect relies on the
# closing quote being the last character of a good line.
_USER_AGENTS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.2 Safari/605.1.15"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1"
    ),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
    "python-requests/2.31.0",
)
_USER_AGENTS_CUM = _cum((35, 20, 15, 15, 6, 5, 4))
_WORDS = ("widgets", "gadgets", "blue+shoes", "sale", "gift", "lamp")
# (template, weight, (min_bytes, max_bytes)) - sizes roughly match content.
_PATHS: tuple[tuple[str, float, tuple[int, int]], ...] = (
    ("/", 12, (4000, 9000)),
    ("/index.html", 10, (4000, 9000)),
    ("/about", 3, (3000, 6000)),
    ("/products/{n}", 12, (6000, 20000)),
    ("/api/v1/orders?page={p}", 8, (200, 4000)),
    ("/api/v1/cart", 5, (100, 1500)),
    ("/static/css/site.css", 10, (12000, 30000)),
    ("/static/js/app.{h}.js", 10, (80000, 250000)),
    ("/images/logo.png", 8, (5000, 15000)),
    ("/favicon.ico", 6, (1000, 5000)),
    ("/robots.txt", 2, (50, 200)),
    ("/login", 4, (2000, 5000)),
    ("/search?q={w}", 5, (3000, 12000)),
)
_PATHS_CUM = _cum([w for _, w, _ in _PATHS])
_OFFSETS_MIN = (60, -300, 330, -480, 540, -210, 120)  # for non-UTC files


def _ip_pool(seed: int) -> tuple[list[str], list[float]]:
    """~200 IPv4 (documentation/private ranges) + a few IPv6, Zipf-weighted.

    Built once per run from the seed so that the same clients recur across
    files, with a handful of heavy hitters like real traffic.
    """
    rng = random.Random(_derive_seed(seed, "access", "ip-pool"))
    prefixes = ("192.0.2", "198.51.100", "203.0.113", "10.12.0", "172.16.5")
    ips: set[str] = set()
    while len(ips) < 200:
        ips.add(f"{rng.choice(prefixes)}.{rng.randint(1, 254)}")
    pool = sorted(ips)
    rng.shuffle(pool)
    pool += [
        "2001:db8::1",
        "2001:db8::42",
        "2001:db8:85a3::8a2e:370:7334",
        "2001:db8:abcd:12::7",
        "2001:db8:1:2::beef",
    ]
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(pool))]
    return pool, _cum(weights)


def _access_request(rng: random.Random) -> tuple[str, str, str, str, str, str, str]:
    """Random (method, path, proto, status, bytes, referrer, user_agent)."""
    method = _pick(rng, _METHODS, _METHODS_CUM)
    template, _, (lo, hi) = rng.choices(_PATHS, cum_weights=_PATHS_CUM, k=1)[0]
    path = template.format(
        n=rng.randint(1, 5000),
        p=rng.randint(1, 40),
        h=f"{rng.getrandbits(32):08x}",
        w=rng.choice(_WORDS),
    )
    proto = _pick(rng, _PROTOS, _PROTOS_CUM)
    status = _pick(rng, _STATUSES, _STATUSES_CUM)
    if status in ("304", "204"):
        # Bodyless responses: nginx logs "-" or 0 depending on config.
        size = "-" if rng.random() < 0.8 else "0"
    elif status == "301":
        size = str(rng.randint(162, 250))
    elif status in ("404", "500", "503"):
        size = str(rng.randint(150, 600))
    elif method == "HEAD":
        size = "0"
    else:
        size = str(rng.randint(lo, hi))
    ref = _pick(rng, _REFERRERS, _REFERRERS_CUM)
    ua = _pick(rng, _USER_AGENTS, _USER_AGENTS_CUM)
    return method, path, proto, status, size, ref, ua


def _access_tail(req: tuple[str, str, str, str, str, str, str]) -> str:
    """Everything after the closing ``]`` of the timestamp."""
    method, path, proto, status, size, ref, ua = req
    return f'"{method} {path} {proto}" {status} {size} "{ref}" "{ua}"'


def _access_ts(wall: datetime, off: str) -> str:
    return (
        f"{wall.day:02d}/{_MONTHS[wall.month - 1]}/{wall.year}:"
        f"{wall.hour:02d}:{wall.minute:02d}:{wall.second:02d} {off}"
    )


def _access_chunks(
    rng: random.Random,
    ips: tuple[list[str], list[float]],
    day: date,
    hour: int,
    n: int,
    bad_rate: float,
    newline: str,
    counts: _Counts,
) -> Iterator[str]:
    """Yield newline-terminated text chunks for one access-log file."""
    # Decide the file-level shape first so it does not depend on n.
    offset_min = rng.choice(_OFFSETS_MIN) if rng.random() < _OFFSET_FILE_SHARE else 0
    sign = "-" if offset_min < 0 else "+"
    off = f"{sign}{abs(offset_min) // 60:02d}{abs(offset_min) % 60:02d}"
    # Wall clock = UTC instant + offset, so normalising back to UTC lands
    # inside this partition hour.
    wall_base = datetime(day.year, day.month, day.day, hour, tzinfo=UTC) + timedelta(minutes=offset_min)
    minute_prefix = [_access_ts(wall_base + timedelta(minutes=m), off)[:-8] for m in range(60)]
    sec_suffix = [f"{s} {off}] " for s in _SEC]

    bad = _bad_positions(rng, n, bad_rate)
    secs = sorted(int(rng.random() * 3600) for _ in range(n))

    pool_size = max(1, min(n, _POOL_MAX))
    ip_list, ip_cum = ips
    heads = [
        f"{ip} - {user} ["
        for ip, user in zip(
            rng.choices(ip_list, cum_weights=ip_cum, k=pool_size),
            rng.choices(_USERS, cum_weights=_USERS_CUM, k=pool_size),
            strict=True,
        )
    ]
    tails = [_access_tail(_access_request(rng)) for _ in range(pool_size)]
    rnd = rng.random

    def bad_line(pos: int) -> str:
        head = heads[int(rnd() * pool_size)]
        req = _access_request(rng)
        kind = rng.randrange(5)
        if kind == 0:  # truncated: cut inside the UA, closing quote lost
            s = secs[pos]
            line = f"{head}{minute_prefix[s // 60]}{sec_suffix[s % 60]}{_access_tail(req)}"
            ua_start = line.rfind(' "') + 2  # first char of UA text
            cut = rng.randrange(ua_start + 1, len(line) - 1)
            return line[:cut]
        if kind == 1:  # status outside 100..599
            req = (*req[:3], rng.choice(("999", "700", "000")), *req[4:])
            s = secs[pos]
            return f"{head}{minute_prefix[s // 60]}{sec_suffix[s % 60]}{_access_tail(req)}"
        if kind == 2:  # garbage text
            return f"GARBAGE LINE {rng.getrandbits(64):016x} ### not an access log"
        if kind == 3:  # impossible calendar values
            month = _MONTHS[wall_base.month - 1]
            ts = f"{rng.randint(32, 39)}/{month}/{wall_base.year}:{rng.randint(25, 29)}:{rng.randint(61, 99)}:00 {off}"
            return f"{head}{ts}] {_access_tail(req)}"
        # kind 4: valid timestamp, but two days before the partition: beyond any
        # tolerance a parser allows around the day (a single day back from hour 23
        # would land within an hour of the partition's start).
        wall = wall_base + timedelta(seconds=secs[pos]) - timedelta(days=2)
        return f"{head}{_access_ts(wall, off)}] {_access_tail(req)}"

    bi = 0
    for start in range(0, n, _CHUNK_LINES):
        chunk_secs = secs[start : start + _CHUNK_LINES]
        lines = [
            f"{heads[int(rnd() * pool_size)]}{minute_prefix[s // 60]}"
            f"{sec_suffix[s % 60]}{tails[int(rnd() * pool_size)]}"
            for s in chunk_secs
        ]
        end = start + len(lines)
        while bi < len(bad) and bad[bi] < end:
            lines[bad[bi] - start] = bad_line(bad[bi])
            bi += 1
        lines.append("")  # terminate the last line too
        yield newline.join(lines)
    counts.lines += n
    counts.records += n
    counts.bad += len(bad)


# --------------------------------------------------------------------------
# app source

_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")
_LEVELS_CUM = _cum((15, 68, 9, 1, 6, 1))
# Messages per level family; every template may use {ms} {id} {n} {k} {path}.
_APP_MESSAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "DEBUG": (
        ("app.web", "request headers parsed in {k}us"),
        (
            "app.db",
            "SELECT orders.id, orders.total FROM orders WHERE id = {id} ({ms}ms)",
        ),
        ("app.worker", "polling queue 'default' (depth={n})"),
        (
            "urllib3.connectionpool",
            "Starting new HTTPS connection (1): api.example.com:443",
        ),
        (
            "urllib3.connectionpool",
            'https://api.example.com:443 "GET /v2/rates HTTP/1.1" 200 {n}',
        ),
    ),
    "INFO": (
        ("app.web", "GET {path} 200 {ms}ms"),
        ("app.web", "POST /api/v1/orders 201 {ms}ms"),
        ("app.web", "user {id} logged in"),
        ("app.db", "connection pool size=20 checked_out={k}"),
        ("app.worker", "job {id} completed in {ms}ms"),
        ("app.worker", "picked up job {id} from queue 'default'"),
    ),
    "WARNING": (
        ("app.web", "slow request GET {path} took {ms}ms"),
        ("app.db", "slow query ({ms}ms): SELECT * FROM orders WHERE customer_id = %s"),
        ("app.worker", "job {id} retry {k}/5"),
        (
            "urllib3.connectionpool",
            (
                "Retrying (Retry(total={k}, connect=None, read=None, redirect=None, "
                "status=None)) after connection broken by 'ReadTimeoutError': /v2/rates"
            ),
        ),
    ),
    "ERROR": (
        ("app.web", "unhandled exception while handling GET {path}"),
        ("app.db", "deadlock detected, rolling back transaction {id}"),
        ("app.worker", "job {id} failed"),
        (
            "urllib3.connectionpool",
            "Failed to parse headers (url=https://api.example.com:443/v2/rates)",
        ),
    ),
    "CRITICAL": (
        ("app.db", "database unreachable: connection refused (attempt {k})"),
        ("app.worker", "worker {k} crashed, restarting"),
        ("app.web", "worker pool exhausted, rejecting requests"),
    ),
}
_APP_PATHS = ("/api/v1/orders", "/api/v1/cart", "/products/{n}", "/", "/search")
_TRACEBACKS: tuple[tuple[str, ...], ...] = (
    (
        "Traceback (most recent call last):",
        '  File "/srv/app/worker.py", line 42, in run',
        "    result = job()",
        "ValueError: bad input",
    ),
    (
        "Traceback (most recent call last):",
        '  File "/srv/app/web.py", line 118, in handle',
        "    order = load_order(order_id)",
        '  File "/srv/app/db.py", line 57, in load_order',
        "    return rows[0]",
        "IndexError: list index out of range",
    ),
    (
        "Traceback (most recent call last):",
        '  File "/srv/app/worker.py", line 42, in run',
        "    result = job()",
        '  File "/srv/app/jobs/sync.py", line 88, in __call__',
        "    payload = self.fetch()",
        "TimeoutError: upstream did not respond within 30s",
    ),
    (
        "Traceback (most recent call last):",
        '  File "/srv/app/auth.py", line 23, in current_user',
        "    return session['user_id']",
        "KeyError: 'user_id'",
    ),
)
_UNKNOWN_LEVELS = ("VERBOSE", "NOTICE", "SEVERE")
_LEADING_GARBAGE = (
    "GARBAGE LINE {x} ### partial write before rotation",
    "...continued from previous file {x}",
    "\tat com.example.Legacy.run(Legacy.java:{k}) <{x}>",
)


def _app_tail(rng: random.Random) -> tuple[str, bool]:
    """Random `` LEVEL logger: message`` and whether the level is ERROR."""
    level = _pick(rng, _LEVELS, _LEVELS_CUM)
    family = "WARNING" if level == "WARN" else level
    logger, template = rng.choice(_APP_MESSAGES[family])
    msg = template.format(
        ms=rng.randint(2, 4000),
        id=rng.randint(1000, 999999),
        n=rng.randint(0, 5000),
        k=rng.randint(1, 5),
        path=rng.choice(_APP_PATHS).format(n=rng.randint(1, 5000)),
    )
    return f" {level} {logger}: {msg}", level == "ERROR"


def _app_chunks(
    rng: random.Random,
    day: date,
    hour: int,
    n: int,
    bad_rate: float,
    newline: str,
    counts: _Counts,
) -> Iterator[str]:
    """Yield newline-terminated text chunks for one application-log file."""
    base = datetime(day.year, day.month, day.day, hour)
    minute_prefix = [f"{base + timedelta(minutes=m):%Y-%m-%d %H:%M:}" for m in range(60)]
    sec_comma = [f"{s}," for s in _SEC]

    bad = _bad_positions(rng, n, bad_rate)
    if bad and bad[0] != 0 and rng.random() < _LEADING_GARBAGE_SHARE:
        # Keep the count, move one bad record to the top of the file.
        bad = sorted([0, *bad[1:]])
    bad_set = set(bad)
    vals = sorted(int(rng.random() * 3_600_000) for _ in range(n))  # ms in hour

    pool_size = max(1, min(n, _POOL_MAX))
    pool = [_app_tail(rng) for _ in range(pool_size)]
    tails = [t for t, _ in pool]
    is_error = [e for _, e in pool]
    tracebacks = [newline.join(("", *tb)) for tb in _TRACEBACKS]
    rnd = rng.random

    def ts(pos: int) -> str:
        v = vals[pos]
        return f"{minute_prefix[v // 60000]}{sec_comma[(v // 1000) % 60]}{_MS[v % 1000]}"

    def bad_record(pos: int) -> str:
        if pos == 0:
            # The only place a non-timestamp line is unambiguously bad: there
            # is no preceding record it could be a continuation of.
            return rng.choice(_LEADING_GARBAGE).format(x=f"{rng.getrandbits(32):08x}", k=rng.randint(10, 999))
        logger = rng.choice(("app.web", "app.db", "app.worker"))
        if rng.random() < 0.5:
            return f"{ts(pos)} {rng.choice(_UNKNOWN_LEVELS)} {logger}: hi"
        # Timestamp-SHAPED prefix with impossible values: still starts a record.
        return (
            f"{day.isoformat()} {rng.randint(25, 29)}:{rng.randint(61, 99)}:"
            f"{rng.randint(0, 59):02d},{rng.randint(0, 999):03d} INFO {logger}: x"
        )

    continuation = 0
    for start in range(0, n, _CHUNK_LINES):
        chunk_vals = vals[start : start + _CHUNK_LINES]
        picks = [int(rnd() * pool_size) for _ in chunk_vals]
        records = [
            f"{minute_prefix[v // 60000]}{sec_comma[(v // 1000) % 60]}{_MS[v % 1000]}{tails[p]}"
            for v, p in zip(chunk_vals, picks, strict=True)
        ]
        for j, p in enumerate(picks):
            if is_error[p] and start + j not in bad_set and rnd() < _TRACEBACK_SHARE:
                tb_index = int(rnd() * len(tracebacks))
                records[j] += tracebacks[tb_index]
                continuation += len(_TRACEBACKS[tb_index])
        for pos in bad:
            if start <= pos < start + len(records):
                records[pos - start] = bad_record(pos)
        records.append("")
        yield newline.join(records)
    counts.lines += n + continuation
    counts.records += n
    counts.bad += len(bad)
    counts.continuation += continuation


# --------------------------------------------------------------------------
# public API


# What the demo's last day (yesterday) of `access` shows a newcomer: a day over its 1% error
# budget (a failed `quarantine_rate` check, a verdict, blocked daily_metrics) with a missing hour.
DEMO_OVER_BUDGET_RATE = 0.03
DEMO_MISSING_HOUR = 13


def default_demo_days(today: date) -> list[date]:
    """The seven demo days: the week ending the day before `today` (yesterday, when the demo
    command passes the UTC date of its clock; the pipeline's data logic never reads it)."""
    return [today - timedelta(days=7 - i) for i in range(7)]


def generate_demo_landing_zone(root: Path, days: Sequence[date], *, lines_per_hour: int) -> list[GeneratedPartition]:
    """The demo's landing zone: both sources every day within budget with every hour, except the
    last day of `access`: `DEMO_OVER_BUDGET_RATE` of its records malformed and hour
    `DEMO_MISSING_HOUR` missing."""
    *usual, last = days
    partitions = generate_landing_zone(root, usual, lines_per_hour=lines_per_hour, missing_hours={})
    partitions += generate_landing_zone(root, [last], sources=["app"], lines_per_hour=lines_per_hour, missing_hours={})
    partitions += generate_landing_zone(
        root,
        [last],
        sources=["access"],
        lines_per_hour=lines_per_hour,
        bad_line_rate=DEMO_OVER_BUDGET_RATE,
        missing_hours={("access", last): {DEMO_MISSING_HOUR}},
    )
    return partitions


def generate_landing_zone(
    root: Path,
    days: Sequence[date],
    *,
    sources: Sequence[str] = SOURCES,
    lines_per_hour: int = 200,
    bad_line_rate: float = 0.005,
    missing_hours: Mapping[tuple[str, date], Collection[int]] | None = None,
    gzip_hours: Collection[int] = (12,),
    crlf_hours: Collection[int] = (6,),
    empty_days: Collection[tuple[str, date]] = (),
    seed: int = 42,
) -> list[GeneratedPartition]:
    """Write hourly sample log files under ``root`` and return exact figures.

    Args:
        root: Landing-zone root; ``{root}/{source}/dt=.../hour=HH/`` is created.
        days: Days to generate (hours 0-23 each). Must not contain duplicates.
        sources: Any of ``"access"`` and ``"app"``.
        lines_per_hour: Records per source and hour, split over that hour's
            files. For ``app`` this counts records; traceback continuation
            lines come on top.
        bad_line_rate: Expected share of malformed records (exact count is
            reported in the result).
        missing_hours: ``{(source, day): hours}`` to omit entirely (no hour
            folder). ``None`` means the demo default: hour 4 of the third day
            for ``access`` (when at least three days are given).
        gzip_hours: Hours whose files are written as ``.log.gz`` (all sources).
        crlf_hours: Hours whose ``access`` files use CRLF line endings.
        empty_days: ``(source, day)`` pairs that get no folder at all.
        seed: Master seed; identical arguments give byte-identical files.

    Returns:
        One :class:`GeneratedPartition` per (source, day), sources outer.

    Existing files with the same names are overwritten; other files already
    under ``root`` are left untouched.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected a subset of {SOURCES}")
    if lines_per_hour < 0:
        raise ValueError("lines_per_hour must be >= 0")
    if not 0.0 <= bad_line_rate <= 1.0:
        raise ValueError("bad_line_rate must be within [0, 1]")
    if len(set(days)) != len(days):
        raise ValueError("days contains duplicates")
    if missing_hours is None:
        missing_hours = {("access", days[2]): {4}} if len(days) >= 3 else {}

    root = Path(root)
    empty = set(empty_days)
    gz_set, crlf_set = set(gzip_hours), set(crlf_hours)
    ips = _ip_pool(seed)
    results: list[GeneratedPartition] = []

    for source in sources:
        prefix = "web" if source == "access" else "app"
        for day in days:
            counts = _Counts()
            files = 0
            hours_present: list[int] = []
            skip = set(missing_hours.get((source, day), ()))
            hours = [] if (source, day) in empty else [h for h in range(24) if h not in skip]
            for hour in hours:
                hour_rng = random.Random(_derive_seed(seed, source, day.isoformat(), hour))
                n_files = 2 if lines_per_hour >= 2 and hour_rng.random() < _TWO_FILE_SHARE else 1
                if n_files == 2:
                    # Uneven split, like two servers behind a load balancer.
                    first = round(lines_per_hour * hour_rng.uniform(0.35, 0.65))
                    split = [min(max(first, 1), lines_per_hour - 1)]
                    split.append(lines_per_hour - split[0])
                else:
                    split = [lines_per_hour]
                hour_dir = root / source / f"dt={day.isoformat()}" / f"hour={hour:02d}"
                hour_dir.mkdir(parents=True, exist_ok=True)
                compress = hour in gz_set
                newline = "\r\n" if source == "access" and hour in crlf_set else "\n"
                for idx, n in enumerate(split, start=1):
                    name = f"{prefix}-{idx:02d}.log" + (".gz" if compress else "")
                    rng = random.Random(_derive_seed(seed, source, day.isoformat(), hour, "file", idx))
                    chunks: Iterator[str]
                    if source == "access":
                        chunks = _access_chunks(rng, ips, day, hour, n, bad_line_rate, newline, counts)
                    else:
                        chunks = _app_chunks(rng, day, hour, n, bad_line_rate, newline, counts)
                    _write_file(hour_dir / name, chunks, compress=compress)
                    files += 1
                hours_present.append(hour)
            results.append(
                GeneratedPartition(
                    source=source,
                    day=day,
                    files=files,
                    lines=counts.lines,
                    records=counts.records,
                    bad_records=counts.bad,
                    continuation_lines=counts.continuation,
                    hours_present=tuple(hours_present),
                )
            )
    return results


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date: {value!r}") from exc


def _bounded(kind: Callable[[str], float], lo: float, hi: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = kind(value)
        if not lo <= number <= hi:
            raise argparse.ArgumentTypeError(f"{value} not within [{lo}, {hi}]")
        return number

    return parse


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: generate the demo landing zone and print a summary."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.cli.generate",
        description="Generate a deterministic sample landing zone of hourly log files.",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="landing root (default: PIPELINE_LANDING_URL or data/landing)"
    )
    parser.add_argument(
        "--start",
        type=_parse_date,
        default=default_demo_days(datetime.now(UTC).date())[0],
        help="first day (default: a week before today, UTC)",
    )
    parser.add_argument("--days", type=_bounded(int, 1, 3660), default=7)
    parser.add_argument("--lines-per-hour", type=_bounded(int, 0, 10**9), default=200)
    parser.add_argument("--bad-line-rate", type=_bounded(float, 0.0, 1.0), default=0.005)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    args = parser.parse_args(argv)

    days = [args.start + timedelta(days=i) for i in range(int(args.days))]
    root = args.root
    if root is None:
        from pipeline.settings import Settings, resolve_local

        root = resolve_local(Settings.from_env().landing_url)
    partitions = generate_landing_zone(
        root,
        days,
        sources=args.sources,
        lines_per_hour=int(args.lines_per_hour),
        bad_line_rate=args.bad_line_rate,
        seed=args.seed,
    )
    for p in partitions:
        print(
            f"{p.source} dt={p.day.isoformat()} files={p.files} "
            f"hours={len(p.hours_present)} "
            f"lines={p.lines} records={p.records} bad={p.bad_records} "
            f"continuation={p.continuation_lines}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
