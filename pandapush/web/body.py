"""What a REST publish's body means: JSON, upstream's JavaScript object literals, or a form.

Pure functions, no I/O: the REST endpoint (:mod:`pandapush.web.publish`) reads request
bodies with them, and ``pandapush publish`` reads its message argument with the same
ones, so the command accepts and refuses exactly what the server does.

The upstream README's curl examples send ``-d '{text:"hello"}'`` as
``application/json``: a JavaScript object literal, not JSON. Its examples must work
as written, so a body that is not JSON but becomes JSON once bare object keys are
quoted is accepted as such; anything else that is not JSON is refused with a message
that says why. urlencoded forms (``foo=bar``) arrive as objects (upstream delivered
``{}``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from pandapush.bayeux import json

__all__ = ["BodyError", "parseBody"]

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BARE_KEY = re.compile(r"([{,]\s*)([A-Za-z_$][A-Za-z0-9_$]*)(\s*:)")


class BodyError(Exception):
    """The body cannot be published; the message says why (it goes back to the client)."""


def _quoteBareKeys(text: str) -> str:
    """``{text:"hello"}`` -> ``{"text":"hello"}``, leaving string contents alone."""
    out: list[str] = []
    position = 0
    for string in _STRING.finditer(text):
        out.append(_BARE_KEY.sub(r'\1"\2"\3', text[position : string.start()]))
        out.append(string.group())
        position = string.end()
    out.append(_BARE_KEY.sub(r'\1"\2"\3', text[position:]))
    return "".join(out)


def _parseJSON(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        reason = str(error)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("Body is not valid JSON: it is not UTF-8 text") from None
    relaxed = _quoteBareKeys(text)
    if relaxed != text:
        try:
            return json.loads(relaxed)
        except json.JSONDecodeError:
            pass
    raise BodyError(f"Body is not valid JSON ({reason}); send JSON or a urlencoded form")


def _parseForm(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("Form body is not valid UTF-8") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as error:
        raise BodyError(f"Form body cannot be read: {error}") from None
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


def parseBody(body: bytes, contentType: str | None) -> Any:
    """
    The data to publish from a request body, or :class:`BodyError`.

    urlencoded forms become objects of strings (a repeated field, a list of
    strings); everything else is read as JSON. A body without a content type that is
    not JSON but looks like a form is read as one.
    """
    mediaType = (contentType or "").split(";", 1)[0].strip().lower()
    if not body.strip():
        raise BodyError("Body is empty; send a JSON value or a urlencoded form")
    if mediaType == "application/x-www-form-urlencoded":
        return _parseForm(body)
    if mediaType.startswith("multipart/"):
        raise BodyError(f"Unsupported Content-Type {mediaType}; send JSON or a urlencoded form")
    try:
        return _parseJSON(body)
    except BodyError:
        if not mediaType and b"=" in body and not body.lstrip().startswith((b"{", b"[")):
            return _parseForm(body)
        raise
