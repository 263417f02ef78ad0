"""The Pushgateway sweeper: delete the groups of sources this deployment no longer declares.

A Pushgateway has no TTL (seed 004): a group pushed once is served to Prometheus forever, so
a source removed from `sources.yaml` would keep its last figures, and its "no success in
26 h" alert, for good. The sweeper lists the gateway's groups and deletes exactly those that
carry this deployment's `pipeline` label and a `source` label that is not configured; a group
of another program (no or another `pipeline` label) or without a `source` is never touched.

It then pushes the deployment's inventory into a group of its own (job `pushgateway_sweep`,
no source): `pipeline_source_configured{source=…} 1` for each declared source, which lets an
alert notice a declared source that has never pushed a success, even while Dagster is down.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from pipeline.engine.operational_metrics import SWEEPER_JOB, SWEEPER_METRICS
from pipeline.engine.pushgateway import PushgatewayClient, PushgatewayConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: the groups deleted and kept (grouping labels), the sources declared."""

    deleted: list[dict[str, str]] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        """One line for the run's log."""
        if not self.deleted:
            return f"no stale group: {len(self.kept)} group(s) of {', '.join(self.sources)} kept"
        gone = ", ".join(f"{group['job']}/{group['source']}" for group in self.deleted)
        return f"deleted {len(self.deleted)} stale group(s) ({gone}); kept {len(self.kept)}"


def stale_groups(
    groups: Iterable[dict[str, str]], pipeline: str, sources: Iterable[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Split the gateway's groups into (stale, kept) for this pipeline; others are in neither."""
    declared = set(sources)
    stale: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    for labels in groups:
        if labels.get("pipeline") != pipeline or "source" not in labels or "job" not in labels:
            continue  # not ours, or our inventory group
        (kept if labels["source"] in declared else stale).append(labels)
    # In a stable order, whatever order the gateway lists them in: logs and sentences repeat.
    order = lambda labels: sorted(labels.items())  # noqa: E731
    return sorted(stale, key=order), sorted(kept, key=order)


def inventory_registry(sources: Iterable[str], now: dt.datetime) -> CollectorRegistry:
    """The sweeper group's metrics: one `pipeline_source_configured` per source, and the time."""
    registry = CollectorRegistry(auto_describe=True)
    configured = Gauge(
        "pipeline_source_configured", SWEEPER_METRICS["pipeline_source_configured"], ["source"], registry=registry
    )
    for source in sorted(set(sources)):
        configured.labels(source=source).set(1)
    Gauge(
        "pipeline_sweep_timestamp_seconds", SWEEPER_METRICS["pipeline_sweep_timestamp_seconds"], registry=registry
    ).set(now.timestamp())
    return registry


def sweep_pushgateway(
    config: PushgatewayConfig,
    sources: Iterable[str],
    *,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    client: PushgatewayClient | None = None,
) -> SweepResult:
    """Delete this pipeline's groups whose source is not in `sources`, then push the inventory.

    Raises `PushgatewayError` when the gateway cannot be listed or refuses a deletion (a sweep
    is maintenance: its failure should show, and the next one does the work), and `ValueError`
    for an empty `sources` (which would otherwise delete every group of the pipeline).
    """
    declared = sorted(set(sources))
    if not declared:
        raise ValueError("refusing to sweep with no configured source: every group would be deleted")
    if not config.url:
        raise ValueError("sweeping needs PIPELINE_PUSHGATEWAY_URL")
    client = client or PushgatewayClient(config)
    stale, kept = stale_groups(client.groups(), config.pipeline, declared)
    for labels in stale:
        logger.info("pushgateway sweep: deleting group %s (source %r is not configured)", labels, labels["source"])
        client.delete(labels)
    client.put({"job": SWEEPER_JOB, "pipeline": config.pipeline}, inventory_registry(declared, now()))
    return SweepResult(deleted=stale, kept=kept, sources=declared)
