"""Headless Chromium for the picture tests: finding it, screenshots, reading PNGs, and a
page driven over the DevTools protocol for the live pages."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chromium():
    """The path of a Chromium binary, installing Debian's package when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    problem = ""
    if shutil.which("apt-get"):
        try:
            done = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                capture_output=True,
                text=True,
                timeout=900,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            problem = done.stderr.strip().splitlines()[-1] if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
    else:
        problem = "apt-get is not available"
    found = shutil.which("chromium")
    if found:
        return found
    message = f"Chromium is missing and `apt-get install chromium` failed: {problem}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG, decoded with zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * step
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up = previous[i]
            corner = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % step < 3) for r in rows]


#: The flags every headless Chromium here starts with: no GPU, sandbox, first-run or
#: background work, and no scrollbars in a screenshot.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def screenshot(chromium: str, html: Path, png: Path, width: int, height: int) -> None:
    """Render ``html`` in headless Chromium into ``png``, ``width`` by ``height`` pixels."""
    done = subprocess.run(
        [
            chromium,
            *HEADLESS,
            f"--user-data-dir={png.parent / (png.stem + '-profile')}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    shutil.rmtree(png.parent / (png.stem + "-profile"), ignore_errors=True)
    assert png.exists(), done.stderr[-2000:]


_HAND_OVER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class Browser:
    """Headless Chromium driven over the DevTools protocol, on a pipe.

    Chromium reads commands on its file descriptor 3 and answers on 4
    (``--remote-debugging-pipe``), one JSON message per NUL-terminated line: no driver
    and no websocket client needed. One page (tab) per browser.
    """

    def __init__(self, chromium: str, profile: Path, width: int = 1400, height: int = 1000):
        reads, self._to_chromium = os.pipe()
        self._from_chromium, writes = os.pipe()
        # Above 9, so that handing them over as 3 and 4 cannot overwrite one of them.
        commands, answers = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (reads, writes))
        os.close(reads)
        os.close(writes)
        args = [
            *HEADLESS,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # A small Python hands the pipe to Chromium as its descriptors 3 and 4.
        self._process = subprocess.Popen(
            [sys.executable, "-c", _HAND_OVER, str(commands), str(answers), chromium, *args],
            pass_fds=(commands, answers),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands)
        os.close(answers)
        self._profile = profile
        self._buffer = b""
        self._last_id = 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def send(self, method: str, *, page: bool = False, timeout: float = 60, **params):
        """Run one DevTools command (on the page with ``page``) and return its result."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if page:
            message["sessionId"] = self._session
        os.write(self._to_chromium, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._last_id:
                    assert "error" not in answer, answer["error"]
                    return answer.get("result", {})
            ready, _, _ = select.select([self._from_chromium], [], [], timeout)
            assert ready, f"Chromium did not answer {method} within {timeout} s"
            chunk = os.read(self._from_chromium, 1 << 20)
            assert chunk, "Chromium closed its pipe"
            self._buffer += chunk

    def set_cookie(self, url: str, name: str, value: str) -> None:
        """Give the browser a cookie for ``url`` (a session, to skip the login page)."""
        self.send("Network.setCookie", page=True, url=url, name=name, value=value)

    def open(self, url: str) -> None:
        """Load ``url`` in the page."""
        self.send("Page.navigate", page=True, url=url)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", page=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        """Wait until ``expression`` is true in the page (it polls, the page goes on)."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({expression})"):
            assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
            time.sleep(0.05)

    def screenshot(self, png: Path, selector: str | None = None) -> None:
        """Write the page (or the element ``selector`` matches) to ``png``."""
        params: dict = {"format": "png"}
        if selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({selector!r})"
                ".getBoundingClientRect(); return [r.left + window.scrollX, "
                "r.top + window.scrollY, r.width, r.height]; })()"
            )
            x, y, width, height = box
            params["clip"] = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", page=True, **params)["data"]
        png.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Close Chromium and remove its profile."""
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_chromium)
        os.close(self._from_chromium)
        shutil.rmtree(self._profile, ignore_errors=True)
