"""What the dashboard's browser tests share: the dashboard served on a free port, a headless
Chromium (Debian's, driven by Playwright), a tab that records console errors, and where the
screenshots are kept (said at the end of the run)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (apt-get install chromium; .ci/run installs it)",
)


def shots_folder() -> Path:
    """``$CONVEYOR_TEST_ARTIFACTS/dashboard`` when set (CI keeps that folder), else
    ``tests/dashboard/artifacts/`` (ignored by git), emptied at the start of each run."""
    base = os.environ.get("CONVEYOR_TEST_ARTIFACTS")
    return Path(base) / "dashboard" if base else HERE / "artifacts"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    folder = shots_folder()
    pictures = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if pictures:
        terminalreporter.write_sep("-", "dashboard screenshots")
        terminalreporter.write_line(f"{len(pictures)} screenshots in {folder}:")
        terminalreporter.write_line(", ".join(p.stem for p in pictures))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(config: Any, token: str | None) -> Iterator[str]:
    """The dashboard on uvicorn in a thread of this process, on a free loopback port."""
    import uvicorn

    from conveyor.dashboard.app import Dashboard

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Dashboard(config, token=token),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def warm(site: str, path: str) -> dict[str, Any]:
    """An environment's monitoring page (its JSON twin) once none of its earlier windows is
    still being computed by the dashboard's worker: the page reloads itself until then."""
    import httpx

    head, sep, query = path.partition("?")
    deadline = time.monotonic() + 120
    while True:
        page = httpx.get(f"{site}{head}.json{sep}{query}", timeout=60).json()
        if page["computing"] == 0 or time.monotonic() > deadline:
            return dict(page)
        time.sleep(0.2)


@pytest.fixture(scope="session")
def shots() -> Path:
    folder = shots_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):  # a run's pictures only, never a stale one beside them
        old.unlink()
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Tab:
    """A browser page that records console errors, failed requests and HTTP errors."""

    def __init__(self, browser: Any, base: str, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.base, self.shots = base, shots
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str, *, status: int = 200, shot: str | None = None) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response)
        if shot:
            self.page.screenshot(path=str(self.shots / f"{shot}.png"), full_page=True)
        return response

    def close(self) -> None:
        self.context.close()
