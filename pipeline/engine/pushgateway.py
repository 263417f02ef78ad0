"""A small client for a Prometheus Pushgateway: settings, delivery, listing and deleting groups.

Plain Python (no Dagster). Metrics are encoded and grouping keys escaped by `prometheus-client`;
the HTTP requests themselves go through `requests`, so that every one has an explicit
(connect, read) timeout and credentials carried by the URL can be sent as headers.

The URL is a secret as soon as it carries credentials (`https://user:password@host`, a bare
token `https://TOKEN@host`, a query string or a path prefix a proxy checks): only its scheme,
host and port are ever logged or put in an error message (`redact_url`), exception texts (which
can quote the URL) are reduced to their type, and the HTTP client's own DEBUG request lines
are filtered.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from prometheus_client import CollectorRegistry, delete_from_gateway, push_to_gateway

from pipeline.engine.redaction import redact_url, urllib3_secrets_filter
from pipeline.settings import SettingsError, env_number

logger = logging.getLogger(__name__)

# The constant label that marks this pipeline's groups, so the sweeper never deletes a group
# another program pushed to the same gateway. One value per deployment (bounded).
DEFAULT_PIPELINE_LABEL = "log_pipeline"
LABEL_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
# Backoff between attempts doubles from `backoff_s` and never exceeds this.
MAX_BACKOFF_S = 10.0


class PushgatewayError(RuntimeError):
    """The gateway could not be reached or refused a request (the message never holds the URL)."""


class _Permanent(PushgatewayError):
    """A refusal that another attempt will not change (HTTP 4xx other than 408/429)."""


_REDACT = urllib3_secrets_filter("…")


@dataclass(frozen=True)
class PushgatewayConfig:
    """Where operational metrics are pushed, and how patiently (see docs/observability.md).

    `url` None disables pushing altogether. Each HTTP request waits at most `timeout_s` for a
    connection and again for an answer; a failed request is tried again up to `retries` times,
    `backoff_s`, 2×, 4×… apart. After a push has failed every attempt, pushes from the same
    process are skipped for `cooldown_s` (a warning says so each time): a backfill of a year
    against a dead gateway then loses seconds, not hours. `pipeline` is the constant label that
    marks this deployment's groups.
    """

    url: str | None = None
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    cooldown_s: float = 60.0
    pipeline: str = DEFAULT_PIPELINE_LABEL

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            # Do not echo the value: it may hold credentials.
            raise SettingsError("PIPELINE_PUSHGATEWAY_URL: expected an http:// or https:// URL")
        if not LABEL_VALUE.match(self.pipeline):
            raise SettingsError(
                f"PIPELINE_PUSHGATEWAY_PIPELINE_LABEL={self.pipeline!r}: expected {LABEL_VALUE.pattern}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PushgatewayConfig:
        """The settings of this deployment, from `PIPELINE_PUSHGATEWAY_*` variables; a present
        but unusable value is an error naming the variable."""
        env = os.environ if environ is None else environ
        return cls(
            url=env.get("PIPELINE_PUSHGATEWAY_URL", "").strip() or None,
            timeout_s=env_number(env, "PIPELINE_PUSHGATEWAY_TIMEOUT_S", cls.timeout_s, 0.1, 120),
            retries=int(env_number(env, "PIPELINE_PUSHGATEWAY_RETRIES", cls.retries, 0, 10)),
            pipeline=env.get("PIPELINE_PUSHGATEWAY_PIPELINE_LABEL", "").strip() or DEFAULT_PIPELINE_LABEL,
        )

    @property
    def enabled(self) -> bool:
        """Whether a gateway is configured."""
        return bool(self.url)

    @property
    def target(self) -> str:
        """The gateway's URL as it may be logged."""
        return redact_url(self.url) if self.url else "(none)"

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)

    @property
    def worst_case_s(self) -> float:
        """The longest one operation can take against a gateway that accepts connections and
        never answers: every attempt's connect plus read timeout, plus the waits between."""
        return (self.retries + 1) * 2 * self.timeout_s + sum(self.backoff(n) for n in range(1, self.retries + 1))


@dataclass(frozen=True)
class _Endpoint:
    """The URL split into what prometheus-client builds paths on and what goes into headers."""

    base: str  # scheme://host:port/prefix, without credentials or query
    query: str
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> _Endpoint:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        authorization = None
        if parts.username is not None and parts.password is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password)}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        elif parts.username:
            authorization = f"Bearer {unquote(parts.username)}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(base=base, query=parts.query, authorization=authorization)


class PushgatewayClient:
    """PUT, DELETE and list groups on the configured gateway, each with bounded retries.

    Every method raises `PushgatewayError` once its attempts are exhausted (or at once for a
    refusal that will not change); callers that must never fail catch it. `sleep` is injectable
    for tests.
    """

    def __init__(self, config: PushgatewayConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if not config.url:
            raise ValueError("PushgatewayClient needs a URL (PIPELINE_PUSHGATEWAY_URL)")
        self.config = config
        self._endpoint = _Endpoint.parse(config.url)
        self._sleep = sleep
        parts = urlsplit(config.url)
        for secret in (parts.path.rstrip("/"), f"?{parts.query}" if parts.query else ""):
            if secret.strip("/?"):
                _REDACT.secrets.add(secret)

    def put(self, grouping_key: Mapping[str, str], registry: CollectorRegistry) -> None:
        """Replace the group `grouping_key` (which must hold `job`) with the registry's metrics."""
        job, rest = _split_job(grouping_key)
        self._retrying(
            "push",
            lambda: push_to_gateway(
                self._endpoint.base,
                job=job,
                registry=registry,
                grouping_key=rest,
                timeout=self.config.timeout_s,
                handler=self._handler,
            ),
        )

    def delete(self, grouping_key: Mapping[str, str]) -> None:
        """Delete the group `grouping_key` (which must hold `job`); deleting a missing group is fine."""
        job, rest = _split_job(grouping_key)
        self._retrying(
            "delete",
            lambda: delete_from_gateway(
                self._endpoint.base, job=job, grouping_key=rest, timeout=self.config.timeout_s, handler=self._handler
            ),
        )

    def groups(self) -> list[dict[str, str]]:
        """The grouping labels of every group on the gateway (its `/api/v1/metrics` API)."""
        found: list[dict[str, Any]] = []

        def fetch() -> None:
            body = self._send(f"{self._endpoint.base}/api/v1/metrics", "GET", self.config.timeout_s, [], b"")
            try:
                document = json.loads(body)
                found[:] = [dict(group["labels"]) for group in document["data"]]
            except (ValueError, KeyError, TypeError) as error:
                raise _Permanent(f"unexpected answer from /api/v1/metrics ({type(error).__name__})") from None

        self._retrying("list groups", fetch)
        return [{str(name): str(value) for name, value in labels.items()} for labels in found]

    # -- delivery --------------------------------------------------------------------------
    def _handler(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        """prometheus-client's handler interface: returns the function that does the request."""

        def handle() -> None:
            self._send(url, method, timeout or self.config.timeout_s, headers, data)

        return handle

    def _send(self, url: str, method: str, timeout: float, headers: list[tuple[str, str]], data: bytes) -> bytes:
        if self._endpoint.query:
            url = f"{url}?{self._endpoint.query}"
        header_map = dict(headers)
        if self._endpoint.authorization:
            header_map["Authorization"] = self._endpoint.authorization
        try:
            response = requests.request(method, url, data=data or None, headers=header_map, timeout=(timeout, timeout))
        except requests.RequestException as error:
            # The exception text can quote the URL: keep only its type.
            raise PushgatewayError(
                f"{type(error).__name__} (no connection or no answer within {timeout:g} s)"
            ) from None
        if response.status_code >= 400:
            problem = f"HTTP {response.status_code}: {response.text[:200].strip()!r}"
            if response.status_code < 500 and response.status_code not in (408, 429):
                raise _Permanent(problem)
            raise PushgatewayError(problem)
        return response.content

    def _retrying(self, what: str, operation: Callable[[], None]) -> None:
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                operation()
                return
            except _Permanent as error:
                raise PushgatewayError(f"{what} refused by {self.config.target}: {error}") from None
            except PushgatewayError as error:
                if attempt == attempts:
                    raise PushgatewayError(
                        f"{what} to {self.config.target} failed after {attempts} attempt(s): {error}"
                    ) from None
                pause = self.config.backoff(attempt)
                logger.info(
                    "pushgateway %s attempt %d/%d failed (%s); again in %.1f s", what, attempt, attempts, error, pause
                )
                self._sleep(pause)


def _split_job(grouping_key: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    if "job" not in grouping_key:
        raise ValueError("a Pushgateway grouping key needs a `job` label")
    rest = {name: value for name, value in grouping_key.items() if name != "job"}
    return grouping_key["job"], rest
