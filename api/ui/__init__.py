"""The operators' dashboard at ``/ui/``: static ES modules and CSS served by the package.

The page is built only from the JSON API (fetched with the bearer token the operator types
in, kept in ``sessionStorage``); the server knows nothing of it beyond these files. Every
``/ui/...`` route returns the same ``index.html`` so ids in links (``/ui/jobs/<id>``,
``/ui/volumes/<id>``) open the right view: the routing is the client's.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response

bp = Blueprint("ui", __name__, url_prefix="/ui", static_folder="static",
               static_url_path="/static")

#: Everything from this origin only: no CDN, no inline script, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def _index() -> bytes:
    return resources.files(__package__).joinpath("static/index.html").read_bytes()


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/")
@bp.get("/<path:route>")
def index(route: str = "") -> Response:
    """The single page, whatever the route below ``/ui/`` (static files excepted)."""
    resp = Response(_index(), mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp
