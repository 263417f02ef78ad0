"""The Dagster UI, driven by a real browser (Playwright + the system Chromium): an operator
opens `access/events`, launches a backfill of two days from the Materialize dialog, and reads
the quarantine check and a row count on the asset's page; the lake holds what the UI showed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus, RunsFilter

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import (
    CHROMIUM,
    check_executions,
    partition_metadata,
    unavailable,
    wait_for_backfill,
)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAYS = [day("2024-03-04"), day("2024-03-05")]


def dump(page: Any, tmp_path: Path, name: str) -> None:
    """Screenshot and HTML of the page, for a failing step."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    (tmp_path / f"{name}.html").write_text(page.content())
    print(f"debug: {tmp_path / name}.png / .html")


def retry(action: Callable[[], None], check: Callable[[], None], attempts: int = 10) -> None:
    """Do `action` until `check` (a Playwright `expect`) passes."""
    for attempt in range(attempts):
        action()
        try:
            check()
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


@pytest.mark.e2e
def test_operator_backfills_two_days_from_the_ui_and_reads_check_and_row_count(
    pipeline_env: PipelineEnv, deployment_factory: Any, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (a dev dependency)")
    generated = generate_landing_zone(
        pipeline_env.landing, DAYS, sources=["access"], lines_per_hour=40, bad_line_rate=0.005, missing_hours={}
    )
    last = next(p for p in generated if p.day == DAYS[-1])
    deployment = deployment_factory()
    # The UI's first-visit "Join the Dagster community" prompt would come up over the dialogs:
    # mark it seen, as its Skip button does.
    deployment.graphql("mutation SetNuxSeen { setNuxSeen }")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        try:
            page.goto(f"{deployment.url}/assets/access/events")
            page.get_by_role("button", name="Materialize…").click()
            # The ingest step can be subset (daily_metrics alone is recomputed from the lake), so
            # the launcher opens at once for `access/events`; the step still replaces the day
            # whole and materializes `access/dlq` with it (checked below).
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize access / events")
            expect(dialog).to_be_visible()
            # The dialog shows the last 90 days; our days are older.
            # (The dialog loads its partitions after it opens and may re-render, dropping an
            # early click or input: act until the dialog shows the expected state.)
            expect(dialog.get_by_text(re.compile(r"Showing 90 of \d+ partitions"))).to_be_visible()
            show_all = dialog.get_by_text("Show all partitions")
            retry(
                lambda: show_all.click() if show_all.is_visible() else None,
                lambda: expect(dialog.get_by_text(re.compile(r"Showing 90 of \d+ partitions"))).to_be_hidden(
                    timeout=3000
                ),
            )
            selection = dialog.get_by_role("textbox").first

            def select_range() -> None:
                refused = page.get_by_role("dialog").filter(has_text="Could not find partitions")
                if refused.is_visible():
                    refused.get_by_role("button", name="OK").click()
                selection.fill(f"[{DAYS[0].isoformat()}...{DAYS[-1].isoformat()}]")
                selection.press("Enter")

            retry(
                select_range, lambda: expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible(timeout=3000)
            )
            dialog.get_by_role("button", name="Launch backfill").click()
            toast = page.get_by_text(re.compile(r"Created backfill \w+"))
            backfill_id = re.search(r"Created backfill (\w+)", toast.inner_text()).group(1)  # type: ignore[union-attr]
            print(f"backfill {backfill_id} launched from the UI")

            status = wait_for_backfill(deployment, backfill_id, 300)
            assert status["status"] == "COMPLETED_SUCCESS", status
            assert sorted(status["partitionNames"]) == [d.isoformat() for d in DAYS]

            # The check, as an operator reads it before trusting the days.
            page.goto(f"{deployment.url}/assets/access/events?view=checks")
            page.get_by_text("quarantine_rate", exact=True).first.click()
            # A result per day: the newest day's says how many of its rows were quarantined.
            rate = round(last.bad_records / last.records, 6)
            expect(
                page.get_by_text(
                    f"{DAYS[-1].isoformat()}: {rate:.2%} of {last.records:,} rows quarantined, "
                    "within the 1.00% error budget"
                ).first
            ).to_be_visible()
            evaluation = page.get_by_text("Evaluation result").locator("xpath=..")
            expect(evaluation).to_contain_text("Passed")
            partition = page.get_by_text("Partition", exact=True).locator("xpath=..")
            expect(partition).to_contain_text(DAYS[-1].isoformat())
            page.screenshot(path=str(tmp_path / "check.png"), full_page=True)

            # The row count of the newest partition, on the asset's overview.
            page.goto(f"{deployment.url}/assets/access/events?view=overview")
            row_count = page.get_by_text("Row count", exact=True).locator("xpath=..")
            expect(row_count).to_contain_text(f"{last.records - last.bad_records:,}")
            expect(page.get_by_text(DAYS[-1].isoformat(), exact=True).first).to_be_visible()
            shot = tmp_path / "asset-overview.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshots: {shot} and {tmp_path / 'check.png'}")
        except Exception:
            dump(page, tmp_path, "failure")
            raise
        finally:
            browser.close()
    # What the UI showed is what the lake holds: each day loaded once, by the backfill's one run,
    # with exact rows; its dlq came along (the day is replaced whole) and each day has its check.
    expected = {p.day.isoformat(): p for p in generated}
    assert pipeline_env.query("SELECT count(*) FROM access.events WHERE partition_date = ?", [DAYS[-1]]) == [
        (last.records - last.bad_records,)
    ]
    with deployment.instance() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS]
        run_id = runs[0].run_id
        verdicts = {c["partition"]: c["passed"] for c in check_executions(instance, "access/events", "quarantine_rate")}
        assert verdicts == {key: True for key in expected}
        for key, partition in expected.items():
            attempts = pipeline_env.attempts("access", key)
            assert [(a["attempt"], a["status"], a["run_id"]) for a in attempts] == [(1, "loaded", run_id)]
            assert (attempts[0]["rows_loaded"], attempts[0]["rows_quarantined"]) == (
                partition.records - partition.bad_records,
                partition.bad_records,
            )
            assert partition_metadata(instance, "access/dlq", key)["dagster/row_count"] == partition.bad_records
            assert pipeline_env.manifest("access", key)["run_id"] == run_id
