"""Browser tests' pages and their Playwright support (see ``support.py``)."""
