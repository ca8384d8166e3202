"""The dashboard's files: one index.html for every /ui/ route, assets from the package,
nothing from another origin, no data without a token."""

from __future__ import annotations

import re
from importlib import resources


def test_every_route_returns_the_same_page(client) -> None:
    pages = [client.get(p) for p in ("/ui/", "/ui/jobs", "/ui/jobs/01J0000000000000000000000A",
                                     "/ui/volumes/h1-abc")]
    assert {p.status_code for p in pages} == {200}
    assert len({p.data for p in pages}) == 1
    page = pages[0]
    assert page.mimetype == "text/html" and b'type="password"' in page.data
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in page.headers


def test_assets_are_served_from_the_package(client) -> None:
    static = resources.files("api.ui").joinpath("static")
    names = ["app.css"] + [f"js/{p.name}" for p in static.joinpath("js").iterdir()
                           if p.name.endswith(".js")]
    names += [f"js/views/{p.name}" for p in static.joinpath("js/views").iterdir()]
    assert "js/app.js" in names and "js/views/jobs.js" in names
    for name in names:
        with client.get(f"/ui/static/{name}") as r:
            assert r.status_code == 200, name
            data = r.data
        assert data == static.joinpath(name).read_bytes()
        # Offline: no absolute URL to another origin in any asset (the SVG namespace aside).
        text = data.decode()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    with client.get("/ui/static/js/app.js") as r:
        assert r.mimetype in ("text/javascript", "application/javascript")
    assert client.get("/ui/static/nope.js").status_code == 404


def test_the_page_carries_no_data(client) -> None:
    # The server renders nothing but the shell: everything comes from /v1 with a token.
    page = client.get("/ui/volumes/x").data.decode()
    assert "<table" not in page and "h1" in page


def test_the_pages_action_buttons_follow_the_states_table() -> None:
    """jobs.js keeps a copy of which states allow cancel, pause and resume (a button the API
    would answer 409 to must not be offered, nor one it allows hidden): it must equal
    service/states.py's action table."""
    from service import states

    js = resources.files("api.ui").joinpath("static/js/views/jobs.js").read_text()
    block = re.search(r"const ACTIONS = \{(.*?)\n\};", js, re.S)
    assert block, "jobs.js no longer declares ACTIONS"
    page = {name: set(re.findall(r'"(\w+)"', body))
            for name, body in re.findall(r"(\w+): new Set\(\[(.*?)\]\)", block.group(1))}
    table = {}
    for name in ("cancel", "pause", "resume"):
        table[name] = set()
        for state in states.STATES:
            try:
                states.action(name, state, has_checkpoint=False)
            except states.Conflict:
                continue
            table[name].add(state)
    assert page == table

