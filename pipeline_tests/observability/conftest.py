"""Fixtures for the observability tests: real Pushgateway processes and the `promtool` binary.

Debian's `prometheus-pushgateway` is started by the tests themselves, on a free loopback port
with a persistence file in a temporary folder (never the packaged service's port or its
/var/lib file). A missing binary skips these tests with the reason on a developer's machine
and fails them in CI (`CI=true`), where `.ci/run` installs the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from pipeline_tests.ops.conftest import free_port, unavailable, wait_for

PUSHGATEWAY = os.environ.get("PIPELINE_TEST_PUSHGATEWAY", "prometheus-pushgateway")
PROMTOOL = os.environ.get("PIPELINE_TEST_PROMTOOL", "promtool")
# A bcrypt hash of AUTH_PASSWORD (the gateway's web config takes hashes only); test data, not a secret.
AUTH_USER = "pusher"
AUTH_PASSWORD = "s3cret-pw"
AUTH_HASH = "$2b$12$QiObxPgQpGEiuvzHxrZqA.eWiL7W8LLQdXFFTglqK9njSTtW53d4C"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def binary(name: str, package: str) -> str:
    """The path of a Debian binary; skipped (or, in CI, failed) with how to install it."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"`{name}` not found (apt-get install -y {package})")
    return str(found)


@dataclass
class Gateway:
    """A running Pushgateway: its URL and what it serves."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def samples(self, prefix: str = "pipeline_") -> Samples:
        """Every sample of `/metrics` whose name starts with `prefix`: (name, labels) -> value."""
        response = requests.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        found: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name.startswith(prefix):
                    found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return found

    def groups(self) -> list[dict[str, str]]:
        """The grouping labels of every group, from the gateway's own API."""
        response = requests.get(f"{self.url}/api/v1/metrics", timeout=10)
        response.raise_for_status()
        return [group["labels"] for group in response.json()["data"]]

    def wipe(self) -> None:
        """Delete every group (admin API), so each test starts from an empty gateway."""
        requests.put(f"{self.url}/api/v1/admin/wipe", timeout=10).raise_for_status()

    def push_text(self, path: str, text: str) -> requests.Response:
        """PUT raw exposition text to `/metrics/<path>` (another program's push)."""
        return requests.put(f"{self.url}/metrics/{path}", data=text.encode(), timeout=10)


def _start_gateway(folder: Path, *extra: str) -> Gateway:
    executable = binary(PUSHGATEWAY, "prometheus-pushgateway")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "pushgateway.log"
    process = subprocess.Popen(
        [
            executable,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={folder / 'pushgateway.data'}",
            "--web.enable-admin-api",
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    gateway = Gateway(url=f"http://127.0.0.1:{port}", process=process, log=log)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus-pushgateway exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            # 401 is ready too: the authenticated gateway answers, it only wants credentials.
            return requests.get(f"{gateway.url}/-/ready", timeout=2).status_code in (200, 401)
        except requests.RequestException:
            return False

    wait_for(ready, 30, "prometheus-pushgateway to be ready", interval_s=0.1)
    return gateway


def _stop(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            gateway.process.kill()
        gateway.process.wait(timeout=10)


@pytest.fixture(scope="session")
def pushgateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One Pushgateway for the session (starting one takes ~0.1 s, but a session is plenty)."""
    gateway = _start_gateway(tmp_path_factory.mktemp("pushgateway"))
    try:
        yield gateway
    finally:
        _stop(gateway)


@pytest.fixture
def pushgateway(pushgateway_process: Gateway) -> Gateway:
    """The session's Pushgateway, emptied for this test."""
    pushgateway_process.wipe()
    return pushgateway_process


@pytest.fixture(scope="session")
def auth_pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A Pushgateway that demands HTTP basic auth (`AUTH_USER` / `AUTH_PASSWORD`)."""
    folder = tmp_path_factory.mktemp("auth-pushgateway")
    web_config = folder / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  {AUTH_USER}: '{AUTH_HASH}'\n")
    gateway = _start_gateway(folder, f"--web.config.file={web_config}")
    try:
        yield gateway
    finally:
        _stop(gateway)


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Debian's `promtool` (package `prometheus`)."""
    return binary(PROMTOOL, "prometheus")
