"""The status page in a real browser: headless Chromium renders it, light and dark.

Skipped (saying why) when Debian's `chromium` is not installed, unless
POOLGATE_REQUIRE_CHROMIUM=1 (CI installs it and sets that). With
POOLGATE_WRITE_SCREENSHOTS=1 the screenshots are also written to docs/, which is
how the README's picture is made.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from status_helpers import busy_gateway

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("POOLGATE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("POOLGATE_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI runs this test")
    return CHROMIUM


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *QUIET_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90,
    )


def test_chromium_renders_the_families_their_waits_and_the_charts(start_gateway, chromium, tmp_path):
    gateway = busy_gateway(start_gateway, SERVER_TITLE="Friends' proxy")
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", gateway.url + "/")
    dom = result.stdout
    assert "<h1>Friends' proxy</h1>" in dom, result.stderr[-2000:]
    for family, wait in (("gpt-4o", "42 sec"), ("claude-sonnet", "1 min 35 sec"), ("turbo", "no wait")):
        assert f'<tr data-family="{family}">' in dom
        row = dom.split(f'<tr data-family="{family}">', 1)[1].split("</tr>", 1)[0]
        assert wait in row
        assert 'class="wait-chart"' in row
    gpt4o_row = dom.split('<tr data-family="gpt-4o">', 1)[1].split("</tr>", 1)[0]
    assert "<polyline" in gpt4o_row, "the recent waits are drawn"


def test_the_page_has_a_light_and_a_dark_look(start_gateway, chromium, tmp_path):
    gateway = busy_gateway(start_gateway, SERVER_TITLE="Friends' proxy", PUBLIC_URL="https://proxy.example.org")
    shots = {}
    for look, extra in (("light", ()), ("dark", ("--force-dark-mode",))):
        shot = tmp_path / f"status-{look}.png"
        run_chromium(chromium, tmp_path / f"profile-{look}", *extra, f"--screenshot={shot}",
                     "--window-size=1200,1400", gateway.url + "/")
        assert shot.is_file() and shot.stat().st_size > 20_000, f"{look} screenshot is missing or blank"
        shots[look] = shot
    assert sum(_top_left_pixel(shots["light"])) > 600, "light background"
    assert sum(_top_left_pixel(shots["dark"])) < 150, "dark background from the visitor's system setting"
    if os.environ.get("POOLGATE_WRITE_SCREENSHOTS") == "1":
        shutil.copy(shots["light"], ROOT / "docs" / "status-page.png")
        shutil.copy(shots["dark"], ROOT / "docs" / "status-page-dark.png")


def _top_left_pixel(png: Path) -> tuple[int, int, int]:
    """The first pixel of an 8-bit RGB(A) PNG: enough to tell a light page from a dark one.

    Whatever filter the first scanline uses, its first pixel is stored as is.
    """
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, color_type = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            bit_depth, color_type = chunk[8], chunk[9]
            assert bit_depth == 8 and color_type in (2, 6)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    r, g, b = raw[1:4]
    return r, g, b
