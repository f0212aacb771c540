"""A headless Chromium driven over the DevTools protocol (CDP), for the tests that look at a page.

Debian's ``chromium`` (scripts/setup-host.sh --for-tests installs it); no Playwright or Selenium:
a few CDP calls over aiohttp's websocket client are all the tests need — open a URL, evaluate
JavaScript until the page shows what is expected (polled with a deadline), take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import aiohttp

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--mute-audio", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """``async with Browser(url) as page``: a Chromium showing ``url``."""

    def __init__(self, url: str, width: int = 1280, height: int = 900) -> None:
        self.url = url
        self.size = (width, height)
        self._tmp = tempfile.TemporaryDirectory(prefix="pylog-chromium-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.stderr = Path(self._tmp.name) / "stderr.log"

    async def __aenter__(self) -> Self:
        binary = chromium_binary()
        assert binary, "chromium is not installed (scripts/setup-host.sh --for-tests)"
        profile = Path(self._tmp.name) / "profile"
        with open(self.stderr, "wb") as err:  # noqa: ASYNC230 - a test helper, at start only
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={self.size[0]},{self.size[1]}", self.url],
                stdout=subprocess.DEVNULL, stderr=err)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.stderr.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.05)  # polling for the port file, bounded by the deadline
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        page_ws = None
        while page_ws is None:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json(content_type=None)
            page_ws = next((t["webSocketDebuggerUrl"] for t in targets
                            if t.get("type") == "page"), None)
            if page_ws is None:
                assert time.monotonic() < deadline, f"no page target: {targets}"
                await asyncio.sleep(0.05)  # the page target appears shortly after the port
        self._ws = await self._session.ws_connect(page_ws, max_msg_size=64 << 20)
        await self.call("Emulation.setDeviceMetricsOverride", width=self.size[0],
                        height=self.size[1], deviceScaleFactor=1, mobile=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._tmp.cleanup()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), 60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection: {msg.type} {msg.data!r}")
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. Polls with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"the page never showed: {expression}"
            await asyncio.sleep(0.1)  # polling the page, bounded by the deadline

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))

    async def dom(self) -> str:
        return str(await self.evaluate("document.documentElement.outerHTML"))
