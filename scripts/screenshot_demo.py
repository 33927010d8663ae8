"""Screenshot of the demo page (``GET /``) classifying a real GTSRB photo, for the README.

Starts the real service (``python -m service``) on a free loopback port over a model repository, opens the
page in Debian's chromium driven by Playwright (``executable_path=/usr/bin/chromium``, never a downloaded
browser), uploads the image through the page's file input, waits for the result and saves a full-page PNG::

    python scripts/screenshot_demo.py                        # <repo>/models, docs/figures/demo_page.png
    python scripts/screenshot_demo.py --models-dir /tmp/models --image path/to/sign.png --out page.png

Needs the ``chromium`` Debian package and the ``playwright`` Python package (no ``playwright install``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GTSRB_DIR = Path(os.environ.get("GTSRB_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "gtsrb"))
CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a quiet, offline, throw-away headless browser (no first-run UI, no background traffic).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class ShotConfig:
    """What to photograph: the repository, the uploaded image, the output PNG, the viewport (CSS px)."""

    models_dir: Path
    image: Path
    out: Path
    width: int = 1200
    height: int = 820
    device_scale: float = 1.0
    timeout_s: float = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(models_dir: Path, log_path: Path, timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m service`` on a free loopback port; return it and its base URL once ready."""
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SERVICE_INTRA_OP_THREADS": "1",
        "SERVICE_LOG_FORMAT": "text",
    }
    models_option = ("--models-dir", str(models_dir))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *models_option],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    stop_service(process)
    raise RuntimeError(f"the service was not ready within {timeout_s} s:\n{log_path.read_text()}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def screenshot(config: ShotConfig) -> dict[str, str]:
    """Serve ``config.models_dir``, classify ``config.image`` on the page and save the page to ``config.out``.

    Returns:
        The top class the page shows (``class_id``, ``name``) and the model (``model``).
    """
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's chromium package")
    with tempfile.TemporaryDirectory(prefix="demo-shot-") as tmp:
        process, url = start_service(config.models_dir, Path(tmp) / "service.log", config.timeout_s)
        try:
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"),
                    executable_path=str(CHROMIUM),
                    headless=True,
                    args=list(CHROMIUM_ARGS),
                    viewport={"width": config.width, "height": config.height},
                    device_scale_factor=config.device_scale,
                    color_scheme="light",
                )
                try:
                    page = context.new_page()
                    page.set_default_timeout(config.timeout_s * 1000)
                    page.goto(f"{url}/")
                    page.wait_for_selector("body[data-state=idle]")
                    page.set_input_files("#file", str(config.image))
                    page.wait_for_selector("body[data-state=done]")
                    top = page.locator("#top-class")
                    shown = {
                        "class_id": str(top.get_attribute("data-class-id")),
                        "name": str(top.locator(".name").get_attribute("title")),
                        "model": page.locator("#model").input_value(),
                    }
                    config.out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(config.out), full_page=True)
                finally:
                    context.close()
        finally:
            stop_service(process)
    return shown


def parse_args(argv: list[str] | None = None) -> ShotConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models", help="model repository")
    parser.add_argument(
        "--image",
        type=Path,
        default=GTSRB_DIR / "test_originals" / "00829.png",
        help="image to upload (default: a GTSRB test photo of a 'Pedestrians' sign, 155x139)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "figures" / "demo_page.png")
    parser.add_argument("--width", type=int, default=1200, help="viewport width, CSS pixels")
    parser.add_argument("--height", type=int, default=820, help="viewport height, CSS pixels")
    parser.add_argument("--device-scale", type=float, default=1.0, help="device pixels per CSS pixel")
    args = parser.parse_args(argv)
    if not (args.models_dir / "DEFAULT").is_file():
        parser.error(f"{args.models_dir} has no DEFAULT model: export a bundle first or pass --models-dir")
    if not args.image.is_file():
        parser.error(f"no image at {args.image}")
    return ShotConfig(args.models_dir, args.image, args.out, args.width, args.height, args.device_scale)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    started = time.perf_counter()
    shown = screenshot(config)
    print(
        f"{config.out}: model {shown['model']}, top class {shown['class_id']} ({shown['name']}) for "
        f"{config.image.name}, {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
