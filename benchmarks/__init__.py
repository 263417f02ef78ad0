"""Benchmarks: throughput, memory and backfill figures of the ingest path against baselines."""
