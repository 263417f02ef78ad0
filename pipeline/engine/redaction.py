"""Keeping secret URL parts out of logs and messages: webhook paths, Pushgateway tokens.

urllib3 logs every request line (`"POST /services/T…/token HTTP/1.1" 200`) at DEBUG, which
would put the secret in any log that captures DEBUG; `SecretsFilter` blanks registered secrets
in those records, and `redact_url` is the only form of a secret-bearing URL ever logged.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """Scheme, host and port of a URL, safe to log: `https://push.example.com:9091/…`."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


class SecretsFilter(logging.Filter):
    """Replaces each secret added to `secrets` by `replacement` in the records it filters."""

    def __init__(self, replacement: str) -> None:
        super().__init__()
        self.replacement = replacement
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                # Longest first: a secret containing another is blanked whole.
                for secret in sorted(self.secrets, key=len, reverse=True):
                    message = message.replace(secret, self.replacement)
                record.msg, record.args = message, ()
        return True


def urllib3_secrets_filter(replacement: str) -> SecretsFilter:
    """A `SecretsFilter` installed on urllib3's request logger."""
    secrets_filter = SecretsFilter(replacement)
    logging.getLogger("urllib3.connectionpool").addFilter(secrets_filter)
    return secrets_filter
