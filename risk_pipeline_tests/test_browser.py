"""What a user sees in the Dagster UI, read with Debian's headless chromium through the DevTools protocol.

A small warehouse (one session, three synthetic underlyings: market data to portfolio_greeks, then a
vol_surfaces run whose blocking RMSE check fails) is built into a temporary Dagster home; ``dg dev``
serves it on loopback and chromium opens the pages. Skipped when chromium is absent, except under
``CI=true`` (``.ci/run`` installs it with apt), where it must run.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from risk_pipeline.definitions import build_definitions
from risk_pipeline.paths import PROJECT_ROOT
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SESSION = "2026-11-20"
UNDERLYINGS = 3
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install -y chromium); CI installs it and runs this test",
)
SMALL_RUN = [
    "market_prices",
    "option_quotes",
    "rates_curve",
    "dividend_yields",
    "event_calendar",
    "positions",
    "implied_vols",
    "vol_surface",
    "vol_surface_grid",
    "position_greeks",
    "portfolio_greeks",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=5).read()
            return
        time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started here in its own session, and every child left in that process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # dg dev's code servers and daemon may outlive a SIGTERM
    proc.wait(timeout=30)


def _small_warehouse(home: Path, warehouse: str, exports: str) -> set[str]:
    """Materialize one session up to portfolio_greeks, then fail vol_surface's blocking RMSE check; the groups."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    defs = build_definitions(
        {
            "warehouse": WarehouseResource(url=warehouse),
            "market_data": MarketDataResource(kind="synthetic", n_underlyings=UNDERLYINGS),
            "exports": ExportsResource(root=exports),
        },
        executor=dg.in_process_executor,
    )
    instance = dg.DagsterInstance.from_config(str(home))
    job = defs.resolve_implicit_global_asset_job_def()
    ok = job.execute_in_process(
        instance=instance,
        partition_key=SESSION,
        asset_selection=[dg.AssetKey(k) for k in SMALL_RUN],
        run_config={"ops": {"vol_surfaces": {"config": {"workers": 1}}}},
    )
    assert ok.success
    failed = job.execute_in_process(
        instance=instance,
        partition_key=SESSION,
        asset_selection=[dg.AssetKey("vol_surface"), dg.AssetKey("vol_surface_grid")],
        run_config={"ops": {"vol_surfaces": {"config": {"workers": 1, "max_rmse_vol_points": 1e-6}}}},
        raise_on_error=False,
    )
    assert not failed.success
    return {n.group_name for n in defs.resolve_asset_graph().asset_nodes if n.group_name}


class Page:
    """One chromium tab driven through the Chrome DevTools protocol (websocket)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=None, open_timeout=30)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.js("document.body ? document.body.innerText : ''") or ""
        raise AssertionError(f"page never showed {what}; it shows: {' '.join(text.split())[:2000]}")

    def text(self) -> str:
        return " ".join((self.js("document.body.innerText") or "").split())

    def show_markdown(self, metadata_key: str) -> None:
        """Click the "[Show Markdown]" of the metadata row ``metadata_key`` (opens the rendered markdown)."""
        clicked = self.js(
            "(() => { for (const row of document.querySelectorAll('tr')) {"
            f"  if (!row.innerText.includes({json.dumps(metadata_key)})) continue;"
            "  const el = [...row.querySelectorAll('button, a, span, div')]"
            "    .find((e) => e.children.length === 0 && e.innerText.includes('Show Markdown'));"
            "  if (el) { el.click(); return true; } }"
            "  return false; })()"
        )
        assert clicked, f"no [Show Markdown] next to {metadata_key}"

    def close(self) -> None:
        self._ws.close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Page, set[str]]]:
    if CHROMIUM is None:
        pytest.fail("CI=true needs Debian's chromium: .ci/run installs it (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("ui")
    home, warehouse, exports = root / "home", str(root / "warehouse.duckdb"), str(root / "exports")
    home.mkdir()
    groups = _small_warehouse(home, warehouse, exports)
    port, debug_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RISK_PIPELINE_WAREHOUSE_URL": warehouse,
        "RISK_PIPELINE_EXPORTS": exports,
    }
    dg_bin = str(Path(sys.executable).with_name("dg"))
    server = subprocess.Popen(
        [dg_bin, "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/server_info", 300, server)
        browser = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={root / 'chromium'}",
                "--remote-debugging-address=127.0.0.1",
                f"--remote-debugging-port={debug_port}",
                "--window-size=1600,1200",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_http(f"http://127.0.0.1:{debug_port}/json/version", 60, browser)
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=10).read())
        page = Page(next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"))
        page.call("Page.enable")
        yield base, page, groups
        page.close()
    finally:
        if browser is not None:
            _stop(browser)
        _stop(server)


def test_lineage_page_lists_the_layer_groups(ui: tuple[str, Page, set[str]]) -> None:
    base, page, groups = ui
    assert {"market_data", "volatility", "exposures", "risk"} <= groups
    page.open(f"{base}/asset-groups")
    checks = " && ".join(f"document.body.innerText.includes({json.dumps(g)})" for g in sorted(groups))
    page.wait_for(f"document.body && {checks}", f"every layer group {sorted(groups)}")


def test_portfolio_greeks_catalog_page_shows_units_and_its_plot(ui: tuple[str, Page, set[str]]) -> None:
    base, page, _ = ui
    page.open(f"{base}/assets/portfolio_greeks")
    page.wait_for("document.body && document.body.innerText.includes('by_underlying')", "the latest metadata")
    for column, unit in [
        ("vega_per_vol_point", "Value change per 0.01 (one vol point) rise in every implied vol, USD"),
        ("theta_per_day", "Value change per calendar day passing, USD"),
        ("dollar_delta", "USD per 1.00 relative spot move"),
    ]:
        shown = " && ".join(f"document.body.innerText.includes({json.dumps(t)})" for t in (column, unit))
        page.wait_for(shown, f"column {column} with its unit ({unit!r})", timeout=30)
    assert "core_equity/dollar_delta" in page.text()  # headline figures as numbers (charted on the Plots tab)
    page.show_markdown("by_underlying")
    size = page.wait_for(
        "(() => { const img = [...document.querySelectorAll('img')].find((i) => i.src.startsWith('data:image/svg+xml')"
        " && i.complete && i.naturalWidth > 100); return img ? img.naturalWidth : 0; })()",
        "the by-underlying plot",
    )
    assert size > 100


def test_failed_blocking_check_page_shows_the_rule_and_the_failing_rows(ui: tuple[str, Page, set[str]]) -> None:
    base, page, _ = ui
    page.open(f"{base}/assets/vol_surface?view=checks&checkDetail=fit_rmse_within_bound")
    page.wait_for("document.body && document.body.innerText.includes('slices_over_bound')", "the check's metadata")
    text = page.text()
    assert "This is a blocking asset check" in text
    assert "Every slice's fit RMSE under the configured bound (vol points);" in text  # the rule
    assert "Failed" in text and f"Partition {SESSION}" in text
    page.show_markdown("slices_over_bound")
    rows = page.wait_for(
        "(() => { for (const t of document.querySelectorAll('table')) {"
        "  const head = [...t.querySelectorAll('th')].map((c) => c.innerText.trim());"
        "  if (head.join(',') !== 'underlying,expiry,rmse_vol_points,n_quotes') continue;"
        "  return [...t.querySelectorAll('tbody tr')]"
        "    .map((r) => [...r.querySelectorAll('td')].map((c) => c.innerText.trim()));"
        " } return null; })()",
        "the failing slices (underlying, expiry, rmse_vol_points, n_quotes)",
    )
    assert rows and all(len(r) == 4 for r in rows)
    assert all(float(rmse) > 1e-6 for _, _, rmse, _ in rows)  # each row breaks the configured 1e-6 bound
    assert all(expiry[:4].isdigit() and expiry.count("-") == 2 for _, expiry, _, _ in rows)
