"""Browser tests of the ``/admin`` console (headless Chromium, Playwright)."""
