"""Headless Chromium for the picture tests: finding it, screenshots, reading PNGs."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
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


def screenshot(chromium: str, html: Path, png: Path, width: int, height: int) -> None:
    """Render ``html`` in headless Chromium into ``png``, ``width`` by ``height`` pixels."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
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
