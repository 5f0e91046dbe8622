"""Full-page screenshot of an `mrl-report` page, rendered by headless Chromium.

    python experiments/report_screenshot.py REPORT_DIR_OR_INDEX_HTML [--out PNG] [--width 1280]

Renders the page at `--width` CSS pixels and saves one PNG of the whole page (default:
`$MRL_OUTPUT_ROOT/report/<the page's folder name>/screenshot.png`, `$MRL_OUTPUT_ROOT` defaulting
to `outputs`: beside a page that `mrl-report` wrote where it writes by default; the committed
`experiments/results/report/screenshot.png` only when `--out` names it). Chromium cannot measure
a page's height from the command line, so the height is estimated from the page (its figures'
sizes at that width and its text), and the blank rows below the page are cut from the PNG. Exits
with status 2 and one line when no Chromium (or Chrome) is installed.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The page's column: `max-width` of its body in `mrl.report.html`.
PAGE_WIDTH = 1250
_IMAGE = re.compile(r'src="data:image/png;base64,([^"]+)"')
_TAG = re.compile(r"<[^>]+>")


def find_browser() -> str | None:
    """The first Chromium or Chrome on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG from its header."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def estimate_height(page: str, width: int) -> int:
    """A generous height in CSS pixels for the whole page at `width`: each figure scaled to the
    column, plus the rows of text and tables (the screenshot is cropped afterwards)."""
    column = min(width, PAGE_WIDTH) - 32
    height = 0
    for encoded in _IMAGE.findall(page):
        w, h = _png_size(base64.b64decode(encoded[:64] + "=" * (-len(encoded[:64]) % 4)))
        height += round(h * min(1.0, column / w)) if w else 0
    text = _IMAGE.sub("", page)
    closed = text.split("<details")
    # Text inside folded <details> is not shown: count only what lies outside them.
    visible = closed[0] + "".join(part.split("</details>", 1)[-1] for part in closed[1:])
    rows = visible.count("<tr") + visible.count("<li") + visible.count("<p") + visible.count("<h")
    return height + 40 * rows + 600


def crop_blank_bottom(path: Path, margin: int = 24) -> None:
    """Cut the rows of the page's background colour below the last content, keeping `margin`."""
    from PIL import Image, ImageChops

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    background = rgb.getpixel((rgb.width - 1, rgb.height - 1))
    diff = Image.new("RGB", rgb.size, background)
    box = ImageChops.difference(rgb, diff).getbbox()
    if box is None:
        return
    bottom = min(rgb.height, box[3] + margin)
    buffer = io.BytesIO()
    # 256 colours: the page is text and flat-coloured plots, and the file stays small.
    cropped = rgb.crop((0, 0, rgb.width, bottom)).quantize(colors=256, dither=Image.Dither.NONE)
    cropped.save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())


def screenshot(page: Path, out: Path, width: int = 1280, browser: str | None = None) -> Path:
    """Render `page` (an HTML file) in headless Chromium and save a full-page PNG at `out`."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium")
    height = estimate_height(page.read_text(), width)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--user-data-dir={profile}",
            f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=180)
    crop_blank_bottom(out)
    return out


def default_out(page: Path) -> Path:
    """`<output root>/report/<the page's folder name>/screenshot.png`: beside the page where
    `mrl-report` writes by default."""
    from mrl.report.paths import output_root

    return output_root() / "report" / (page.parent.resolve().name or "root") / "screenshot.png"


def main(argv: list[str] | None = None) -> int:
    """Command line: one line printed; 0 on success, 2 without Chromium or without the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report folder (its index.html) or a page")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: "
                        "$MRL_OUTPUT_ROOT/report/<page's folder>/screenshot.png)")  # fmt: skip
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    args = parser.parse_args(argv)
    page = args.report / "index.html" if args.report.is_dir() else args.report
    if not page.is_file():
        print(f"report_screenshot: no report page at {page} (run mrl-report first)")
        return 2
    browser = find_browser()
    if browser is None:
        print(
            "report_screenshot: no Chromium found (tried " + ", ".join(BROWSERS) + "); install "
            "it, e.g. `apt-get install chromium`"
        )
        return 2
    out = args.out or default_out(page)
    screenshot(page, out, args.width, browser)
    print(f"report_screenshot: wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
