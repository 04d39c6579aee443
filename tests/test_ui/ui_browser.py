"""A real Dagster UI on loopback and a headless Chromium to look at it.

Shared by tests/test_ui/test_asset_graph_ui.py and scripts/screenshots.py:

- `dagster_webserver(home, log)` prepares MLOPS_HOME with `mlops prepare` (the instance
  profile copied into DAGSTER_HOME, the dbt manifest), starts `dagster-webserver` for
  workspace.yaml on 127.0.0.1 in a session of its own, waits until the code location is
  loaded and stops the whole process group by PID at the end;
- `chromium(profile_dir)` is a headless Chromium driven through /usr/bin/chromedriver
  with a fresh profile;
- `open_asset_graph` / `fit_graph` / `graph_labels` / `asset_checks` know the routes and
  the few page elements of dagster-webserver 1.13 the checks rely on.

Every wait is an explicit, bounded WebDriverWait or deadline loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlops_core.serving.server import free_port
from mlops_core.warm_dbt import SOCKET_DIR_ENV  # the session's warm dbt server, stopped by the session

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOCATION = "mlops_assets"

# The code location imports dagster, dbt, mlflow and xgboost: about 10 s on 2 busy cores.
UI_READY_TIMEOUT_S = 90.0
PAGE_TIMEOUT_S = 30.0

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

_LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


class UIError(RuntimeError):
    """The UI or the browser did not come up; the message carries the log tail."""


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) from the Debian packages chromium and chromium-driver, or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def mlops_env(home: Path) -> dict[str, str]:
    """The environment of a project whose every path lives under `home` (as `mlops` resolves it)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("MLOPS_") and k != "DAGSTER_HOME") or k == SOCKET_DIR_ENV
    }
    env.update(
        MLOPS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster_home"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _stop_group(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group (webserver and its code server), SIGKILL what is left after the timeout."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@dataclass(frozen=True)
class RunningUI:
    url: str
    pid: int
    ready_s: float
    log: Path


def _wait_until_loaded(proc: subprocess.Popen, base_url: str, log: Path, started: float) -> None:
    """Until /server_info answers and the code location reports LOADED without a load error."""
    deadline = started + UI_READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UIError(f"dagster-webserver exited {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
                response.read()
            entries = _graphql(base_url, _LOCATION_STATUS)["data"]["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError, ValueError) as err:
            last = repr(err)
            time.sleep(0.5)
            continue
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        last = json.dumps(entry)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise UIError(f"code location {LOCATION} failed to load: {loaded.get('message')}\n{_tail(log)}")
            return
        time.sleep(0.5)
    raise UIError(f"code location not loaded after {UI_READY_TIMEOUT_S:.0f} s (last: {last}):\n{_tail(log)}")


def prepare_home(home: Path) -> None:
    """`mlops prepare`: DAGSTER_HOME with the repo's dagster.yaml, and the dbt manifest the code location reads."""
    result = subprocess.run(
        [str(VENV_BIN / "mlops"), "prepare"],
        cwd=REPO_ROOT,
        env=mlops_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise UIError(f"mlops prepare failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@contextlib.contextmanager
def dagster_webserver(home: Path, log: Path) -> Iterator[RunningUI]:
    """`dagster-webserver -w workspace.yaml` on 127.0.0.1 for the project under `home` (no daemon)."""
    prepare_home(home)
    port = free_port()
    cmd = [
        str(VENV_BIN / "dagster-webserver"),
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=mlops_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_loaded(proc, base_url, log, started)
        yield RunningUI(base_url, proc.pid, time.monotonic() - started, log)
    finally:
        _stop_group(proc)


@contextlib.contextmanager
def chromium(profile_dir: Path, width: int = 1600, height: int = 1000, scale: float = 1.0) -> Iterator:
    """A headless Chromium whose viewport is exactly width x height CSS pixels (PNG: times `scale`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = browser_binaries()
    if binaries is None:
        raise UIError("chromium or chromedriver not found (Debian packages chromium and chromium-driver)")
    chromium_bin, driver_bin = binaries
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_bin
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    # Selenium Manager must not try to download a driver or a browser.
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(
            service=Service(driver_bin, log_output=str(profile_dir.parent / "chromedriver.log")), options=options
        )
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT_S)
        # --window-size includes browser chrome; this pins the page's viewport itself.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


# --- pages of dagster-webserver 1.13 -------------------------------------------------

GRAPH_SVG = "svg[class*='AssetGraphExplorer_svgContainer']"
VIEWPORT = "[data-svg-viewport]"
SKIP_BUTTON = "//button[normalize-space()='Skip']"
HIDE_NAVIGATION = "//button[normalize-space()='Hide navigation']"
# The asset sidebar's toggle sits right after the "Jump to…" box.
SIDEBAR_TOGGLE = "//input[@placeholder='Jump to…']/following::button[1]"
# The toolbar (search, "Materialize all…") floats over the top of the graph's viewport.
TOOLBAR_BUTTON = "//button[contains(normalize-space(.), 'Materialize all')]"
CHECK_ROW = "//*[contains(@class, 'AssetChecks_checkRow')]"


def _wait(driver, timeout: float = PAGE_TIMEOUT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2)


def graph_labels(driver) -> list[str]:
    """Every line of text the asset graph draws: group headers and asset names."""
    return driver.execute_script(
        "const svg = document.querySelector(arguments[0]);"
        "if (!svg) return [];"
        "return Array.from(svg.querySelectorAll('foreignObject'))"
        "  .flatMap(f => Array.from(f.children)).flatMap(c => (c.innerText || '').split('\\n'))"
        "  .map(s => s.trim()).filter(s => s);",
        GRAPH_SVG,
    )


def label_shows(label: str, name: str) -> bool:
    """True if a graph label is `name`, or `name` middle-truncated ("candid…_evaluation") at low zoom."""
    if label == name:
        return True
    head, ellipsis, tail = label.partition("…")
    return bool(ellipsis) and len(label) <= len(name) and name.startswith(head) and name.endswith(tail)


def missing_names(labels: list[str], names: tuple[str, ...] | list[str]) -> list[str]:
    return [name for name in names if not any(label_shows(label, name) for label in labels)]


def dismiss_first_visit_popup(driver, timeout: float = 10.0) -> bool:
    """Click Skip on the "Join the Dagster community" pop-up a fresh DAGSTER_HOME shows; False if none came."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    try:
        button = _wait(driver, timeout).until(EC.element_to_be_clickable((By.XPATH, SKIP_BUTTON)))
    except TimeoutException:
        return False
    button.click()
    _wait(driver).until(EC.invisibility_of_element_located((By.XPATH, SKIP_BUTTON)))
    return True


def _wait_for_labels(driver, names: tuple[str, ...], what: str, timeout: float = PAGE_TIMEOUT_S) -> list[str]:
    from selenium.common.exceptions import TimeoutException

    seen: list[str] = []

    def all_drawn(d) -> list[str] | bool:
        nonlocal seen
        seen = graph_labels(d)
        return seen if not missing_names(seen, names) else False

    try:
        return _wait(driver, timeout).until(all_drawn)
    except TimeoutException as err:
        raise UIError(f"asset graph never drew {what} {missing_names(seen, names)}; labels seen: {seen}") from err


def open_asset_graph(driver, base_url: str, groups: tuple[str, ...], assets: tuple[str, ...]) -> tuple[list[str], bool]:
    """The global asset graph with every group expanded and the graph alone on screen.

    Returns the graph's labels once all `groups` and `assets` are drawn, and whether the
    first-visit pop-up was dismissed.
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    driver.get(f"{base_url}/asset-groups")
    # Collapsed groups first: the graph has loaded once their boxes are drawn.
    _wait_for_labels(driver, groups, "the groups")
    popup = dismiss_first_visit_popup(driver)
    # Navigation and asset sidebar hidden before expanding, so the new layout is fitted
    # to the full width (the graph re-fits itself only when its layout changes).
    _wait(driver).until(EC.element_to_be_clickable((By.XPATH, HIDE_NAVIGATION))).click()
    _wait(driver).until(EC.element_to_be_clickable((By.XPATH, SIDEBAR_TOGGLE))).click()
    _wait(driver).until(EC.invisibility_of_element_located((By.XPATH, "//input[@placeholder='Jump to…']")))
    # ⌥E is the graph's "Expand all groups".
    ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    # The graph draws only what is on screen: once it grew past the viewport (champion_hourly_watch and
    # estimated_performance), a group at its edge was never drawn until the graph was fitted.
    _wait_for_labels(driver, assets[:1], "the first asset")
    fit_graph(driver)
    labels = _wait_for_labels(driver, groups + assets, "the groups and assets")
    return labels, popup


def _graph_geometry(driver) -> dict:
    """The drawn graph's box and the part of the viewport not covered by the toolbar, in CSS pixels."""
    return driver.execute_script(
        "const g = document.querySelector(arguments[0]).getBoundingClientRect();"
        "const v = document.querySelector(arguments[1]).getBoundingClientRect();"
        "const bar = document.evaluate(arguments[2], document, null, 9, null).singleNodeValue.getBoundingClientRect();"
        "return {graph: g.toJSON(), area: {left: v.left, right: v.right, top: bar.bottom + 4, bottom: v.bottom}};",
        GRAPH_SVG,
        VIEWPORT,
        TOOLBAR_BUTTON,
    )


def _overflows(geometry: dict) -> bool:
    g, a = geometry["graph"], geometry["area"]
    return g["top"] < a["top"] or g["bottom"] > a["bottom"] or g["left"] < a["left"] or g["right"] > a["right"]


def _wheel(driver, element, delta_x: int, delta_y: int) -> None:
    """One wheel event over `element`, then wait until the graph's transform has changed and settled."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    def transform(d) -> str:
        return d.find_element(By.CSS_SELECTOR, GRAPH_SVG).find_element(By.XPATH, "..").get_attribute("style")

    before = transform(driver)
    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(element), delta_x, delta_y).perform()
    last = [before]

    def settled(d) -> bool:
        now = transform(d)
        done = now != before and now == last[0]
        last[0] = now
        return done

    _wait(driver, 10).until(settled)


def fit_graph(driver, max_steps: int = 30) -> int:
    """Center the graph in the free area and zoom out in 5% steps (bounded) until all of it shows.

    The graph fits itself to the viewport's width, but the toolbar floats over the top of
    the viewport and a tall graph overflows. A wheel over the zoom slider zooms about the
    viewport's center by 1% per pixel of delta; a wheel over the graph pans it by 0.7 px
    per pixel. Returns the zoom steps taken.
    """
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.CSS_SELECTOR, VIEWPORT)
    zoom_control = driver.find_element(By.CSS_SELECTOR, "[data-zoom-control]")
    for step in range(max_steps + 1):
        geometry = _graph_geometry(driver)
        g, a = geometry["graph"], geometry["area"]
        dx = (a["left"] + a["right"]) / 2 - (g["left"] + g["right"]) / 2
        dy = (a["top"] + a["bottom"]) / 2 - (g["top"] + g["bottom"]) / 2
        if abs(dx) > 2 or abs(dy) > 2:
            _wheel(driver, viewport, round(-dx / 0.7), round(-dy / 0.7))
            geometry = _graph_geometry(driver)
        if not _overflows(geometry):
            return step
        if step < max_steps:
            _wheel(driver, zoom_control, 0, 5)
    raise UIError(f"the asset graph still overflows the viewport after {max_steps} zoom steps: {geometry}")


def asset_checks(driver, base_url: str, asset: str, expected: int) -> dict[str, str]:
    """The Checks tab of an asset page: {check name: the page's text with that check selected}."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    driver.get(f"{base_url}/assets/{asset}?view=checks")
    header = f"Checks ({expected})"
    try:
        _wait(driver).until(EC.presence_of_element_located((By.XPATH, f"//*[normalize-space(.)='{header}']")))
        rows = _wait(driver).until(
            lambda d: len(d.find_elements(By.XPATH, CHECK_ROW)) >= expected and d.find_elements(By.XPATH, CHECK_ROW)
        )
    except TimeoutException as err:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise UIError(f"no '{header}' with {expected} rows on the checks page of {asset}:\n{body[:2000]}") from err
    names = [row.find_element(By.XPATH, ".//*[@title]").get_attribute("title") for row in rows]
    details: dict[str, str] = {}
    for name in names:
        driver.find_element(By.XPATH, f"{CHECK_ROW}[.//*[@title='{name}']]").click()
        # The detail pane shows the selected check's name as its title, outside the list.
        title = f"//*[normalize-space(text())='{name}' and not(ancestor::*[contains(@class, 'checkRow')])]"
        _wait(driver).until(EC.presence_of_element_located((By.XPATH, title)))
        details[name] = driver.find_element(By.TAG_NAME, "body").text
    return details


def save_png(driver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise UIError(f"screenshot to {path} failed")
    return path
