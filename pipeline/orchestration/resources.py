"""The resource giving assets their stores and warehouse, built from `PIPELINE_*` settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from pipeline.engine.objects import LocalObjectStore, ObjectStore
from pipeline.engine.warehouse import Warehouse
from pipeline.settings import Settings, SettingsError, resolve_local


def _store(url: str, variable: str) -> ObjectStore:
    if url.startswith("s3://"):
        raise SettingsError(
            f"{variable}={url}: object-store URLs are not supported by this build yet; use a local directory"
        )
    if "://" in url:
        raise SettingsError(f"{variable}={url}: expected a local directory or an s3:// URL")
    return LocalObjectStore(resolve_local(url))


class PipelineResource(ConfigurableResource):
    """Locations of the landing zone, the output store and the DuckDB warehouse."""

    landing_url: str
    output_url: str
    warehouse_path: str
    # How long a run waits for another process to release the DuckDB file before failing.
    warehouse_lock_timeout_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineResource:
        """Build the resource from environment-derived settings."""
        return cls(landing_url=settings.landing_url, output_url=settings.output_url, warehouse_path=settings.warehouse)

    def landing(self) -> ObjectStore:
        """Where raw log files land."""
        return _store(self.landing_url, "PIPELINE_LANDING_URL")

    def output(self) -> ObjectStore:
        """Where manifests and other objects are written."""
        return _store(self.output_url, "PIPELINE_OUTPUT_URL")

    def warehouse(self) -> Warehouse:
        """The DuckDB warehouse."""
        if "://" in self.warehouse_path:
            raise SettingsError(f"PIPELINE_WAREHOUSE={self.warehouse_path}: expected a local file path")
        return Warehouse(resolve_local(self.warehouse_path), lock_timeout_s=self.warehouse_lock_timeout_s)

    def describe(self) -> str:
        """One line naming the mode and locations, logged at the start of every run."""
        return f"mode=local landing={self.landing().url} output={self.output().url} warehouse={self.warehouse().path}"
