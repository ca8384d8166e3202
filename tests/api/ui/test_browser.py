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

    def first_step() -> dict:
        return http("GET", f"{url}/v1/volumes/{dash.volume_id}")[1]["plan"]["steps"][0]["job"]

    # The watcher rescans while the page is open (the cancelled merge changes the chain),
    # so the plan's first step may change between two reads: the dialog must name the
    # first step of the plan as it stood just before or just after the click.
    seen = [first_step()]
    step.click()
    seen.append(first_step())
    text = dialog.inner_text()
    assert any(f"{s['type']} of vms:{s['path']} on host h1" in text for s in seen), text
    dialog.get_by_role("button", name="Keep as is").click()
    assert not dialog.is_visible()
    assert len(http("GET", f"{url}/v1/jobs")[1]["items"]) == before

    # Keyboard: the sign-out button is reachable by Tab from the top.
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
