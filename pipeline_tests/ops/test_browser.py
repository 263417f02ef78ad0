"""The Dagster UI, driven by a real browser (Playwright + the system Chromium): an operator
opens `access/events`, launches a backfill of two days from the Materialize dialog, and reads
the quarantine check and a row count on the asset's page."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import CHROMIUM, unavailable, wait_for_backfill

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
            # The UI says `access/dlq` comes along (one step makes both), then opens the launcher.
            additional = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
            expect(additional).to_contain_text("access / dlq")
            additional.get_by_role("button", name="Confirm").click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
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
            expect(page.get_by_text("All 2 day(s) within the 1.00% error budget")).to_be_visible()
            evaluation = page.get_by_text("Evaluation result").locator("xpath=..")
            expect(evaluation).to_contain_text("Passed")
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
    assert pipeline_env.query("SELECT count(*) FROM access.events WHERE partition_date = ?", [DAYS[-1]]) == [
        (last.records - last.bad_records,)
    ]
