"""The whole product on loopback with real processes: serving (started with no model), dagster-daemon and
dagster-webserver on a temporary DAGSTER_HOME, forge_job launched through the webserver's GraphQL API on the
sample vault; the sensor hot-reloads serving; further ticks do not; a second run with unchanged inputs
skips training. The base is the embedded Gemma 3 270M trained for a few steps, exported as a LoRA adapter
GGUF on its base GGUF, evaluated (against the base: serving starts with no model, as on the first night), and
deployed by the level-triggered sensor: serving loads base and adapter."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from forge_pipeline_tests.conftest import REPO_ROOT
from forge_pipeline_tests.helpers import Server, free_port

BIN = Path(sys.executable).parent
LOCATION, REPO = "forge_pipeline", "__repository__"


def wait_for(predicate, timeout, what, interval=2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def start_webserver(env: dict, log_file) -> tuple[subprocess.Popen, str]:
    """dagster-webserver from the repository root (workspace.yaml), answering on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(url + "/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 180, "dagster-webserver")
    return proc, url


def gql(url, query, variables=None):
    r = httpx.post(url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="session")
def gemma_base(tmp_path_factory) -> Path:
    from forge_pipeline.training.base_model import EMBEDDED_GEMMA, resolve_base_model

    return Path(resolve_base_model(EMBEDDED_GEMMA, tmp_path_factory.mktemp("gemma_home")).path)


@pytest.fixture
def stack(tmp_path, gemma_base):
    home, dagster_home = tmp_path / "forge_home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy2(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    base = gemma_base
    serving = Server(home).wait()  # the first night: serving runs, no model yet
    env = {**os.environ, "FORGE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "FORGE_SERVING_URL": serving.url, "FORGE_MIN_CURATED_EXAMPLES": "20"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env,
                              stdout=(logs / "daemon.log").open("w"), stderr=subprocess.STDOUT)]
    try:
        webserver, url = start_webserver(env, (logs / "webserver.log").open("w"))
        procs.append(webserver)
        yield {"url": url, "serving": serving, "home": home, "base": base, "logs": logs}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        serving.stop()


def launch_forge_job(url, base) -> str:
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(url.rsplit(":", 1)[1]))
    run_config = {"training": {"base_model": str(base), "max_steps": 4, "batch_size": 4, "max_seq_length": 256,
                               "gradient_accumulation_steps": 1},
                  "export": {"quantization": "f16"}}
    run_id = client.submit_job_execution("forge_job", repository_location_name=LOCATION, repository_name=REPO,
                                         run_config=run_config)
    status = wait_for(lambda: (s := client.get_run_status(run_id).value) in ("SUCCESS", "FAILURE", "CANCELED") and s,
                      1200, f"forge_job run {run_id}")
    if status != "SUCCESS":
        events = gql(url, """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection(afterCursor: null) {
            events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } }
                     ... on MessageEvent { message level } } } } } }""", {"id": run_id})
        failures = [e for e in events["runOrError"]["eventConnection"]["events"]
                    if e["__typename"] == "ExecutionStepFailureEvent" or e.get("level") == "ERROR"]
        raise AssertionError(f"forge_job ended {status}: {failures[:5]}")
    return run_id


def deploy_runs(url) -> list:
    data = gql(url, """query { runsOrError(filter: {pipelineName: "deploy_job"}) { ... on Runs { results { runId status tags { key value } } } } }""")
    return data["runsOrError"]["results"]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two forge_job runs on 2 cores (train, export, evaluate; then all cached)
def test_nightly_cycle_end_to_end(stack):
    url, serving, home = stack["url"], stack["serving"], stack["home"]
    sensor = {"repositoryLocationName": LOCATION, "repositoryName": REPO, "sensorName": "model_deploy_sensor"}
    started = gql(url, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                 __typename ... on Sensor { sensorState { status } } } }""", {"s": sensor})
    assert started["startSensor"]["sensorState"]["status"] == "RUNNING"

    launch_forge_job(url, stack["base"])
    export = json.loads((home / "models" / "last_export.json").read_text())
    manifest = json.loads((home / export["manifest"]).read_text())  # stored relative to FORGE_HOME
    sha = manifest["sha256"]
    wait_for(lambda: serving.get("/admin/model-status").json().get("sha256") == sha, 240, "the sensor's reload")
    runs = wait_for(lambda: [r for r in deploy_runs(url) if r["status"] == "SUCCESS"], 120, "deploy run")
    assert len(runs) == 1 and {"key": "forge/model_sha256", "value": sha} in runs[0]["tags"]

    adapter_manifest = home / "training" / "final" / "manifest.json"
    created = json.loads(adapter_manifest.read_text())["created"]
    launch_forge_job(url, stack["base"])  # unchanged vault, config and base model
    assert json.loads(adapter_manifest.read_text())["created"] == created  # training skipped
    time.sleep(70)  # two more sensor ticks
    assert len(deploy_runs(url)) == 1  # the same GGUF is not reloaded again
    history = json.loads((home / "serving" / "deployments.json").read_text())["history"]
    assert [h["sha256"] for h in history].count(sha) == 1


def test_embedded_base_can_end_a_turn(gemma_base):
    """The embedded Gemma 3 270M is a pretrained base: its <end_of_turn> row sat among 4,664 unused rows within
    cosine 0.99, so fine-tuned answers never ended (turn_tokens.py). The converted base gives it EOS's row."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_base)
    with safe_open(str(gemma_base / "model.safetensors"), "np") as f:
        w = f.get_tensor("model.embed_tokens.weight").astype(np.float64)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    eot, eos = tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id
    close = np.flatnonzero(unit @ unit[eot] > 0.99)
    assert sorted(close.tolist()) == sorted({eot, eos}), len(close)
    assert np.array_equal(w[eot], w[eos])
