"""``GET /client.js`` (and ``/client.mjs``, ``/client.d.ts``): the browser client, served by pandapush itself.

The files are read once, at start: they ship with the package and never change while a
process runs, so every request is answered from memory, gzipped or not, with an ETag that
is the hash of the bytes (the same on every node of a cluster, unlike an mtime).

Caching: browsers keep the file 5 minutes, then revalidate with ``If-None-Match`` (a 304
costs no body); a deploy reaches every page within those 5 minutes. A page that loads
``/client.js?v=<etag>`` gets a year and ``immutable`` instead.

CORS: ``Access-Control-Allow-Origin: *`` (pages on any origin load the client, and module
scripts are always fetched in CORS mode); ``Cross-Origin-Resource-Policy: cross-origin``
so pages isolated with COEP can load it too. There are no credentials in it to protect.

Mount it on the root for each name it serves (the root hands the whole path over)::

    scripts = ClientScriptResource()
    PandapushRoot(..., mounts={b"client.js": scripts, b"client.mjs": scripts})
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

__all__ = ["STATIC_DIR", "ClientScriptResource", "ServedFile"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: What the resource serves by default: URL name -> file in ``static/``.
DEFAULT_FILES = {"client.js": "client.js", "client.mjs": "client.mjs", "client.d.ts": "client.d.ts"}

_CONTENT_TYPES = {
    ".js": b"application/javascript; charset=utf-8",
    ".mjs": b"application/javascript; charset=utf-8",
    ".ts": b"text/plain; charset=utf-8",
}

SHORT_CACHE = b"public, max-age=300"
LONG_CACHE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class ServedFile:
    """One file, ready to send: plain and gzipped bytes, each with its own strong ETag."""

    contentType: bytes
    body: bytes
    gzipped: bytes
    version: str
    lastModified: bytes

    @classmethod
    def load(cls, path: Path) -> ServedFile:
        body = path.read_bytes()
        version = hashlib.sha256(body).hexdigest()[:20]
        # mtime=0: the same bytes, hence the same ETag, wherever and whenever it is compressed.
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        contentType = _CONTENT_TYPES.get(path.suffix, b"application/octet-stream")
        lastModified = formatdate(os.stat(path).st_mtime, usegmt=True).encode("ascii")
        return cls(contentType, body, gzipped, version, lastModified)

    @property
    def etag(self) -> bytes:
        return f'"{self.version}"'.encode("ascii")

    @property
    def gzipEtag(self) -> bytes:
        return f'"{self.version}-gz"'.encode("ascii")


def _etagMatches(header: bytes, etags: Iterable[bytes]) -> bool:
    """``If-None-Match`` uses weak comparison: ``W/"x"`` matches ``"x"``; ``*`` matches anything."""
    wanted = set(etags)
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate == b"*":
            return True
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate in wanted:
            return True
    return False


def _acceptsGzip(request: IRequest) -> bool:
    header = request.getHeader(b"accept-encoding") or b""
    for part in header.lower().split(b","):
        name, _, params = part.strip().partition(b";")
        if name.strip() in (b"gzip", b"*"):
            q = params.strip()
            if not q.startswith(b"q="):
                return True
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
    return False


class ClientScriptResource(Resource):
    """
    A leaf resource answering ``GET``/``HEAD`` for the client files by name. It finds the
    name in the request path's last segment, so it works mounted on ``PandapushRoot``
    (which hands over the whole path) or with ``putChild``.
    """

    isLeaf = True

    def __init__(self, directory: Path = STATIC_DIR, files: dict[str, str] | None = None) -> None:
        super().__init__()
        self.files: dict[bytes, ServedFile] = {
            name.encode("ascii"): ServedFile.load(directory / filename)
            for name, filename in (files or DEFAULT_FILES).items()
        }

    def version(self, name: str = "client.js") -> str:
        """The content hash of a file: pages may load ``/client.js?v=<version>`` to cache it for good."""
        return self.files[name.encode("ascii")].version

    def _lookup(self, request: IRequest) -> ServedFile | None:
        segments = [s for s in request.postpath if s] or [request.path.rsplit(b"/", 1)[-1]]  # type: ignore[attr-defined]
        if len(segments) != 1:
            return None
        return self.files.get(segments[0])

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        served = self._lookup(request)
        if served is None:
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Not found"
        if request.method == b"OPTIONS":
            request.setResponseCode(http.NO_CONTENT)
            request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD")
            request.setHeader(b"Access-Control-Max-Age", b"86400")
            return b""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Method not allowed"
        return self._serve(request, served)

    @staticmethod
    def _notModified(request: IRequest, served: ServedFile) -> bool:
        ifNoneMatch = request.getHeader(b"if-none-match")
        if ifNoneMatch is not None:
            return _etagMatches(ifNoneMatch, (served.etag, served.gzipEtag))
        # If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3); browsers
        # send back the Last-Modified they were given, byte for byte.
        return request.getHeader(b"if-modified-since") == served.lastModified

    def _serve(self, request: IRequest, served: ServedFile) -> bytes:
        useGzip = _acceptsGzip(request)
        etag = served.gzipEtag if useGzip else served.etag
        body = served.gzipped if useGzip else served.body
        versioned = request.args.get(b"v", [b""])[0] == served.version.encode("ascii")  # type: ignore[attr-defined]

        request.setHeader(b"Content-Type", served.contentType)
        request.setHeader(b"Cache-Control", LONG_CACHE if versioned else SHORT_CACHE)
        request.setHeader(b"ETag", etag)
        request.setHeader(b"Last-Modified", served.lastModified)
        # Caches must keep the gzipped and plain bodies apart.
        request.setHeader(b"Vary", b"Accept-Encoding")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cross-Origin-Resource-Policy", b"cross-origin")
        if useGzip:
            request.setHeader(b"Content-Encoding", b"gzip")

        if self._notModified(request, served):
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        if request.method == b"HEAD":
            # Twisted would drop a HEAD body anyway, but it logs a warning each time.
            request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
            return b""
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return body
