"""Headless Chromium (Debian's chromium) against a real dagster-webserver: the UI shows the forge asset
graph, the jobs, the nightly schedule and the deploy sensor. Saves test-artifacts/dagster_ui.png."""
import os
import shutil
import subprocess

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
    assert "nightly_forge" in automation and "gguf_deploy_sensor" in automation
    data, model = dom("/locations/forge_pipeline/asset-groups/data"), dom("/locations/forge_pipeline/asset-groups/model")
    assert all(a in data for a in ("vault_notes", "extracted_examples", "curated_examples"))
    assert all(a in model for a in ("lora_adapter", "gguf_model"))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dagster_ui.png"
    shot.unlink(missing_ok=True)
    subprocess.run([CHROMIUM, *flags, "--window-size=1600,1000", f"--screenshot={shot}",
                    url + "/locations/forge_pipeline/asset-groups/model"], capture_output=True, timeout=180)
    assert shot.stat().st_size > 20_000
