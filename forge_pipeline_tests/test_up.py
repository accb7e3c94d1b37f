"""`forge up` for real: serving, dagster-daemon and dagster-webserver on loopback with temporary ports; a
killed child comes back; SIGTERM stops everything within seconds and leaves no process behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from forge_pipeline_tests.helpers import free_port

FORGE = str(Path(sys.executable).with_name("forge"))


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def answers(url, ok=lambda r: True):
    try:
        return ok(httpx.get(url, timeout=2))
    except httpx.HTTPError:
        return False


def daemon_healthy(ui):
    try:
        r = httpx.post(ui + "/graphql", timeout=10, json={"query": "{ instance { daemonHealth { allDaemonStatuses "
                                                                    "{ daemonType healthy required } } } }"})
        statuses = r.json()["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        return all(s["healthy"] for s in statuses if s["required"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False


def family(pid) -> set[int]:
    try:
        p = psutil.Process(pid)
        return {pid} | {c.pid for c in p.children(recursive=True)}
    except psutil.Error:
        return set()


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_forge_up_starts_supervises_and_stops_everything(tmp_path):
    home, port, ui_port = tmp_path / "home", free_port(), free_port()
    env = {**os.environ, "FORGE_HOME": str(home)}
    env.pop("FORGE_SERVING_URL", None)
    log = (tmp_path / "up.out").open("w")
    up = subprocess.Popen([FORGE, "up", "--port", str(port), "--ui-port", str(ui_port)], env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    serving, ui = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    seen = set()
    try:
        wait_for(lambda: answers(serving + "/health"), 180, "serving")
        wait_for(lambda: answers(ui + "/server_info", lambda r: r.status_code == 200), 240, "the web UI")
        wait_for(lambda: daemon_healthy(ui), 240, "the daemon's heartbeat")
        out = wait_for(lambda: "all up" in (t := (tmp_path / "up.out").read_text()) and t, 120, "forge up's summary")
        assert serving in out and ui in out and "nightly_forge" in out
        state = json.loads((home / "logs" / "up.json").read_text())
        assert set(state["children"]) == {"serving", "dagster-daemon", "dagster-webserver"}
        # the schedule and sensor were turned on
        sensors = httpx.post(ui + "/graphql", timeout=30, json={"query": "{ sensorsOrError(repositorySelector: "
                             "{repositoryLocationName: \"forge_pipeline\", repositoryName: \"__repository__\"}) "
                             "{ ... on Sensors { results { name sensorState { status } } } } }"}).json()
        assert {"name": "model_deploy_sensor", "sensorState": {"status": "RUNNING"}} in \
            sensors["data"]["sensorsOrError"]["results"]
        # `forge status` from another terminal finds forge up's ports (not the defaults it would try otherwise)
        st = subprocess.run([FORGE, "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
        status = json.loads(st.stdout)
        assert status["serving"]["up"] and status["serving"]["url"] == serving, status["serving"]
        assert status["nightly"]["on"] is True, status["nightly"]

        victim = state["children"]["serving"]["pid"]
        seen |= family(up.pid)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: json.loads((home / "logs" / "up.json").read_text())["children"]["serving"]["pid"] != victim,
                 60, "serving to be restarted")
        wait_for(lambda: answers(serving + "/health"), 180, "serving back")
        assert "serving exited" in (tmp_path / "up.out").read_text()
        assert (home / "logs" / "serving.log").stat().st_size > 0
        seen |= family(up.pid)
    finally:
        started = time.time()
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=60)
        took = time.time() - started
        leftover = alive(seen - {up.pid})
        for pid in leftover:
            psutil.Process(pid).kill()
    assert code == 0 and took < 20, (code, took)
    assert not leftover, f"processes left behind: {leftover}"
    assert not (home / "logs" / "up.json").exists()
    assert "stopped after" in (tmp_path / "up.out").read_text()


def test_login_units_parse_and_start_forge_up():
    """docs/forge-up.service (systemd user unit) and docs/com.forge.up.plist (launchd agent) are well formed
    and run `forge up`."""
    import configparser
    import plistlib

    from forge_pipeline_tests.conftest import REPO_ROOT

    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str
    unit.read_string((REPO_ROOT / "docs" / "forge-up.service").read_text())
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    exec_start = unit["Service"]["ExecStart"].split()
    assert exec_start[0].endswith("/.venv/bin/forge") and exec_start[1:] == ["up"]
    assert unit["Service"]["Type"] == "simple" and int(unit["Service"]["TimeoutStopSec"]) >= 15
    assert unit["Install"]["WantedBy"] == "default.target"
    agent = plistlib.loads((REPO_ROOT / "docs" / "com.forge.up.plist").read_bytes())
    assert agent["ProgramArguments"][0].endswith("/.venv/bin/forge") and agent["ProgramArguments"][1:] == ["up"]
    assert agent["RunAtLoad"] is True and agent["Label"] == "com.forge.up"
