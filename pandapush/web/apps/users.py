"""``POST /apps/<appId>/users/<userId>/terminate_connections`` (added with terminate)."""

from __future__ import annotations

from pandapush.web.apps.api import Route

__all__ = ["ROUTES"]

ROUTES: list[Route] = []
