"""Headless Chromium screenshots of the HTML reports (skipped when Chromium is not installed).

Screenshots go to ``$KBS_SCREENSHOT_DIR`` when it is set (so a person can look
at them), else to ``build/test-artifacts``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"


def screenshot_dir() -> Path:
    """Where screenshots are written: ``$KBS_SCREENSHOT_DIR`` or ``build/test-artifacts``."""
    return Path(os.environ.get("KBS_SCREENSHOT_DIR") or ARTIFACTS)


def screenshot(html_path: str | os.PathLike, name: str, *, size: str = "1200,1600") -> Path:
    """Renders ``html_path`` in headless Chromium; returns the PNG (skips without Chromium)."""
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed (apt-get install -y chromium); the headless render check is skipped"
        )
    out = screenshot_dir()
    out.mkdir(parents=True, exist_ok=True)
    shot = out / name
    if shot.exists():
        shot.unlink()
    profile_dir = Path(html_path).parent / f"chromium-profile-{Path(name).stem}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        f"--window-size={size}",
        f"--screenshot={shot}",
        Path(html_path).resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return shot


def pixels(png: Path) -> np.ndarray:
    """The screenshot as an ``(h, w, 3)`` uint8 array."""
    from PIL import Image

    with Image.open(png) as img:
        return np.asarray(img.convert("RGB"))


def colour_pixels(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of ``rgb`` on every channel."""
    diff = np.abs(image.astype(np.int16) - np.array(rgb, dtype=np.int16))
    return int((diff <= tolerance).all(axis=-1).sum())


def dump_dom(html_path: str | os.PathLike) -> str:
    """The page's DOM after its scripts ran, serialized by headless Chromium (skips without it)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile_dir = Path(html_path).parent / "chromium-profile-dom"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        "--dump-dom",
        Path(html_path).resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
