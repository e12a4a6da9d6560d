"""
Short HTML pages for a person: a refused or failed sign-in, a signed-out notice.

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

__all__ = ["PAGE_CSP", "personPage"]

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
) -> bytes:
    """
    Sets ``status`` and the headers of a standalone HTML page and returns it: ``title`` as
    its heading, then each of ``paragraphs`` (plain text, escaped; empty ones skipped),
    then ``link`` (``(text, href)``) if given.
    """
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs if text)
    if link is not None:
        text, href = link
        body += f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>'
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · pandapush admin</title><style>{_STYLE}</style></head>"
        f'<body><main><p class="brand">pandapush admin</p><h1>{html.escape(title)}</h1>{body}'
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
