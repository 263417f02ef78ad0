"""Dagster wiring: partitions, resources, the asset factory and its checks. Kept thin:
the work itself is done by `pipeline.engine`, which knows nothing of Dagster."""
