"""
Short HTML pages for a person: a refused or failed sign-in, a signed-out notice, and
:class:`FrontPage`, what ``GET /`` shows whoever opens the server's address.

Every admin login answer a browser may land on (a wrong password, a sign-in the identity
provider refused, "you have signed out") is one of these rather than a JSON error. They
stand alone: their one inline style is allowed by its hash under ``default-src 'none'``
(the console's stylesheet sits behind the login that just failed), and every text is
escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

import pandapush

__all__ = ["PAGE_CSP", "FrontPage", "personPage"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1c1f24;background:#f6f7f9}"
    "h1{font-size:1.4rem;margin:0 0 .25rem}.brand{color:#5b6470;margin:0 0 1.5rem}"
    "a{color:#1f5fbf}"
    "@media (prefers-color-scheme:dark){body{color:#e6e9ee;background:#15181d}a{color:#6ea8ff}}"
)

#: The pages' Content-Security-Policy: nothing but their own inline style.
PAGE_CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode("ascii")
    + "'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
).encode("ascii")


def personPage(
    request: IRequest,
    status: int,
    title: str,
    paragraphs: Iterable[str],
    link: tuple[str, str] | None = None,
    brand: str = "pandapush admin",
    links: Iterable[tuple[str, str, str]] = (),
) -> bytes:
    """
    Sets ``status`` and the headers of a standalone HTML page and returns it: ``title`` as
    its heading, then each of ``paragraphs`` (plain text, escaped; empty ones skipped),
    then ``links`` (``(text, href, what it is)``) as a list, then ``link`` (``(text, href)``).
    """
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs if text)
    items = "".join(
        f'<li><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>: {html.escape(what)}</li>'
        for text, href, what in links
    )
    if items:
        body += f"<ul>{items}</ul>"
    if link is not None:
        text, href = link
        body += f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>'
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · {html.escape(brand)}</title><style>{_STYLE}</style></head>"
        f'<body><main><p class="brand">{html.escape(brand)}</p><h1>{html.escape(title)}</h1>{body}'
        "</main></body></html>\n"
    )
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", PAGE_CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"X-Frame-Options", b"DENY")
    request.setHeader(b"Cache-Control", b"no-store")
    return page.encode("utf-8")


class FrontPage(Resource):
    """
    ``GET /``: where to go from the server's bare address (it was a 404, which looks
    like a server that is not there): the Bayeux endpoint, the browser client, the
    console, the server API's description, the health checks, and where the docs are.
    Any other path under it is still a 404.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        if request.path != b"/":
            return personPage(
                request,
                404,
                "Not found",
                ["Nothing here."],
                ("The server's front page", "/"),
                brand="pandapush",
            )
        return personPage(
            request,
            200,
            f"pandapush {pandapush.__version__}",
            [
                "A multi-tenant publish/subscribe server: Faye and CometD clients connect to /push "
                "(websocket, long-polling, event streams); servers publish over HTTP.",
                "The documentation is README.md and docs/ in the pandapush source: docs/http-api.md "
                "for every endpoint, docs/deployment.md and docs/operations.md to run it.",
            ],
            links=[
                ("/push", "/push", "the Bayeux endpoint, for Faye and CometD clients"),
                ("/client.js", "/client.js", "the browser client (also /client.mjs, /client.d.ts)"),
                ("/admin", "/admin", "the console: applications, keys, webhooks"),
                ("/openapi.json", "/openapi.json", "the server API (/apps/...) as OpenAPI"),
                ("/health_check.json", "/health_check.json", "version and each dependency's status"),
                ("/ready", "/ready", "readiness: 503 while draining or while Redis is unreachable"),
                ("/live", "/live", "liveness: 200 while the process runs"),
            ],
            brand="pandapush",
        )

    render_HEAD = render_GET
