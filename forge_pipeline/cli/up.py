"""`forge up`: serving, the Dagster daemon and the Dagster web UI from one command, supervised.

The nightly cycle needs three long-running processes: serving (chat and hot reload), dagster-daemon (runs the
schedule and the deploy sensor; without it nothing happens at night) and dagster-webserver (to see anything).
`forge up` starts them with one environment (FORGE_HOME, FORGE_SERVING_URL, the project's workspace.yaml and
an instance built from its dagster.yaml), turns the schedule and sensor on, restarts a child that dies (backoff
1 s, doubling to 60 s, reset after a minute of uptime), writes each child's output to FORGE_HOME/logs, and on
Ctrl-C or SIGTERM stops every child and its descendants (SIGTERM to each process group, SIGKILL after 10 s).
Its state (pids, addresses) is in FORGE_HOME/logs/up.json while it runs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config

BIN = Path(sys.executable).parent
LOCATION = {"repositoryLocationName": "forge_pipeline", "repositoryName": "__repository__"}


@dataclass
class Child:
    name: str
    argv: list[str]
    url: str
    ready: Callable[[], bool]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    failures: int = 0  # consecutive short-lived runs, for the backoff
    started: float = 0.0
    due: float = 0.0  # when a restart is due (0: none pending)
    known: set = field(default_factory=set)  # pids of it and its descendants seen so far


class Supervisor:
    def __init__(self, children: list[Child], env: dict, cwd: Path, state: Path, say=print):
        self.children, self.env, self.cwd, self.state, self.say = children, env, cwd, state, say
        self.stopping = False

    def start(self, child: Child) -> None:
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with child.log.open("ab") as out:
            # a session of its own: Ctrl-C reaches only forge up, which stops the children in order
            child.proc = subprocess.Popen(child.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        child.started, child.due = time.time(), 0.0
        child.known.add(child.proc.pid)
        self.write_state()

    def write_state(self) -> None:
        from forge_pipeline.files import atomic_write_json

        atomic_write_json(self.state, {"pid": os.getpid(), "children": {
            c.name: {"pid": c.proc.pid if c.proc else None, "url": c.url, "restarts": c.restarts, "log": str(c.log)}
            for c in self.children}})

    def poll(self) -> None:
        """Restart what died (with backoff); remember descendants so none is left behind at stop."""
        now = time.time()
        for c in self.children:
            if c.proc is None:
                continue
            self._remember(c)
            code = c.proc.poll()
            if code is not None and not c.due:
                c.failures = 0 if now - c.started > 60 else c.failures + 1
                delay = min(60, 2 ** max(0, c.failures - 1))
                c.due = now + delay
                self.say(f"{c.name} exited (code {code}); restarting in {delay} s (log: {c.log})")
            if c.due and now >= c.due:
                c.restarts += 1
                self.start(c)

    def _remember(self, c: Child) -> None:
        import psutil

        try:
            c.known |= {p.pid for p in psutil.Process(c.proc.pid).children(recursive=True)}
        except psutil.Error:
            pass

    def stop(self, grace_s: float = 10.0) -> None:
        import psutil

        self.stopping = True
        for c in self.children:
            if c.proc and c.proc.poll() is None:
                self._remember(c)
                try:
                    os.killpg(c.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace_s
        for c in self.children:
            if c.proc:
                try:
                    c.proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
        # whatever is still alive (a child that ignored SIGTERM, a descendant in its own session): killed
        for c in self.children:
            for pid in c.known:
                try:
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        p.kill()
                except psutil.Error:
                    pass
            if c.proc:
                try:
                    c.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.state.unlink(missing_ok=True)


def _answers(url: str, ok=lambda r: True) -> Callable[[], bool]:
    def check() -> bool:
        import httpx

        try:
            return ok(httpx.get(url, timeout=2))
        except httpx.HTTPError:
            return False
    return check


def _graphql(ui_url: str, query: str, variables: dict | None = None) -> dict:
    import httpx

    r = httpx.post(ui_url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    r.raise_for_status()
    return r.json().get("data") or {}


def _daemon_healthy(ui_url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            data = _graphql(ui_url, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
        except Exception:  # webserver not up yet
            return False
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return bool(statuses) and all(s["healthy"] for s in statuses if s["required"])
    return check


def turn_on_automation(ui_url: str) -> list[str]:
    """Start the nightly schedule and the deploy sensor (already running is fine); returns what is on."""
    on = []
    for kind, name in (("Schedule", "nightly_forge"), ("Sensor", "model_deploy_sensor")):
        selector = {**LOCATION, ("scheduleName" if kind == "Schedule" else "sensorName"): name}
        mutation = (f"mutation($s: {kind}Selector!) {{ start{kind}({kind.lower()}Selector: $s) {{ __typename "
                    f"... on PythonError {{ message }} }} }}")
        result = _graphql(ui_url, mutation, {"s": selector}).get(f"start{kind}") or {}
        if result.get("__typename") == "PythonError" and "already running" not in result.get("message", ""):
            raise RuntimeError(f"could not turn {name} on: {result['message']}")
        on.append(name)
    return on


def instance_home(settings) -> Path:
    """DAGSTER_HOME for the daemon and the webserver: the project's dagster.yaml, copied when it changed."""
    from forge_pipeline.config import REPO_ROOT

    home = settings.home_dir / "dagster" / "instance"
    home.mkdir(parents=True, exist_ok=True)
    src, dst = REPO_ROOT / "dagster.yaml", home / "dagster.yaml"
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copy2(src, dst)
    return home


def running_up(settings) -> dict[str, str]:
    """{child name: url} of the `forge up` running on this FORGE_HOME (its logs/up.json, while its process
    lives), else {}: `forge status` and `forge rollback` then reach the ports it was started with."""
    import json

    import psutil

    try:
        state = json.loads((settings.home_dir / "logs" / "up.json").read_text())
        if not psutil.pid_exists(int(state["pid"])):
            return {}
        return {name: c["url"] for name, c in state["children"].items() if c.get("url")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def serving_base_url(settings) -> str | None:
    """Serving's address as `forge up` started it (without /v1), or None when no forge up runs here."""
    url = running_up(settings).get("serving")
    return url.removesuffix("/v1") if url else None


def cmd_up(args) -> int:
    from forge_pipeline.cli.models_on_disk import choose_model, serve_args
    from forge_pipeline.config import REPO_ROOT
    from serving.settings import ServingSettings, split_url

    settings = _config(args)
    port = args.port or split_url(ServingSettings().serving_url)[1]
    ui_port = args.ui_port or settings.ui_port
    automation_on = settings.up_automation if args.automation is None else args.automation
    serving_url, ui_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    env = {**os.environ, "FORGE_HOME": str(settings.home_dir), "FORGE_SERVING_URL": serving_url,
           "DAGSTER_HOME": str(instance_home(settings))}
    choice = choose_model(settings)
    serve = [sys.executable, "-m", "serving"] + (["--model", args.model] if args.model else serve_args(choice))
    logs = settings.logs_dir
    children = [
        Child("serving", serve, serving_url + "/v1", _answers(serving_url + "/health"), logs / "serving.log"),
        Child("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
              "running (runs the schedule and the deploy sensor)",
              _daemon_healthy(ui_url), logs / "dagster-daemon.log"),
        Child("dagster-webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                                    "-p", str(ui_port)], ui_url, _answers(ui_url + "/server_info",
                                                                          lambda r: r.status_code == 200),
              logs / "dagster-webserver.log"),
    ]
    sup = Supervisor(children, env, REPO_ROOT, logs / "up.json", say=lambda m: print(f"forge up: {m}", flush=True))
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    began = time.time()
    try:
        print(f"forge up: {args.model or choice.why}", flush=True)
        for c in children:
            sup.start(c)
        pending, automation = {c.name for c in children}, None
        while not stop["now"]:
            sup.poll()
            for c in children:
                if c.name in pending and c.ready():
                    pending.discard(c.name)
                    print(f"forge up: {c.name:<18} {c.url}", flush=True)
            if automation is None and "dagster-webserver" not in pending:
                automation = turn_on_automation(ui_url) if automation_on else []
                print(f"forge up: automation       {', '.join(automation) + ' on' if automation else 'left as it is'} "
                      f"(nightly {settings.nightly_cron} {settings.schedule_timezone})", flush=True)
            if not pending and automation is not None and not getattr(sup, "announced", False):
                sup.announced = True
                print(f"forge up: all up; logs in {logs}; Ctrl-C stops everything", flush=True)
            time.sleep(0.5)
    finally:
        print("forge up: stopping ...", flush=True)
        sup.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        restarts = ", ".join(f"{c.name} {c.restarts}x" for c in children if c.restarts) or "none"
        print(f"forge up: stopped after {time.time() - began:.0f} s (restarts: {restarts}; logs in {logs})", flush=True)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("up", help="start serving, the Dagster daemon and web UI together, supervised",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=None,
                   help="serving port on 127.0.0.1 (default: the port of FORGE_SERVING_URL, else 7373)")
    p.add_argument("--ui-port", type=int, default=None,
                   help="Dagster web UI port on 127.0.0.1 (default: FORGE_UI_PORT, else 3000)")
    p.add_argument("--model", default=None, help="GGUF to serve (default: the live model, else the newest "
                                                 "validated export)")
    p.add_argument("--automation", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="turn the nightly schedule and deploy sensor on (default: FORGE_UP_AUTOMATION, else on)")
    p.set_defaults(func=cmd_up)
