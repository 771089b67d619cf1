"""Screenshots of each dashboard for docs/workshop.md, taken with headless Chromium (`make screenshots`).

Run it on a stack brought through the workshop (e.g. `make skip-to STEP=7` and exercise 7), with Debian's
`chromium` package installed. Playwright drives that Chromium; it downloads no browser of its own.

    python scripts/screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import get_settings
from mlops_sandbox.monitor.steps import evidently_project

# No background traffic: this machine may have no route out, and the screenshots need none.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pages(settings, airflow: AirflowAPI) -> dict[str, tuple[str, str | None]]:
    """File name -> (URL, Playwright selector of what must show before the screenshot)."""
    runs = airflow.call("GET", "/dags/training_pipeline/dagRuns", params={"order_by": "-run_after", "limit": 1})
    run_id = runs["dag_runs"][0]["dag_run_id"] if runs["dag_runs"] else None
    _, project = evidently_project(settings, settings.scenario)
    training = f"/dags/training_pipeline/runs/{run_id}" if run_id else "/dags/training_pipeline"
    return {
        "airflow-dags.png": (f"{settings.airflow_url}/dags", "text=training_pipeline"),
        "airflow-training.png": (f"{settings.airflow_url}{training}", "text=register"),
        "mlflow-model.png": (f"{settings.mlflow_tracking_uri}/#/models/{settings.model_name}", "text=Version 1"),
        "swagger.png": (f"{settings.predictor_url}/docs", "css=.opblock-summary-path >> text=/predict"),
        "evidently.png": (f"{settings.evidently_url}/projects/{project.id}", "text=MAE"),
        "jupyterlab.png": (
            f"{settings.jupyter_url}/lab/tree/notebooks/05-monitoring-and-drift.ipynb?token={settings.jupyter_token}",
            "css=.jp-Notebook .jp-RenderedMarkdown h1",
        ),
    }


def _close_mlflow_assistant(page) -> None:
    """MLflow 3 opens its assistant beside the page; the registry is what the screenshot is for."""
    close = page.locator("button[aria-label*='lose']").last
    if close.count():
        close.click()
        page.wait_for_timeout(500)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--only", nargs="*", help="file names to take (default: all)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    settings = get_settings()
    airflow = AirflowAPI(settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        # Airflow's UI reads its JWT from the `_token` cookie, as after a login
        browser.add_cookies([{"name": "_token", "value": airflow.token(), "url": settings.airflow_url}])
        page = browser.new_page()
        for name, (url, wait_for) in pages(settings, airflow).items():
            if args.only and name not in args.only:
                continue
            page.goto(url, wait_until="load", timeout=60_000)
            if wait_for:
                page.locator(wait_for).first.wait_for(timeout=30_000)
            if name.startswith("mlflow"):
                _close_mlflow_assistant(page)
            page.wait_for_timeout(2_000)  # charts and fonts settle
            page.screenshot(path=out / name)
            print(f"{out / name}  <- {url.split('?')[0]}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
