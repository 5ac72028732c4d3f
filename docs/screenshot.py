"""Take docs/viewer.png: the run viewer on a real run with four varying axes, in a real browser.

    python docs/screenshot.py                 # runs the sweep below (tiny_sd, offline) into a temporary folder
    python docs/screenshot.py RUN_DIR         # or shows an existing run folder

Needs Chromium and Playwright (`apt-get install -y chromium fonts-dejavu-core`, `pip install -e '.[test]'`);
set DIFFSWEEP_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
SWEEP = ["sweep.name=four_axes", "sweep.params.height=64", "sweep.params.width=64",
         "sweep.grid.prompt=[a red fox in fresh snow,a lighthouse at dusk]", "sweep.grid.seed=[1,2,3]",
         "+sweep.grid.guidance_scale=[1.0,7.5]", "+sweep.grid.num_inference_steps=[2,8]"]
VIEW = "#x=seed&x2=guidance_scale&y=prompt&y2=num_inference_steps&size=120"


def make_run(root: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "diffsweep", *SWEEP, f"output.root={root}"], check=True,
                          capture_output=True, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", type=Path, help="a run folder (default: run the sweep above)")
    parser.add_argument("--out", type=Path, default=HERE / "viewer.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        run_dir = args.run or make_run(Path(temp) / "runs")
        chromium = os.environ.get("DIFFSWEEP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1120, "height": 700})
            page.goto((run_dir / "index.html").as_uri() + VIEW)
            page.wait_for_selector("#grid .cell img")
            page.wait_for_function("[...document.images].every(i => i.complete)")
            shot = page.screenshot()
            browser.close()
    # 256 colours keep the file small in the repository; the text and cells read the same
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
