"""The operators' dashboard in a real Chromium against the real stack (see conftest)."""

from __future__ import annotations

import re

import pytest

from tests.api.ui.conftest import READ_TOKEN, shot
from tests.workers.conftest import TOKEN, http, wait_for

pytestmark = pytest.mark.slow


def sign_in(page, url: str, token: str = TOKEN, path: str = "/ui/") -> None:  # type: ignore[no-untyped-def]
    page.goto(url + path)
    page.get_by_label("API token").fill(token)
    page.get_by_label("API token").press("Enter")
    page.locator("#who-name").wait_for(state="visible")


def api_requests(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [u for u in page.watch.requests if "/v1/" in u]


def only_local(page, url: str) -> None:  # type: ignore[no-untyped-def]
    assert page.watch.requests, "the route recorded nothing"
    assert all(u.startswith(url + "/") for u in page.watch.requests), page.watch.requests


def test_operator_follows_and_cancels_jobs(page, dash) -> None:  # type: ignore[no-untyped-def]
    url = dash.url
    page.goto(url + "/ui/")
    assert page.get_by_label("API token").get_attribute("type") == "password"
    assert api_requests(page) == []
    sign_in(page, url)
    assert page.evaluate("sessionStorage.getItem('vhdmend.token')") == TOKEN
    assert page.evaluate("document.cookie") == "" and page.context.cookies() == []

    # Overview: the host with its heartbeat, the over-committed volume with its risk.
    host = page.locator("tr[data-host='h1']")
    host.wait_for()
    assert "ago" in host.inner_text() and "stale" not in host.inner_text()
    vol = page.locator(f"tr[data-volume='{dash.volume_id}']")
    vol.wait_for()
    assert vol.locator(".risk").text_content() == "warning"
    assert "over-committed" in vol.inner_text()
    shot(page, "overview")

    # A job started through the API appears on the overview, then its page (reached by
    # a link, no reload) follows it to `succeeded`.
    page.evaluate("window.__noReload = 1")
    code, job, _ = http("POST", f"{url}/v1/jobs", {"type": "merge", "host": "h1",
                                                  "root": "vms", "path": dash.small})
    assert code == 202, job
    # The small merge may end before the overview's next refresh (it lists running jobs
    # only), so it is followed from the jobs list; the overview's running row is checked
    # below with the big merge, which is held running.
    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator(f"tr[data-job='{job['id']}']")
    row.wait_for(timeout=15000)
    row.get_by_role("link", name=job["id"]).click()
    page.locator("h1 [data-state='succeeded']").wait_for(timeout=30000)
    assert page.evaluate("window.__noReload") == 1
    assert page.url == f"{url}/ui/jobs/{job['id']}"
    assert "100 %" in page.locator(".progress").first.inner_text()
    assert '"volumes"' in page.locator("#h-res + pre").inner_text() or \
        page.locator("#h-res + pre").inner_text().startswith("{")
    assert page.locator("#job-actions button").count() == 0
    events = page.locator(".events li")
    assert events.count() >= 2 and "succeeded" in events.last.inner_text()
    shot(page, "job-succeeded")

    # Cancel on a running job, from the jobs list, with the confirmation.
    code, big, _ = http("POST", f"{url}/v1/jobs", {"type": "merge", "host": "h1",
                                                  "root": "vms", "path": dash.big,
                                                  "external_ref": "TICKET-7"})
    assert code == 202, big
    wait_for(lambda: http("GET", f"{url}/v1/jobs/{big['id']}")[1]["state"] == "running", 30,
             what="the big merge to run")
    page.get_by_role("link", name="Overview", exact=True).click()
    page.locator(f"tr[data-job='{big['id']}']").wait_for(timeout=15000)
    shot(page, "overview-running")
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_label("External ref").fill("TICKET-7")
    page.get_by_label("State").select_option("running")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/ui/jobs\?.*external_ref=TICKET-7"))
    listed = page.locator("table.jobs tbody tr")
    listed.first.wait_for()
    assert listed.count() == 1 and listed.first.get_attribute("data-job") == big["id"]
    shot(page, "jobs")
    listed.first.get_by_role("link").click()
    page.locator("h1 [data-state='running']").wait_for(timeout=15000)
    page.locator(".progress .pct").wait_for()
    assert page.get_by_role("button", name="Pause").is_visible()
    page.get_by_role("button", name="Cancel").click()
    dialog = page.locator("dialog#confirm")
    assert big["id"] in dialog.inner_text() and dash.big in dialog.inner_text()
    shot(page, "job-cancel-confirm")
    dialog.get_by_role("button", name="Cancel job").click()
    page.locator("h1 [data-state='cancelled']").wait_for(timeout=30000)
    assert http("GET", f"{url}/v1/jobs/{big['id']}")[1]["state"] == "cancelled"
    assert page.get_by_role("button", name="Cancel").count() == 0
    shot(page, "job-cancelled")

    # The volume page: the plot, the chains by growth, a plan whose button asks first.
    # The page draws its plan once, from its first answer: keep that answer.
    drawn = []
    page.on("response", lambda r: drawn.append(r) if (
        not drawn and r.ok and r.url == f"{url}/v1/volumes/{dash.volume_id}") else None)
    page.goto(f"{url}/ui/volumes/{dash.volume_id}")
    page.locator("svg.plot path.free").wait_for(state="attached")
    assert page.locator("svg.plot line.reserve").count() == 1
    assert page.locator("svg.plot line.ceiling").count() == 1
    chains = page.locator("table.chains tbody tr")
    assert chains.count() >= 3
    assert "dyn.vhd" in chains.first.inner_text()     # the most growth first
    shot(page, "volume")
    before = len(http("GET", f"{url}/v1/jobs")[1]["items"])
    step = page.get_by_role("button", name=re.compile(r"Run step 1"))

    # The watcher rescans while the page is open (the cancelled merge changes the chain),
    # so a later read of the plan may differ from the one drawn: the dialog must name the
    # first step of the plan the page drew (its first answer).
    step.click()
    text = dialog.inner_text()
    assert drawn, "the page's answer was not seen"
    s = drawn[0].json()["plan"]["steps"][0]["job"]
    assert f"{s['type']} of vms:{s['path']} on host h1" in text, (text, s)
    dialog.get_by_role("button", name="Keep as is").click()
    assert not dialog.is_visible()
    assert len(http("GET", f"{url}/v1/jobs")[1]["items"]) == before
    # The focus is back on the step's button and stays there across the page's refresh
    # (the plan is never moved: a keyboard user keeps their place).
    focused = "document.activeElement.textContent"
    assert page.evaluate(focused).startswith("Run step 1")
    with page.expect_response(f"{url}/v1/volumes/{dash.volume_id}", timeout=15000):
        pass
    page.evaluate("new Promise((done) => setTimeout(done, 300))")  # the redraw after it
    assert page.evaluate(focused).startswith("Run step 1")

    # Keyboard: the sign-out button is reachable by Tab from the top (focus put there
    # first: from the step's button, Tab leaves the page when the plan has one step).
    page.evaluate("document.body.tabIndex = -1; document.body.focus(); "
                  "document.body.removeAttribute('tabindex')")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON")

    assert page.watch.errors == []
    only_local(page, url)


def test_read_only_token_sees_no_buttons(page, dash) -> None:  # type: ignore[no-untyped-def]
    url = dash.url
    code, big, _ = http("POST", f"{url}/v1/jobs", {"type": "merge", "host": "h1",
                                                  "root": "vms", "path": dash.big})
    assert code == 202
    try:
        wait_for(lambda: http("GET", f"{url}/v1/jobs/{big['id']}")[1]["state"] == "running",
                 30, what="the merge to run")
        sign_in(page, url, READ_TOKEN, path=f"/ui/jobs/{big['id']}")
        assert "read-only" in page.locator("#who-name").inner_text()
        page.locator("h1 [data-state='running']").wait_for()
        page.locator(".events li").first.wait_for()
        assert page.locator("#job-actions button").count() == 0
        page.goto(f"{url}/ui/volumes/{dash.volume_id}")
        page.locator("#plan .step").first.wait_for()
        assert page.locator("#plan button").count() == 0
        shot(page, "volume-read-only")
    finally:
        http("POST", f"{url}/v1/jobs/{big['id']}/cancel")
    assert page.watch.errors == []
    only_local(page, url)


def test_no_data_without_a_valid_token(page, dash) -> None:  # type: ignore[no-untyped-def]
    url = dash.url
    page.goto(f"{url}/ui/volumes/{dash.volume_id}")
    page.get_by_label("API token").wait_for()
    assert api_requests(page) == []
    assert page.locator("#view").inner_text().strip() == ""
    page.get_by_label("API token").fill("not-a-valid-token-0123")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("This token is not valid.").wait_for()
    # One refused whoami, nothing else asked; nothing kept.
    assert [u.split("?")[0] for u in api_requests(page)] == [f"{url}/v1/whoami"]
    assert page.evaluate("sessionStorage.length") == 0
    assert "h1" not in page.locator("#view").inner_text()
    shot(page, "signin-refused")
    # The only console error is the browser's own line about the refused request.
    assert all("401" in e for e in page.watch.errors), page.watch.errors
    only_local(page, url)


def test_plot_projects_to_the_reserve(page, dash) -> None:  # type: ignore[no-untyped-def]
    """The real volume's record with half an hour of falling history put in (the scans of
    a test last seconds; the history keeps one sample a minute): the projection runs from
    the last sample to the reserve at the right edge, the ceiling sits at free - growth."""
    import json
    import time
    url = dash.url
    vol = http("GET", f"{url}/v1/volumes/{dash.volume_id}")[1]
    now, mib = time.time(), 1 << 20
    free = vol["free_bytes"]
    vol["history"] = [{"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60 * k)),
                       "free_bytes": free + k * mib, "disk_bytes": vol["disk_bytes"],
                       "growth_bytes": vol["growth_bytes"]} for k in range(30, -1, -1)]
    vol["rate_bytes_per_second"] = -mib / 60
    vol["seconds_to_full"] = (free - vol["reserve_bytes"]) / (mib / 60)
    page.route(f"{url}/v1/volumes/{dash.volume_id}",
               lambda r: r.fulfill(status=200, content_type="application/json",
                                   body=json.dumps(vol)))
    sign_in(page, url, path=f"/ui/volumes/{dash.volume_id}")
    proj = page.locator("svg.plot line.projection")
    proj.wait_for(state="attached")
    reserve = page.locator("svg.plot line.reserve")
    assert float(proj.get_attribute("y2")) == pytest.approx(float(reserve.get_attribute("y1")))
    assert float(proj.get_attribute("x2")) == pytest.approx(float(reserve.get_attribute("x2")))
    assert page.locator("svg.plot circle.dot").count() == 31
    ceiling = page.locator("svg.plot line.ceiling")
    assert float(ceiling.get_attribute("y1")) > float(reserve.get_attribute("y1"))  # below
    assert "reserve reached in" in page.locator("svg.plot").inner_html()
    shot(page, "volume-projection")
    assert page.watch.errors == []
    only_local(page, url)



def test_run_step_submits_its_job_and_follows_it(page, dash) -> None:  # type: ignore[no-untyped-def]
    """A plan step run from the volume page, through its confirmation, is the job the
    dialog named, and the page it leads to follows that job to `succeeded`."""
    url = dash.url
    sign_in(page, url, path=f"/ui/volumes/{dash.volume_id}")
    page.locator("#plan .step").first.wait_for()
    dialog = page.locator("dialog#confirm")
    buttons = page.locator("#plan button.run-step")
    # The plan is drawn once and the watcher rescans meanwhile, so the step is chosen by
    # what its own dialog says (what a click submits), not by its place in a later read:
    # the small chain's remediation (the quickest at the worker's paced rate).
    chosen = ""
    for i in range(buttons.count()):
        buttons.nth(i).click()
        dialog.wait_for(state="visible")
        if "remediate of vms:small/" in dialog.inner_text():
            chosen = dialog.inner_text()
            break
        dialog.get_by_role("button", name="Keep as is").click()
        assert not dialog.is_visible()
    assert chosen, "no plan step remediates the small chain"
    shot(page, "volume-run-step-confirm")
    page.evaluate("window.__noReload = 1")
    dialog.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/[0-9A-HJKMNP-TV-Z]{26}$"))
    job_id = page.url.rsplit("/", 1)[1]
    code, job, _ = http("GET", f"{url}/v1/jobs/{job_id}")
    assert code == 200 and job["type"] == "remediate" and job["host"] == "h1"
    assert job["path"].startswith("small/") and f"vms:{job['path']} on host h1" in chosen
    assert job["options"] == {"type": "fixed"} and job["requested_by"] == "operator"
    page.locator("h1 [data-state='succeeded']").wait_for(timeout=90000)
    assert page.evaluate("window.__noReload") == 1
    assert http("GET", f"{url}/v1/jobs/{job_id}")[1]["state"] == "succeeded"
    assert "100 %" in page.locator(".progress").first.inner_text()
    assert "small/base.vhd" in page.locator("#h-res + pre").inner_text()
    assert page.locator("#job-actions button").count() == 0
    shot(page, "job-from-plan-succeeded")
    assert page.watch.errors == []
    only_local(page, url)


def test_jobs_filter_by_type_beyond_the_first_page(page, dash) -> None:  # type: ignore[no-untyped-def]
    """The type filter is the API's: a job of a rare kind is found behind more newer jobs
    of another kind than one page (20 rows) holds, and the pages hold only that kind."""
    url = dash.url
    code, rare, _ = http("POST", f"{url}/v1/jobs", {"type": "plan", "host": "h1",
                                                   "root": "vms", "path": "dyn.vhd",
                                                   "options": {"operation": "compact"}})
    assert code == 202, rare
    newer = []
    for _ in range(22):
        code, job, _ = http("POST", f"{url}/v1/jobs", {"type": "inspect", "host": "h1",
                                                      "root": "vms", "path": "dyn.vhd"})
        assert code == 202, job
        newer.append(job["id"])
    sign_in(page, url, path="/ui/jobs")
    rows = page.locator("table.jobs tbody tr")
    rows.first.wait_for()
    assert rows.count() == 20 and rare["id"] not in [
        rows.nth(i).get_attribute("data-job") for i in range(rows.count())]
    page.get_by_label("Type").select_option("plan")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/ui/jobs\?type=plan$"))
    page.locator(f"tr[data-job='{rare['id']}']").wait_for()
    assert {rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())} == {
        "plan"}
    assert any("/v1/jobs?" in u and "type=plan" in u for u in api_requests(page))
    shot(page, "jobs-by-type")
    # Every page of a common kind holds that kind only, and reaches the older ones.
    page.get_by_label("Type").select_option("inspect")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/ui/jobs\?type=inspect$"))
    page.locator(f"tr[data-job='{newer[-1]}']").wait_for()
    first = [rows.nth(i).get_attribute("data-job") for i in range(rows.count())]
    assert len(first) == 20
    page.get_by_role("button", name="Older →").click()
    page.locator("nav.pager", has_text="page 2").wait_for()
    page.locator(f"tr[data-job='{newer[0]}']").wait_for()
    second = [rows.nth(i).get_attribute("data-job") for i in range(rows.count())]
    assert not set(first) & set(second) and set(newer) <= set(first) | set(second)
    kinds = {rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert kinds == {"inspect"}
    assert page.watch.errors == []
    only_local(page, url)


def type_choices(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The Type filter's values, once the filters are drawn (the kinds known)."""
    page.locator("#job-filters:not([aria-busy]) form.filters").wait_for()
    return page.locator("#f-type option").evaluate_all("(os) => os.map((o) => o.value)")


def test_type_filter_lists_the_services_kinds(page, dash, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Type choices are the service's registry (GET /v1/kinds), in its order: a kind
    registered only in this test's API appears, so the page keeps no list of its own."""
    from service import kinds
    from service.kinds import JobKind
    monkeypatch.setitem(kinds._REGISTRY, "du", JobKind(
        "du", "Disk usage of a folder (this test's kind)", run=lambda ctx: {}, folder=True))
    url = dash.url
    sign_in(page, url, path="/ui/jobs")
    assert type_choices(page) == ["", *kinds.names()]
    assert type_choices(page)[-1] == "du"
    du = page.locator("#f-type option[value='du']")
    assert du.get_attribute("title") == "Disk usage of a folder (this test's kind)"
    assert page.locator("#f-type option[value='merge']").get_attribute("title") == \
        kinds.get("merge").summary
    assert page.watch.errors == []
    only_local(page, url)


def test_type_filter_is_drawn_once_the_kinds_are_known(page, dash) -> None:  # type: ignore[no-untyped-def]
    """The kinds' answer held back: the list is shown, the filters are not (no choice can be
    made that a late answer would undo); released, the filters appear with the URL's kind
    chosen; a choice made then is the one submitted, and the next view asks no more."""
    url = dash.url
    code, job, _ = http("POST", f"{url}/v1/jobs", {"type": "inspect", "host": "h1",
                                                  "root": "vms", "path": "dyn.vhd"})
    assert code == 202, job
    held = []
    page.route(f"{url}/v1/kinds", lambda r: held.append(r))
    sign_in(page, url, path="/ui/jobs?type=inspect")
    page.locator(f"tr[data-job='{job['id']}']").wait_for()
    for _ in range(200):                 # the request reaches the route (no fixed sleep)
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1, "the page did not ask for the kinds"
    assert page.locator("#job-filters[aria-busy]").count() == 1
    assert page.get_by_label("Type").count() == 0 and page.locator("form.filters").count() == 0
    held[0].fallback()
    assert "inspect" in type_choices(page)
    assert page.get_by_label("Type").input_value() == "inspect"
    page.get_by_label("Type").select_option("plan")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/ui/jobs\?type=plan$"))
    assert page.get_by_label("Type").input_value() == "plan"
    assert [u for u in api_requests(page) if "/v1/kinds" in u] == [f"{url}/v1/kinds"]
    assert any("/v1/jobs?" in u and "type=plan" in u for u in api_requests(page))
    assert page.watch.errors == []
    only_local(page, url)
