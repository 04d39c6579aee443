"""Refresh the README's screenshots from a real run: docs/images/asset-graph.png and
docs/images/evaluation-report.png.

1. `mlops demo run` in a throwaway MLOPS_HOME (generated history, data layer, training
   with its gates, staged rollout), then the endpoint it leaves is stopped;
2. the evaluation report that training wrote (reports/evaluation-latest.html), in
   headless Chromium, from its title down to the plots;
3. the Dagster UI (`dagster-webserver`, loopback) over the same instance, so the asset
   graph shows the demo's materializations, every group expanded.

Needs the Debian packages chromium and chromium-driver. The browser and UI helpers are
the ones the UI test uses (tests/test_ui/ui_browser.py). About 4-6 minutes on 2 cores.

    .venv/bin/python scripts/screenshots.py [--days 90] [--rows-per-day 2000] [--out docs/images] [--keep]
    .venv/bin/python scripts/screenshots.py --home <a kept MLOPS_HOME>   # screenshots only
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "test_ui"))

import ui_browser as ui  # noqa: E402

GROUPS = ("ingestion", "warehouse", "features", "training", "deployment", "scoring", "monitoring")
KEY_ASSETS = (
    "training_set",
    "fraud_model_candidate",
    "candidate_evaluation",
    "champion_model",
    "production_endpoint",
    "feature_drift",
)
GRAPH_SIZE = (1600, 1000)
# Twice the pixels, so the small asset names stay legible when the image is opened at full size.
GRAPH_SCALE = 2.0
REPORT_WIDTH = 1200
# The report's per-segment table is long; the README shows everything above it.
REPORT_STOP_AT = "By segment"


def run_demo(home: Path, days: int, rows_per_day: int) -> None:
    port = ui.free_port()
    mlops = str(ui.VENV_BIN / "mlops")
    env = ui.mlops_env(home)
    log = home.parent / "demo.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        result = subprocess.run(
            [mlops, "demo", "run", "--days", str(days), "--rows-per-day", str(rows_per_day), "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The demo leaves its endpoint running (also after a failed rollout): stop it by its PID file.
    subprocess.run(
        [mlops, "serve", "--stop", "--port", str(port)], cwd=REPO_ROOT, env=env, check=False, capture_output=True
    )
    print(f"demo run: exit {result.returncode} after {time.monotonic() - started:.0f} s (log {log})")
    if result.returncode != 0:
        sys.exit(f"the demo failed; see {log}")


def report_screenshot(report: Path, profile: Path, out: Path) -> None:
    with ui.chromium(profile, REPORT_WIDTH, 900) as driver:
        driver.get(report.as_uri())
        # The page is taller than the shot: no scrollbar in the picture.
        driver.execute_script("document.documentElement.style.overflow = 'hidden'")
        height = driver.execute_script(
            "const h = Array.from(document.querySelectorAll('h2')).find(e => e.textContent.startsWith(arguments[0]));"
            "return Math.ceil(h ? h.getBoundingClientRect().top - 8 : document.documentElement.scrollHeight);",
            REPORT_STOP_AT,
        )
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": REPORT_WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        ui.save_png(driver, out)
    print(f"{out}: {REPORT_WIDTH}x{height}, {out.stat().st_size} bytes")


def graph_screenshot(home: Path, work: Path, out: Path) -> None:
    with ui.dagster_webserver(home, work / "webserver.log") as server:
        with ui.chromium(work / "profile-graph", *GRAPH_SIZE, scale=GRAPH_SCALE) as driver:
            ui.open_asset_graph(driver, server.url, GROUPS, KEY_ASSETS)
            ui.fit_graph(driver)
            ui.save_png(driver, out)
    print(f"{out}: {out.stat().st_size} bytes (UI ready after {server.ready_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    parser.add_argument(
        "--home", type=Path, default=None, help="An MLOPS_HOME where the demo already ran: skip the demo."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway MLOPS_HOME (printed) for a look.")
    args = parser.parse_args()
    if ui.browser_binaries() is None:
        sys.exit("chromium / chromedriver not found: install the Debian packages chromium and chromium-driver")

    work = Path(tempfile.mkdtemp(prefix="mlops-screenshots-"))
    home = args.home.resolve() if args.home else work / "home"
    try:
        if args.home is None:
            run_demo(home, args.days, args.rows_per_day)
        report_screenshot(
            home / "reports" / "evaluation-latest.html", work / "profile-report", args.out / "evaluation-report.png"
        )
        graph_screenshot(home, work, args.out / "asset-graph.png")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
