"""`pipeline sources check` on objects in S3 (moto's server): an `s3://` URL and a `landing:` key
of an S3 landing zone are read with the pipeline's client settings, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.cli.main import main

LINE = b'198.51.100.7 - - [20/Jan/2024:09:05:00 -0700] "POST /api HTTP/2.0" 201 17 "-" "curl/8"\n'


def keys(client: Any, bucket: str) -> list[str]:
    return [entry["Key"] for entry in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_check_reads_s3_urls_and_s3_landing_keys(admin_s3, bucket, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    key = "landing/access/dt=2024-01-20/hour=09/web.log"
    admin_s3.put_object(Bucket=bucket, Key=key, Body=LINE * 3 + b"not a log line\n")
    monkeypatch.delenv("PIPELINE_SOURCES_FILE", raising=False)
    monkeypatch.setenv("PIPELINE_LANDING_URL", f"s3://{bucket}/landing")
    status = main(
        ["sources", "check", "access", f"s3://{bucket}/{key}", "landing:access/dt=2024-01-20/hour=09/web.log"]
    )
    out = capsys.readouterr().out
    assert status == 1  # 2 of 8 rows quarantined
    assert f"s3://{bucket}/{key}: day 2024-01-20 (from its dt= folder), 4 lines" in out
    assert "landing:access/dt=2024-01-20/hour=09/web.log: day 2024-01-20 (from its dt= folder), 4 lines" in out
    assert "Lines read 8 = 6 loaded + 2 quarantined + 0 continuation + 0 ignored" in out
    assert keys(admin_s3, bucket) == [key]


def test_a_missing_object_is_a_usage_error(admin_s3, bucket, capsys) -> None:
    assert main(["sources", "check", "access", f"s3://{bucket}/nope.log"]) == 2
    assert capsys.readouterr().err.startswith("error: S3 GetObject")
