"""Headless Chromium (Debian's chromium) against a real dagster-webserver: the UI shows the forge asset
graph, the jobs, the nightly schedule and the deploy sensor; an asset page shows its headline numbers without
a click. Saves test-artifacts/dagster_ui.png."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from forge_pipeline_tests.conftest import ARTIFACTS, REPO_ROOT
from forge_pipeline_tests.test_end_to_end import start_webserver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the workplace's probe runs it: no background traffic to hosts this machine cannot reach
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--virtual-time-budget=30000"]


@pytest.fixture
def webserver(tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy2(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "FORGE_HOME": str(tmp_path / "forge_home"), "DAGSTER_HOME": str(dagster_home)}
    # the data assets materialized into this instance, so asset pages have numbers to show
    run = subprocess.run([sys.executable, "-c", "import dagster as dg; from forge_pipeline.definitions import defs; "
                          "i = dg.DagsterInstance.get(); "
                          "assert defs().resolve_job_def('data_job').execute_in_process(instance=i).success"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    proc, url = start_webserver(env, subprocess.DEVNULL)
    try:
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_web_ui_shows_the_forge_pipeline(webserver):
    url, tmp = webserver
    flags = FLAGS + [f"--user-data-dir={tmp / 'chromium'}"]

    def dom(path: str) -> str:
        out = subprocess.run([CHROMIUM, *flags, "--dump-dom", url + path], capture_output=True, text=True, timeout=180)
        return out.stdout

    jobs, automation = dom("/jobs"), dom("/automation")
    assert "forge_job" in jobs and "deploy_job" in jobs
    assert "nightly_forge" in automation and "model_deploy_sensor" in automation
    data, model = dom("/locations/forge_pipeline/asset-groups/data"), dom("/locations/forge_pipeline/asset-groups/model")
    assert all(a in data for a in ("vault_notes", "extracted_examples", "curated_examples"))
    assert all(a in model for a in ("lora_adapter", "model_export", "model_evaluation"))
    # an asset page shows its headline numbers without a click: the curated counts, as in the files
    train = sum(1 for line in (tmp / "forge_home" / "training_data" / "curated.jsonl").open() if line.strip())
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom("/assets/curated_examples")))
    assert "train_examples" in page, page[:2000]
    after = page[page.index("train_examples"):][:80]
    assert f" {train} " in after, after
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dagster_ui.png"
    shot.unlink(missing_ok=True)
    subprocess.run([CHROMIUM, *flags, "--window-size=1600,1000", f"--screenshot={shot}",
                    url + "/locations/forge_pipeline/asset-groups/model"], capture_output=True, timeout=180)
    assert shot.stat().st_size > 20_000
