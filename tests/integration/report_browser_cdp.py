"""Load a page in headless Chromium over the DevTools protocol, with the standard library only.

Chromium's ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a NUL byte)
on file descriptor 3 and writes its replies and events on descriptor 4, so no websocket client
and no TCP port are needed. ``render_page`` returns what a test checks: console errors and
uncaught exceptions, every network request and failure, the boxes of chosen elements, and a
full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclasses.dataclass
class PageReport:
    console_errors: list[str]
    exceptions: list[str]
    requests: list[str]
    failed_requests: list[str]
    boxes: list[dict[str, Any]]
    screenshot_png: bytes
    page_size: tuple[float, float]
    horizontal_overflow_px: float


class DevToolsPipe:
    """A Chromium process and the two pipes the DevTools protocol runs over."""

    def __init__(self, chromium: str, user_data_dir: Path, timeout_s: float = 60.0) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Move the child's ends above 9 so the redirections below cannot clobber them.
        for name in ("to_browser_r", "from_browser_w"):
            low = locals()[name]
            high = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(low)
            if name == "to_browser_r":
                to_browser_r = high
            else:
                from_browser_w = high
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={user_data_dir}",
            "about:blank",
        ]
        # bash puts our pipe ends on descriptors 3 and 4, where Chromium expects them.
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, chromium, *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._write = to_browser_w
        self._read = from_browser_r
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.deadline = time.monotonic() + timeout_s

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._read], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"Chromium closed the DevTools pipe: {stderr[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)  # type: ignore[no-any-return]

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            reply = self._receive()
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == method:
                    return reply

    def drain(self, seconds: float) -> None:
        """Collect events for a little while (late console messages, failed loads)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self._read], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                break
            self._buffer += chunk
            while b"\0" in self._buffer:
                message, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(message)
                if "method" in reply:
                    self.events.append(reply)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError, ValueError):
            self.send("Browser.close")
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()


BOXES_JS = """JSON.stringify(Array.from(document.querySelectorAll(%s)).map(function (e) {
  var r = e.getBoundingClientRect(); var owner = e.closest('[id]');
  return {id: owner ? owner.id : null, tag: e.tagName.toLowerCase(), width: r.width, height: r.height};
}))"""


def render_page(
    html_path: Path, chromium: str, selector: str, width: int = 1400, timeout_s: float = 90.0
) -> PageReport:
    """Open ``html_path`` as a person would and report what went wrong and what was drawn."""
    url = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="edgeq-chromium-") as profile_dir:
        browser = DevToolsPipe(chromium, Path(profile_dir), timeout_s)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                browser.send(f"{domain}.enable", session=session)
            browser.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            browser.events.clear()  # only what the report page itself does counts
            browser.send("Page.navigate", {"url": url}, session=session)
            browser.wait_for("Page.loadEventFired")
            browser.drain(0.5)
            boxes_json = browser.send(
                "Runtime.evaluate",
                {"expression": BOXES_JS % json.dumps(selector), "returnByValue": True},
                session=session,
            )["result"]["value"]
            overflow = browser.send(
                "Runtime.evaluate",
                {"expression": "document.documentElement.scrollWidth - window.innerWidth", "returnByValue": True},
                session=session,
            )["result"]["value"]
            metrics = browser.send("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            page_w, page_h = float(size["width"]), float(size["height"])
            shot = browser.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": page_w, "height": page_h, "scale": 1},
                },
                session=session,
            )
            browser.drain(0.2)
        finally:
            browser.close()
    console_errors, exceptions, requests, failed = [], [], [], []
    for event in browser.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            console_errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            requests.append(params.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed":
            failed.append(f"{params.get('errorText')} ({params.get('blockedReason', '')})")
    return PageReport(
        console_errors=console_errors,
        exceptions=exceptions,
        requests=requests,
        failed_requests=failed,
        boxes=json.loads(boxes_json),
        screenshot_png=base64.b64decode(shot["data"]),
        page_size=(page_w, page_h),
        horizontal_overflow_px=float(overflow),
    )
