"""The engine: listing, parsing, validating and loading log files into the lake, as plain Python
(nothing here knows about Dagster)."""
