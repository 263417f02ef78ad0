"""The Dagster UI, driven by a real browser (Playwright + the system Chromium): an operator
opens `access/events`, launches a backfill of two days from the Materialize dialog, and reads
the quarantine check and a row count on the asset's page; the lake holds what the UI showed."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus, RunsFilter

from pipeline.cli.generate import (
    DEMO_MISSING_HOUR,
    DEMO_OVER_BUDGET_RATE,
    default_demo_days,
    generate_landing_zone,
)
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day
from pipeline_tests.ops.conftest import (
    CHROMIUM,
    check_executions,
    launch_backfill,
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


def playwright_api() -> tuple[Any, Any]:
    """Playwright's `expect` and `sync_playwright`; a missing Chromium or Playwright fails loudly
    in CI (see `unavailable`)."""
    if not CHROMIUM.exists():
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (a dev dependency)")
    return expect, sync_playwright


@contextmanager
def browser_page(sync_playwright: Any, expect: Any, tmp_path: Path, *, height: int) -> Iterator[Any]:
    """A page of headless Chromium, 1600 px wide, 60 s timeouts; on a failure its screenshot and
    HTML are kept in `tmp_path` (`dump`); the browser is closed whatever happened."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": height})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        try:
            yield page
        except Exception:
            dump(page, tmp_path, "failure")
            raise
        finally:
            browser.close()


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
    expect, sync_playwright = playwright_api()
    generated = generate_landing_zone(
        pipeline_env.landing, DAYS, sources=["access"], lines_per_hour=40, bad_line_rate=0.005, missing_hours={}
    )
    last = next(p for p in generated if p.day == DAYS[-1])
    deployment = deployment_factory()
    # The UI's first-visit "Join the Dagster community" prompt would come up over the dialogs:
    # mark it seen, as its Skip button does.
    deployment.graphql("mutation SetNuxSeen { setNuxSeen }")

    with browser_page(sync_playwright, expect, tmp_path, height=1100) as page:
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
            lambda: expect(dialog.get_by_text(re.compile(r"Showing 90 of \d+ partitions"))).to_be_hidden(timeout=3000),
        )
        selection = dialog.get_by_role("textbox").first

        def select_range() -> None:
            refused = page.get_by_role("dialog").filter(has_text="Could not find partitions")
            if refused.is_visible():
                refused.get_by_role("button", name="OK").click()
            selection.fill(f"[{DAYS[0].isoformat()}...{DAYS[-1].isoformat()}]")
            selection.press("Enter")

        retry(select_range, lambda: expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible(timeout=3000))
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


# -- The 3 AM path -----------------------------------------------------------------------------
# Screenshots of the operator's path are kept for people, not only for failures: a named folder
# (git-ignored) that CI leaves in the clone. PIPELINE_TEST_ARTIFACTS moves it.
ARTIFACTS = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS", str(PROJECT_ROOT / "artifacts" / "browser")))


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot into the artifacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    (ARTIFACTS / f"{name}.html").write_text(page.content())
    print(f"screenshot: {path}")
    return path


@pytest.mark.e2e
def test_at_3am_a_failing_yesterday_is_red_with_its_reasons_and_stays_red_after_another_day_is_rerun(
    pipeline_env: PipelineEnv, deployment_factory: Any, tmp_path: Path
) -> None:
    """The on-call path, page by page, with a screenshot of each into ARTIFACTS: the night's
    backfill failed because yesterday is over its error budget and misses an hour."""
    expect, sync_playwright = playwright_api()
    # The demo's shape over three days: the last ("yesterday") over budget with an hour missing.
    days = default_demo_days(dt.date(2024, 3, 8))[-3:]
    earlier, yesterday = days[:-1], days[-1]
    generated = generate_landing_zone(
        pipeline_env.landing, earlier, sources=["access"], lines_per_hour=40, bad_line_rate=0.005, missing_hours={}
    )
    generated += generate_landing_zone(
        pipeline_env.landing,
        [yesterday],
        sources=["access"],
        lines_per_hour=40,
        bad_line_rate=DEMO_OVER_BUDGET_RATE,
        missing_hours={("access", yesterday): {DEMO_MISSING_HOUR}},
    )
    bad = next(p for p in generated if p.day == yesterday)
    rate = bad.bad_records / bad.records
    assert rate > 0.01, "the generated day must be over the 1.00% budget"
    deployment = deployment_factory()
    deployment.graphql("mutation SetNuxSeen { setNuxSeen }")
    every_asset = ["access/events", "access/dlq", "access/daily_metrics"]
    nightly = launch_backfill(deployment, every_asset, [d.isoformat() for d in days], title="nightly")
    assert wait_for_backfill(deployment, nightly, 300)["status"] == "COMPLETED_FAILED"
    # What the DLQ holds for yesterday, per rule: what the pages must show.
    per_rule = pipeline_env.query(
        "SELECT reason.field || ': ' || reason.check, count(*) FROM "
        "(SELECT unnest(reasons) AS reason FROM access.dlq WHERE partition_date = ?) GROUP BY 1 ORDER BY 2 DESC, 1",
        [yesterday],
    )
    top_rule, top_count = per_rule[0]
    url = deployment.url

    def partition_page(asset: str, partition: dt.date) -> str:
        return f"{url}/assets/access/{asset}?view=partitions&partition={partition.isoformat()}"

    def metadata_row(page: Any, name: str) -> Any:
        """The row of the metadata table whose first cell is `name`."""
        return page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True)).first

    with browser_page(sync_playwright, expect, tmp_path, height=1400) as page:

        def read_yesterdays_verdict(shot: str) -> None:
            """`access/events`, yesterday: the verdict an operator reads first, with the figures."""
            page.goto(partition_page("events", yesterday))
            verdict = metadata_row(page, "verdict")
            expect(verdict).to_contain_text(f"✗ {rate:.2%} quarantined > 1.00% budget; top rule")
            expect(verdict).to_contain_text(f"{top_rule} ({top_count})")
            expect(verdict).to_contain_text(f"daily_metrics blocked; missing hour {DEMO_MISSING_HOUR:02d}")
            within = metadata_row(page, "within_error_budget")
            expect(within).to_contain_text("false")
            missing = metadata_row(page, "missing_hours")
            expect(missing).to_contain_text(f"{DEMO_MISSING_HOUR:02d}")
            shoot(page, shot)

        def yesterdays_metrics_are_red(shot: str) -> None:
            """`access/daily_metrics`, yesterday: a failed partition (red) that says so."""
            page.goto(partition_page("daily_metrics", yesterday))
            expect(page.get_by_text("failed, and did not materialize this asset")).to_be_visible()
            expect(page.get_by_text(re.compile(r"^Failed \(1\)$"))).to_be_visible()
            shoot(page, shot)

        def check_history_per_day(shot: str, expected: dict[str, str]) -> None:
            """The `quarantine_rate` check's execution history: one row per day, yesterday Failed."""
            page.goto(f"{url}/assets/access/events?view=checks")
            page.get_by_text("quarantine_rate", exact=True).first.click()
            # In the list of checks: Failed while a day's newest result fails, whichever day ran last.
            expect(page.locator('span:has(> [title="quarantine_rate"])')).to_contain_text("Failed")
            page.get_by_text("Execution history", exact=True).click()
            for partition, result in expected.items():
                row = page.get_by_role("row").filter(has_text=partition).first
                expect(row).to_contain_text(result)
            shoot(page, shot)
            # Its Partitions tab: the days' status bar, yesterday red.
            page.locator("button[role=tab]", has_text="Partitions").click()
            failed = sum(result == "Failed" for result in expected.values())
            expect(page.get_by_text(re.compile(rf"^Failed \({failed}\)$"))).to_be_visible()
            expect(page.get_by_text(re.compile(rf"^Passed \({len(expected) - failed}\)$"))).to_be_visible()
            shoot(page, f"{shot}-partitions")

        read_yesterdays_verdict("1-events-yesterday-verdict")
        yesterdays_metrics_are_red("2-daily-metrics-yesterday-failed")
        # Yesterday's quarantined lines, per rule and sampled, without SQL.
        page.goto(partition_page("dlq", yesterday))
        failed_checks = metadata_row(page, "failed_checks")
        for rule, count in per_rule:
            expect(failed_checks.get_by_role("row").filter(has_text=rule).first).to_contain_text(str(count))
        sample = metadata_row(page, "sample_quarantined")
        for header in ("file", "line", "reason", "raw_line"):
            expect(sample.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
        expect(sample).to_contain_text(f"access/dt={yesterday.isoformat()}/hour=")
        shoot(page, "3-dlq-yesterday-reasons")
        before = {d.isoformat(): "Passed" for d in earlier} | {yesterday.isoformat(): "Failed"}
        check_history_per_day("4-quarantine-rate-per-day", before)

        # Later, someone re-runs another day: yesterday must stay red.
        rerun = launch_backfill(deployment, every_asset, [days[0].isoformat()], title="rerun of another day")
        assert wait_for_backfill(deployment, rerun, 300)["status"] == "COMPLETED_SUCCESS"
        read_yesterdays_verdict("5-events-yesterday-verdict-after-rerun")
        yesterdays_metrics_are_red("6-daily-metrics-yesterday-after-rerun")
        check_history_per_day("7-quarantine-rate-per-day-after-rerun", before)
        page.goto(f"{url}/assets")
        expect(page.get_by_text(re.compile(r"^[\d,]+ partitions$")).first).to_be_visible()
        shoot(page, "8-catalog-after-rerun")
    # The pages told the truth: the verdicts per day are what Dagster recorded.
    with deployment.instance() as instance:
        latest: dict[str, bool] = {}
        for execution in check_executions(instance, "access/events", "quarantine_rate"):
            latest.setdefault(execution["partition"], execution["passed"])
    assert latest == {d.isoformat(): d != yesterday for d in days}
