"""A Dagster code location that turns hourly landed log files into validated daily tables."""
