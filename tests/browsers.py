"""A real browser for the console's tests: Debian's Chromium, driven by Playwright's Python package.

Playwright's own browser downloads are not possible on every machine (CI here has no route to
them), so the tests launch the distribution's Chromium. Where it is missing and the suite runs
as root with apt-get (CI, a fresh container), it is installed once (package ``chromium``); set
``MQ_TEST_INSTALL_CHROMIUM=0`` to forbid that. Elsewhere the browser tests skip, saying why.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

CANDIDATES = ("chromium", "chromium-browser")
APT_TIMEOUT = 900


def _found() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install() -> str | None:
    """apt-get install chromium: None when it worked, else why not."""
    if os.environ.get("MQ_TEST_INSTALL_CHROMIUM") == "0":
        return "MQ_TEST_INSTALL_CHROMIUM=0 forbids installing it"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "installing it needs apt-get, as root: apt-get install chromium"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    for attempt in (install, ["apt-get", "update", "-q"], install):
        result = subprocess.run(attempt, capture_output=True, text=True, timeout=APT_TIMEOUT, env=environment)
        if result.returncode == 0 and attempt is install and _found():
            return None
    return f"apt-get install chromium failed: {result.stderr.strip().splitlines()[-1:]}"


@functools.cache
def chromium() -> tuple[str | None, str | None]:
    """(the Chromium executable, None) or (None, why the browser tests cannot run)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "Playwright is not installed: pip install -e '.[test]'"
    path = _found()
    if path is None:
        why = _install()
        path = _found()
        if path is None:
            return None, f"no Chromium on this machine ({why})"
    return path, None
