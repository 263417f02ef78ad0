"""Delivery of the metrics: unreachable gateways, credentials, settings, and the inputs.

A gateway that is down or hangs must cost a run a bounded, logged delay and nothing else;
credentials carried by the URL must reach the gateway and never a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.engine.operational_metrics import AttemptMetrics, MetricsPusher, SourceHistory, push_attempt_metrics
from pipeline.engine.pushgateway import PushgatewayClient, PushgatewayConfig, PushgatewayError
from pipeline.engine.redaction import redact_url as redact
from pipeline.settings import SettingsError
from pipeline_tests.observability.conftest import AUTH_PASSWORD, AUTH_USER, Gateway
from pipeline_tests.observability.test_operational_metrics import loaded_day
from pipeline_tests.ops.conftest import free_port

UTC = dt.UTC


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.mark.parametrize("kind", ["closed port", "silent port"])
def test_an_unreachable_gateway_costs_a_bounded_delay_and_a_warning(
    kind: str, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    port = silent_port if kind == "silent port" else free_port()
    config = PushgatewayConfig(url=f"http://127.0.0.1:{port}/", timeout_s=0.5, retries=1, backoff_s=0.1)
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    assert push_attempt_metrics(loaded_day(), config) is False  # returns, never raises
    elapsed = time.monotonic() - started
    assert elapsed <= config.worst_case_s + 0.5, elapsed
    if kind == "silent port":
        # It really waited for an answer, on each of its two attempts.
        assert elapsed >= 2 * config.timeout_s
    [warning] = warnings_of(caplog)
    assert warning.startswith(
        "operational metrics of access loaded not pushed: "
        f"push to http://127.0.0.1:{port}/… failed after 2 attempt(s): "
    )
    retry = [record.getMessage() for record in caplog.records if "attempt 1/2 failed" in record.getMessage()]
    assert retry and retry[0].endswith("again in 0.1 s")


def test_after_a_failure_pushes_are_skipped_for_the_cool_down(caplog: pytest.LogCaptureFixture) -> None:
    """A year's backfill against a dead gateway would otherwise wait out every timeout each day."""
    now = [1000.0]
    sleeps: list[float] = []
    config = PushgatewayConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=0.5, retries=2, cooldown_s=60)
    pusher = MetricsPusher(config, clock=lambda: now[0], sleep=sleeps.append)
    with caplog.at_level(logging.WARNING):
        assert pusher.push(loaded_day()) is False
        assert sleeps == [0.5, 1.0]  # two retries, backing off
        now[0] += 59
        started = time.monotonic()
        assert pusher.push(loaded_day()) is False
        assert time.monotonic() - started < 0.2  # no connection attempted
        assert sleeps == [0.5, 1.0]
        now[0] += 2
        assert pusher.push(loaded_day()) is False  # cool-down over: tried again
        assert sleeps == [0.5, 1.0, 0.5, 1.0]
    assert warnings_of(caplog)[1] == (
        f"operational metrics of access loaded not pushed: {config.target} failed 59 s ago (retrying after 60 s)"
    )


def test_the_cool_down_ends_with_the_next_push_that_succeeds(pushgateway: Gateway) -> None:
    now = [0.0]
    pusher = MetricsPusher(PushgatewayConfig(url=pushgateway.url, cooldown_s=10), clock=lambda: now[0])
    # The gateway refuses a first push (a conflicting counter of one of our names)...
    conflict = "# TYPE pipeline_last_attempt_rows_loaded counter\npipeline_last_attempt_rows_loaded 5\n"
    assert pushgateway.push_text("job/other_batch", conflict).status_code == 200
    assert pusher.push(loaded_day()) is False
    pushgateway.wipe()  # ...then the conflict is gone,
    now[0] = 9
    assert pusher.push(loaded_day()) is False  # but the cool-down still holds,
    assert pushgateway.samples() == {}
    now[0] = 11
    assert pusher.push(loaded_day()) is True
    assert pusher.push(loaded_day()) is True  # not in a cool-down any more
    assert pushgateway.samples()


def test_basic_auth_credentials_in_the_url_are_sent_and_never_logged(
    auth_pushgateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    host = auth_pushgateway.url.removeprefix("http://")
    caplog.set_level(logging.DEBUG)  # urllib3's request lines included
    good = PushgatewayConfig(url=f"http://{AUTH_USER}:{AUTH_PASSWORD}@{host}")
    assert push_attempt_metrics(loaded_day(), good) is True
    wrong = PushgatewayConfig(url=f"http://{AUTH_USER}:not-the-password@{host}", retries=2)
    sleeps: list[float] = []
    assert MetricsPusher(wrong, sleep=sleeps.append).push(loaded_day()) is False
    assert sleeps == []  # 401 is not retried
    assert warnings_of(caplog) == [
        f"operational metrics of access loaded not pushed: push refused by {auth_pushgateway.url}/…: "
        "HTTP 401: 'Unauthorized'"
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert AUTH_PASSWORD not in logged and "not-the-password" not in logged and AUTH_USER not in logged
    assert "(job=access_daily)" in logged


class _Recorder(BaseHTTPRequestHandler):
    """Records each request's method, path and Authorization header; answers 200."""

    seen: list[tuple[str, str, str | None]] = []

    def do_PUT(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(("PUT", self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
        return


def test_a_token_and_a_path_prefix_reach_the_gateway_and_no_log(caplog: pytest.LogCaptureFixture) -> None:
    """`https://TOKEN@host/prefix?key=…`: a bearer token, a proxy's path prefix, a query key."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        config = PushgatewayConfig(url=f"http://tok-123@127.0.0.1:{port}/gw-secret-path/?key=q-secret")
        caplog.set_level(logging.DEBUG)
        assert push_attempt_metrics(loaded_day(), config) is True
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == [
        (
            "PUT",
            "/gw-secret-path/metrics/job/access_daily/pipeline/log_pipeline/source/access?key=q-secret",
            "Bearer tok-123",
        )
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("tok-123", "gw-secret-path", "q-secret"):
        assert secret not in logged
    assert f"pushed to http://127.0.0.1:{port}/… (job=access_daily)" in logged


def test_settings_come_from_the_environment_with_defaults() -> None:
    assert PushgatewayConfig.from_env({}) == PushgatewayConfig(
        url=None, timeout_s=5.0, retries=3, pipeline="log_pipeline"
    )
    assert not PushgatewayConfig.from_env({}).enabled
    config = PushgatewayConfig.from_env(
        {
            "PIPELINE_PUSHGATEWAY_URL": " https://push.example.com:9091 ",
            "PIPELINE_PUSHGATEWAY_TIMEOUT_S": "2.5",
            "PIPELINE_PUSHGATEWAY_RETRIES": "0",
            "PIPELINE_PUSHGATEWAY_PIPELINE_LABEL": "log_pipeline_staging",
        }
    )
    assert (config.url, config.timeout_s, config.retries, config.pipeline) == (
        "https://push.example.com:9091",
        2.5,
        0,
        "log_pipeline_staging",
    )
    # One attempt of at most connect + read timeout.
    assert config.worst_case_s == 5.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PIPELINE_PUSHGATEWAY_URL",
            "push.example.com:9091",
            "PIPELINE_PUSHGATEWAY_URL: expected an http:// or https:// URL",
        ),
        (
            "PIPELINE_PUSHGATEWAY_TIMEOUT_S",
            "0",
            "PIPELINE_PUSHGATEWAY_TIMEOUT_S='0': expected a value between 0.1 and 120",
        ),
        ("PIPELINE_PUSHGATEWAY_RETRIES", "many", "PIPELINE_PUSHGATEWAY_RETRIES='many': expected a number"),
        ("PIPELINE_PUSHGATEWAY_PIPELINE_LABEL", "log pipeline", "PIPELINE_PUSHGATEWAY_PIPELINE_LABEL='log pipeline'"),
    ],
)
def test_an_unusable_setting_names_its_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        PushgatewayConfig.from_env({variable: value})
    assert str(error.value).startswith(message)


def test_a_bad_setting_in_a_run_is_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_URL", "ftp://user:pw@host")
    with caplog.at_level(logging.WARNING):
        assert push_attempt_metrics(loaded_day()) is False
    assert warnings_of(caplog) == [
        "operational metrics not pushed: PIPELINE_PUSHGATEWAY_URL: expected an http:// or https:// URL"
    ]


def test_redact_keeps_scheme_host_and_port_only() -> None:
    assert redact("https://user:pw@push.example.com:9091/prefix/?token=x") == "https://push.example.com:9091/…"
    assert redact("http://push.example.com") == "http://push.example.com/…"


def test_the_client_refuses_to_run_without_a_url_or_a_job() -> None:
    with pytest.raises(ValueError, match="needs a URL"):
        PushgatewayClient(PushgatewayConfig(url=None))
    with pytest.raises(ValueError, match="needs a `job` label"):
        PushgatewayClient(PushgatewayConfig(url="http://127.0.0.1:1")).delete({"source": "access"})


def test_a_listing_the_gateway_cannot_give_raises_for_the_sweeper() -> None:
    client = PushgatewayClient(PushgatewayConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=0.2, retries=0))
    with pytest.raises(PushgatewayError, match=r"^list groups to http://127\.0\.0\.1:\d+/… failed after 1 attempt"):
        client.groups()


# -- the inputs ------------------------------------------------------------------------------
def test_attempt_metrics_refuse_unbounded_labels_naive_times_and_unknown_statuses() -> None:
    base = loaded_day()
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    with pytest.raises(ValueError, match="not a bounded label value"):
        AttemptMetrics(**{**fields, "job": "access daily/run 1f3c"})
    with pytest.raises(ValueError, match="must be timezone-aware"):
        AttemptMetrics(**{**fields, "attempt_ended_at": dt.datetime(2024, 1, 18, 1, 30)})
    with pytest.raises(ValueError, match="status='running'"):
        AttemptMetrics(**{**fields, "status": "running"})
    with pytest.raises(ValueError, match="rows_loaded must not be negative"):
        AttemptMetrics(**{**fields, "rows_loaded": -1})
    paris = dt.timezone(dt.timedelta(hours=1))
    moved = AttemptMetrics(**{**fields, "attempt_ended_at": dt.datetime(2024, 1, 18, 2, 30, tzinfo=paris)})
    assert moved.attempt_ended_at == dt.datetime(2024, 1, 18, 1, 30, tzinfo=UTC)
    assert moved.attempt_ended_at.tzinfo is UTC


def _attempt(day: str, status: str, ended: str, rows: int, missing: object = 0) -> dict[str, object]:
    return {
        "partition_date": dt.date.fromisoformat(day),
        "status": status,
        "ended_at": dt.datetime.fromisoformat(ended).replace(tzinfo=UTC),
        "rows_loaded": rows,
        "missing_hours": missing,
    }


def test_source_history_from_the_loads_table() -> None:
    history = SourceHistory.from_attempts(
        [
            _attempt("2024-01-16", "loaded", "2024-01-17T01:31", 4400, [4]),
            _attempt("2024-01-17", "loaded", "2024-01-18T01:31", 4577, [4, 5]),
            # a re-run of the 17th that failed: rolled back, the 17th still holds 4,577 rows
            _attempt("2024-01-17", "failed", "2024-01-18T09:00", 0, []),
            # today's attempt of the 18th failed too
            _attempt("2024-01-18", "failed", "2024-01-19T01:31", 0, []),
            # a backfill of an old day, loaded last: the newest success, not the newest day
            _attempt("2019-03-02", "empty", "2024-01-19T03:00", 0, 24),
        ]
    )
    assert history == SourceHistory(
        last_success_at=dt.datetime(2024, 1, 19, 3, 0, tzinfo=UTC),
        newest_day=dt.date(2024, 1, 17),
        newest_day_rows_loaded=4577,
        newest_day_missing_hours=2,
    )


def test_source_history_takes_the_latest_success_of_the_newest_day() -> None:
    history = SourceHistory.from_attempts(
        [
            _attempt("2024-01-17", "loaded", "2024-01-18T01:31", 4577, 1),
            _attempt("2024-01-17", "loaded", "2024-01-18T09:15", 4790, 0),  # late files re-run
            _attempt("2024-01-17", "loaded", "2024-01-18T05:00", 4600, 1),
        ]
    )
    assert (history.newest_day_rows_loaded, history.newest_day_missing_hours) == (4790, 0)
    assert SourceHistory.from_attempts([_attempt("2024-01-17", "failed", "2024-01-18T01:31", 0)]) == SourceHistory()
