#!/usr/bin/env python3
"""
The container's HEALTHCHECK: exit 0 when pandapush answers ``GET /live`` (or, given
``ready``, ``GET /ready``) with 200 and a JSON object, 1 otherwise (the reason on stderr).

``pandapush-healthcheck`` is liveness: the process serves HTTP. An orchestrator that
replaces unhealthy containers (Swarm) must not replace every node for a Redis outage,
which no restart cures. ``pandapush-healthcheck ready`` is readiness: 503 while the node
drains or cannot reach Redis; Compose uses it so nginx starts once the nodes can serve.

Standard library only: the image has no curl. The port is ``$PORT`` (the image's
default listener); ``PANDAPUSH_HEALTHCHECK_URL`` overrides the whole URL for a
server started with another ``--listen``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = "/ready" if argv[1:] == ["ready"] else "/live"
    url = os.environ.get("PANDAPUSH_HEALTHCHECK_URL") or (
        f"http://127.0.0.1:{os.environ.get('PORT', '3000')}{path}"
    )
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        print(f"unhealthy: {url} answered {error.code}: {error.read()[:200]!r}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200 or not isinstance(body, dict):
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
