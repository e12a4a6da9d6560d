"""
Tests that need a tool the machine may lack (Node, Chromium, Ruby...): skipped, or failed in CI.

``run-tests`` sets ``PANDAPUSH_E2E_REQUIRED=1``: there a missing tool is a failure, so a
broken set-up cannot pass as a run where everything was skipped.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

from twisted.trial.unittest import SkipTest

__all__ = ["missing", "requireExecutable"]


def missing(reason: str) -> NoReturn:
    """Skip, or fail when ``PANDAPUSH_E2E_REQUIRED=1`` (``run-tests`` sets it)."""
    if os.environ.get("PANDAPUSH_E2E_REQUIRED") == "1":
        raise AssertionError(reason + " (PANDAPUSH_E2E_REQUIRED=1)")
    raise SkipTest(reason)


def requireExecutable(name: str, install: str) -> str:
    """The path of ``name`` on PATH; else skip (or fail), saying how to ``install`` it."""
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed ({install})")
    return found
