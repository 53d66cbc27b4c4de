"""The dashboard in a real Chromium (issue 15): log in, test a task and watch it complete live,
a failure's error and attempts, a token completed by hand, cancel, bulk replay, queue pause."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.dashboard.conftest import Dash, shot
from tests.e2e.conftest import trigger, wait_final, wait_for


def test_login_lands_on_runs(page: Page, dash: Dash) -> None:
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.locator("header")).to_contain_text(dash.project.ref)
    cookie = next(c for c in page.context.cookies() if c["name"] == "trigger_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"


def test_test_page_runs_task_and_detail_goes_live_to_completed(page: Page, dash: Dash) -> None:
    page.goto(dash.url("test?task=greet"))
    payload = page.get_by_label(re.compile("Payload"))
    # pre-filled from the schema task's JSON schema (its defaults)
    assert '"name": "world"' in payload.input_value()
    payload.fill('{"name": "Ada", "times": 2}')
    page.get_by_label("Tags (comma separated)").fill("from-test-page")
    page.get_by_role("button", name="Run test").click()
    page.wait_for_url(re.compile(r"/runs/run_"))
    loaded_at = page.evaluate("performance.timeOrigin")
    # the run starts QUEUED or EXECUTING and turns COMPLETED without a reload (SSE)
    expect(page.locator(".run-status")).to_contain_text("COMPLETED", timeout=30_000)
    assert page.evaluate("performance.timeOrigin") == loaded_at, "the page was reloaded"
    expect(page.locator("#h-output + pre")).to_contain_text('"hello": "Ada"')
    expect(page.locator(".props").first).to_contain_text("from-test-page")
    # the trace waterfall: the run's span and its attempt's, once the worker has exported them
    def attempt_span_shown() -> bool:
        page.reload()
        return page.locator(".span-name", has_text="Attempt 1").count() == 1

    wait_for(attempt_span_shown, timeout=60, what="the attempt span in the waterfall")
    span = page.locator("li.span").filter(has_text="Attempt 1")
    span.locator("summary").click()
    expect(span.locator("pre.json")).to_contain_text("ctx.attempt.number")
    shot(page, dash, "run-detail", publish=True)


def test_failed_run_shows_error_stack_and_each_attempt(page: Page, dash: Dash) -> None:
    with dash.project.client() as client:
        run_id = trigger(client, "explode", {})
        assert wait_final(client, run_id)["status"] == "FAILED"
    page.goto(dash.url(f"runs/{run_id}"))
    expect(page.locator(".run-status")).to_contain_text("FAILED")
    expect(page.locator(".error-message")).to_contain_text("the flux capacitor broke")
    expect(page.locator("pre.stack")).to_contain_text("Traceback")
    expect(page.locator("pre.stack")).to_contain_text("ValueError")
    expect(page.locator("tr.attempt")).to_have_count(2)
    expect(page.locator(".timeline")).to_contain_text("Retrying")
    shot(page, dash, "run-failed", publish=True)


def test_token_completed_from_tokens_page_finishes_the_run(page: Page, dash: Dash) -> None:
    with dash.project.client() as client:
        run_id = trigger(client, "approve", {})
        wait_for(lambda: client.get(f"/api/v3/runs/{run_id}").json()["status"] == "WAITING",
                 timeout=60, what="the run to wait on its token")
    page.goto(dash.url(f"runs/{run_id}"))
    expect(page.locator(".waits")).to_contain_text("token")
    page.locator(".waits a").first.click()
    page.wait_for_url(re.compile(r"/tokens"))
    row = page.locator("tr[data-token]").filter(has=page.get_by_role("button", name="Complete"))
    expect(row).to_have_count(1)
    row.get_by_label("JSON body").fill('{"ok": true, "by": "alice"}')
    row.get_by_role("button", name="Complete").click()
    expect(page.locator(".notice")).to_contain_text("Completed")
    with dash.project.client() as client:
        final = wait_final(client, run_id)
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"approved": {"ok": True, "by": "alice"}}


def test_cancel_a_running_run_from_its_page(page: Page, dash: Dash) -> None:
    with dash.project.client() as client:
        run_id = trigger(client, "linger", {})
        wait_for(lambda: client.get(f"/api/v3/runs/{run_id}").json()["status"] == "EXECUTING",
                 what="the run to execute")
    page.goto(dash.url(f"runs/{run_id}"))
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".run-status")).to_contain_text("CANCELED")
    with dash.project.client() as client:
        assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "CANCELED"


def test_bulk_replay_two_runs_from_the_list(page: Page, dash: Dash) -> None:
    with dash.project.client() as client:
        originals = [trigger(client, "quick", {"n": n}, tags=["bulk-me"]) for n in (1, 2)]
        for run_id in originals:
            wait_final(client, run_id)
    page.goto(dash.url("runs?tag=bulk-me"))
    for run_id in originals:
        page.get_by_label(f"Select {run_id}").check()
    shot(page, dash, "runs-list", publish=True)
    page.get_by_role("button", name="Replay").click()
    expect(page.locator(".notice")).to_contain_text("Replayed 2 runs")
    with dash.project.client() as client:
        listed = client.get("/api/v1/runs", params={"filter[tag]": "bulk-me"}).json()["data"]
    assert len(listed) == 4
    replays = [r for r in listed if r["id"] not in originals]
    assert sorted(r["taskIdentifier"] for r in replays) == ["quick", "quick"]


def test_a_live_refresh_keeps_a_box_checked_while_it_fetched(page: Page, dash: Dash) -> None:
    """A run selected while the list is being re-read stays selected once the fresh list is
    shown (the selection is read when the list is swapped, not when its fetch began)."""
    with dash.project.client() as client:
        picked = trigger(client, "quick", {"n": 1}, tags=["keep-picked"])
        wait_final(client, picked)
        added: list[str] = []

        def during_the_fetch(route: Route) -> None:
            # the list's re-read is held here, before it reaches the server: a run is added
            # (so the fresh list differs) and a box is checked meanwhile
            if route.request.resource_type == "fetch" and not added:
                added.append(trigger(client, "quick", {"n": 2}, tags=["keep-picked"]))
                page.get_by_label(f"Select {picked}").check()
            route.continue_()

        page.route(re.compile(r"/runs\?tag=keep-picked$"), during_the_fetch)
        page.goto(dash.url("runs?tag=keep-picked"))
        # the page re-reads the list once its event stream is open (app.js): the fresh list
        # is shown, with the box checked during its fetch still checked
        expect(page.locator("tr[data-run]")).to_have_count(2)
        assert len(added) == 1
        expect(page.locator(f"tr[data-run='{added[0]}']")).to_be_visible()
        expect(page.get_by_label(f"Select {picked}")).to_be_checked()


def test_a_click_in_progress_survives_a_live_refresh_that_finds_nothing_new(
    page: Page, dash: Dash
) -> None:
    """The re-read a live page makes once its event stream is open (or on a change of a run
    it does not show) finds the same page: it must leave it alone. Swapping the region
    anyway replaced the link being clicked between the button's press and its release, and
    the click was lost (as a test's click on a run page's link or button could be)."""
    with dash.project.client() as client:
        run_id = trigger(client, "quick", {}, tags=["click-through"])
        wait_final(client, run_id)
    pressed: list[bool] = []

    def during_the_fetch(route: Route) -> None:
        if route.request.resource_type != "fetch" or pressed:
            route.continue_()
            return
        box = page.locator(f"tr[data-run='{run_id}'] a").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        pressed.append(True)
        route.continue_()
        # the re-read is over (a swap, had there been one, is done), then the release
        expect(page.locator("[data-live][data-refreshed]")).to_have_count(1)
        page.mouse.up()

    page.route(re.compile(r"/runs\?tag=click-through$"), during_the_fetch)
    page.goto(dash.url("runs?tag=click-through"))
    page.wait_for_url(re.compile(rf"/runs/{run_id}$"))
    assert pressed == [True]
    expect(page.locator(".run-status")).to_contain_text("COMPLETED")


def test_paused_queue_holds_new_run_until_resumed(page: Page, dash: Dash) -> None:
    with dash.project.client() as client:
        wait_final(client, trigger(client, "quick", {}))  # the queue "lane" exists now
        page.goto(dash.url("queues"))
        row = page.locator("tr[data-queue='lane']")
        row.get_by_role("button", name="Pause").click()
        expect(page.locator("tr[data-queue='lane']")).to_contain_text("paused")
        held = trigger(client, "quick", {"held": True})
        page.goto(dash.url(f"runs/{held}"))
        expect(page.locator(".run-status")).to_contain_text("QUEUED")
        # it stays QUEUED while paused (the worker polls many times in this second)
        page.wait_for_timeout(1500)
        assert client.get(f"/api/v3/runs/{held}").json()["status"] == "QUEUED"
        page.goto(dash.url("queues"))
        page.locator("tr[data-queue='lane']").get_by_role("button", name="Resume").click()
        expect(page.locator("tr[data-queue='lane']")).to_contain_text("running")
        assert wait_final(client, held)["status"] == "COMPLETED"


def test_logged_out_browser_is_sent_to_login_everywhere(browser: Browser, dash: Dash) -> None:
    context = browser.new_context()
    page = context.new_page()
    paths = ["", "runs", "runs/run_nothing", "test", "tokens", "queues", "schedules",
             "workers", "keys", "events"]
    for path in paths:
        page.goto(dash.url(path))
        assert page.url.endswith("/dashboard/login"), (path, page.url)
    page.goto(f"{dash.api.url}/dashboard")
    assert page.url.endswith("/dashboard/login")
    context.close()
    # and without a browser: every form post is refused, nothing is changed
    with httpx.Client(base_url=dash.api.url) as raw:
        for path in ("runs/bulk", "queues/action", "test", "schedules"):
            answer = raw.post(dash.url(path), data={"action": "cancel", "name": "lane"})
            assert answer.status_code == 401, (path, answer.status_code)


def test_forged_form_post_is_refused(page: Page, dash: Dash) -> None:
    """A logged-in browser posting a form from another site (no CSRF token) is refused."""
    with dash.project.client() as client:
        run_id = trigger(client, "linger", {})
    try:
        # same cookies, but the form lacks the token, as a cross-site page's form would
        answer = page.request.post(dash.url(f"runs/{run_id}/cancel"), form={"csrf": "forged"})
        assert answer.status == 403
        answer = page.request.post(dash.url(f"runs/{run_id}/cancel"), form={})
        assert answer.status == 403
        with dash.project.client() as client:
            assert client.get(f"/api/v3/runs/{run_id}").json()["status"] != "CANCELED"
    finally:
        with dash.project.client() as client:
            client.post(f"/api/v2/runs/{run_id}/cancel")


def test_security_headers(page: Page, dash: Dash) -> None:
    answer = page.request.get(dash.url("runs"))
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"


def test_key_created_shown_once_and_revoked_is_refused(page: Page, dash: Dash) -> None:
    page.goto(dash.url("keys"))
    page.get_by_label("Name").fill("ci-robot")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("tr_dev_")
    runs_url = f"{dash.api.url}/api/v1/runs"
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(runs_url, headers=headers).status_code == 200
    page.goto(dash.url("keys"))
    assert secret not in page.content()  # shown once: the list has only its prefix
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    row = page.locator("tr[data-key]").filter(has_text="ci-robot")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".notice")).to_contain_text("Revoked ci-robot")
    assert asked == ["Revoke ci-robot? Clients using it stop working at once."]
    # dropped from the API's key cache by the revocation's notification (the cache keeps a
    # key 30 s: a refusal within 10 s is the notification's doing)
    wait_for(lambda: httpx.get(runs_url, headers=headers).status_code == 401,
             timeout=10, what="the API to refuse the revoked key")


def test_runs_list_shows_new_runs_live_and_env_switch(page: Page, dash: Dash) -> None:
    page.goto(dash.url("runs?tag=live-list"))
    expect(page.locator("tbody")).to_contain_text("No runs match")
    loaded_at = page.evaluate("performance.timeOrigin")
    with dash.project.client() as client:
        run_id = trigger(client, "quick", {"live": True}, tags=["live-list"])
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("COMPLETED")
    assert page.evaluate("performance.timeOrigin") == loaded_at, "the page was reloaded"
    page.get_by_role("navigation", name="Environment").get_by_role("link", name="prod").click()
    page.wait_for_url(re.compile(r"/prod/runs"))
    expect(page.locator("tbody")).to_contain_text("No runs match")  # prod has none


def test_schedules_create_describe_deactivate_delete(page: Page, dash: Dash) -> None:
    page.goto(dash.url("schedules"))
    page.get_by_label("Task").fill("nightly")
    page.get_by_label("Cron (5 fields)").fill("*/5 * * * *")
    page.get_by_label("Timezone").fill("Europe/Paris")
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".notice")).to_contain_text("Created sched_")
    row = page.locator("tr[data-schedule]").filter(has_text="nightly")
    expect(row).to_contain_text("every 5 minutes")
    expect(row).to_contain_text("Europe/Paris")
    expect(row.locator("ul li")).to_have_count(5)
    row.get_by_role("link", name="Edit").click()
    # the edit form, not the "New schedule" one of the page being left (same labels)
    expect(page.get_by_role("heading", name=re.compile(r"^Edit sched_"))).to_be_visible()
    page.get_by_label("Cron (5 fields)").fill("0 9 * * 1-5")
    page.get_by_role("button", name="Save").click()
    row = page.locator("tr[data-schedule]").filter(has_text="nightly")
    expect(row).to_contain_text("at 09:00 on weekdays")
    row.get_by_role("button", name="Deactivate").click()
    expect(page.locator("tr[data-schedule]").filter(has_text="nightly")).to_contain_text("inactive")
    # the confirm step is wired once the page's script has run (it may still be parsing)
    page.wait_for_load_state()
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.locator("tr[data-schedule]").filter(has_text="nightly").get_by_role(
        "button", name="Delete").click()
    expect(page.locator("tr[data-schedule]")).to_have_count(0)
    assert len(asked) == 1 and asked[0].startswith("Delete sched_"), asked


def test_workers_page_shows_the_replica_and_version(page: Page, dash: Dash) -> None:
    page.goto(dash.url("workers"))
    expect(page.locator("table").first).to_contain_text(str(dash.worker.process.pid))
    expect(page.locator("table").nth(1)).to_contain_text("greet")
    expect(page.locator("table").nth(1)).to_contain_text("current")
