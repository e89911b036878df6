"""Debian's chromium, headless, driven by Playwright for Python (never a downloaded browser)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Screenshots of browser tests land here (git-ignored), kept as test artifacts.
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@asynccontextmanager
async def chromium(width: int = 1366, height: int = 768) -> AsyncIterator[BrowserContext]:
    """A browser context on a new, empty user-data-dir, removed afterwards."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium"
    profile = tempfile.mkdtemp(prefix="salespulse-chromium-")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)
