"""Notifications to a Slack-compatible incoming webhook (`PIPELINE_NOTIFY_WEBHOOK_URL`).

A plain HTTP POST of `{"text": ...}` with an explicit timeout; nothing is sent when the
variable is unset. The URL is a secret (the token is in its path): it is never logged or put
in an error message, only its scheme and host. The texts are built here from run facts and
the `loads` rows, so that every message says what happened, not just that something did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from pipeline.engine.lake.loads import LoadRecord
from pipeline.engine.redaction import redact_url, urllib3_secrets_filter
from pipeline.orchestration.operations import OperationsSettings

logger = logging.getLogger(__name__)

# Lines of per-day detail in one message; the rest is summarised in a count.
MAX_DETAIL_LINES = 7
MAX_ERROR_CHARS = 600


class WebhookError(RuntimeError):
    """The webhook did not accept a message (the URL is not part of the message)."""


_REDACT_PATHS = urllib3_secrets_filter("/…")


@dataclass(frozen=True)
class Notifier:
    """Posts messages to the configured webhook (or does nothing when there is none)."""

    url: str | None
    timeout_s: float = 10.0
    attempts: int = 2

    @classmethod
    def from_settings(cls, settings: OperationsSettings) -> Notifier:
        """The notifier of this deployment."""
        return cls(url=settings.webhook_url, timeout_s=settings.notify_timeout_s)

    @property
    def enabled(self) -> bool:
        """Whether a webhook is configured."""
        return bool(self.url)

    def send(self, text: str) -> bool:
        """Post `text`; returns False when notifications are disabled. Raises `WebhookError`
        after `attempts` tries when the receiver is unreachable or refuses the message, so the
        caller's tick fails visibly instead of losing the message silently."""
        if not self.url:
            logger.info("notification not sent (PIPELINE_NOTIFY_WEBHOOK_URL is unset): %s", text.splitlines()[0])
            return False
        target = redact_url(self.url)
        parts = urlsplit(self.url)
        secret = parts.path + (f"?{parts.query}" if parts.query else "")
        if secret.strip("/"):
            _REDACT_PATHS.secrets.add(secret)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = requests.post(self.url, json={"text": text}, timeout=self.timeout_s)
            except requests.RequestException as error:
                # The exception text can contain the URL: keep only its type.
                problem = f"{type(error).__name__} (no response within {self.timeout_s:g} s or no connection)"
            else:
                if response.status_code < 300:
                    logger.info("notification sent to %s: %s", target, text.splitlines()[0])
                    return True
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the receiver refuses this message; trying again will not help
            if attempt < self.attempts:
                time.sleep(min(2.0 * attempt, 5.0))
        raise WebhookError(f"webhook {target} did not accept the notification: {problem}")


# -- message texts -------------------------------------------------------------------------
def partitions_text(days: Sequence[str]) -> str:
    """`2024-01-15`, or `2024-01-15..2024-01-17 (3 days)`."""
    if not days:
        return "none"
    if len(days) == 1:
        return days[0]
    return f"{days[0]}..{days[-1]} ({len(days)} days)"


def failure_text(
    *,
    job_name: str,
    run_id: str,
    assets: Sequence[str],
    days: Sequence[str],
    errors: Sequence[str],
    settings: OperationsSettings,
    backfill_id: str | None = None,
) -> str:
    """The message for a failed run: what, which partitions, the error, and where to look."""
    lines = [f":x: Run failed: {job_name}" + (f" ({', '.join(assets)})" if assets else "")]
    lines.append(f"Partitions: {partitions_text(days)}")
    error = " | ".join(errors) if errors else "no error message was recorded"
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    lines.append(f"Error: {error}")
    lines.append(f"Run: {settings.run_url(run_id)}")
    if backfill_id:
        lines.append(f"Backfill: {settings.backfill_url(backfill_id)}")
    return "\n".join(lines)


def success_text(
    *,
    job_name: str,
    run_id: str,
    days: Sequence[str],
    attempts: Mapping[str, Sequence[LoadRecord | None]],
    settings: OperationsSettings,
) -> str:
    """The message for a successful run, read from the `loads` rows of its partitions (the
    latest attempt of each day): per source the totals, then one line per day (its sentence)."""
    lines = [f":white_check_mark: Run succeeded: {job_name} for {partitions_text(days)}"]
    details: list[str] = []
    for source, records in attempts.items():
        present = [record for record in records if record is not None]
        rows_loaded = sum(record.rows_loaded for record in present)
        rows_quarantined = sum(record.rows_quarantined for record in present)
        rows_read = rows_loaded + rows_quarantined
        rate = rows_quarantined / rows_read if rows_read else 0.0
        incomplete = sum(1 for record in present if record.missing_hours)
        empty = sum(1 for record in present if record.status == "empty")
        summary = (
            f"{source}: {rows_loaded:,} rows loaded, {rows_quarantined:,} quarantined ({rate:.2%}); "
            f"{incomplete} day(s) with missing hours, {empty} empty"
        )
        if len(present) < len(records):
            summary += f"; {len(records) - len(present)} day(s) never loaded"
        lines.append(summary)
        details.extend(record.summary or record.sentence() for record in present)
    for line in details[:MAX_DETAIL_LINES]:
        lines.append(f"• {line}")
    if len(details) > MAX_DETAIL_LINES:
        lines.append(f"• … and {len(details) - MAX_DETAIL_LINES} more day(s): `pipeline summary` lists them all")
    lines.append(f"Run: {settings.run_url(run_id)}")
    return "\n".join(lines)
