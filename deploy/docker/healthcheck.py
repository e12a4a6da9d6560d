#!/usr/bin/env python3
"""
The container's HEALTHCHECK: exit 0 when pandapush answers ``GET /health_check.json``
with 200 and a JSON object, 1 otherwise (the reason on stderr).

Standard library only: the image has no curl. The port is ``$PORT`` (the image's
default listener); ``PANDAPUSH_HEALTHCHECK_URL`` overrides the whole URL for a
server started with another ``--listen``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("PANDAPUSH_HEALTHCHECK_URL") or (
        f"http://127.0.0.1:{os.environ.get('PORT', '3000')}/health_check.json"
    )
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
            body = json.loads(response.read())
    except Exception as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200 or not isinstance(body, dict):
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
