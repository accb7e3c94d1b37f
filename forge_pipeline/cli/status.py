"""`forge status` (a summary a person reads; --json for scripts) and `forge rollback`.

Status reads only files under FORGE_HOME and asks two local services without waiting long: serving (is it up,
which model) and the Dagster web UI (is the nightly on). Nothing here imports torch or Dagster."""
from __future__ import annotations

import json
import time
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def _count(path: Path) -> int | None:
    if not path.exists():
        return None
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _age(iso: str | None) -> str:
    if not iso:
        return "at an unknown time"
    try:
        t = time.mktime(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return iso
    s = max(0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return "just now"


def _serving(settings) -> dict:
    from serving.client import ServingAdminClient

    client = ServingAdminClient.from_env(max_attempts=1, timeout_s=5, **_up_serving(settings))
    try:
        return {"up": True, "url": client.base_url, **client.status(attempts=1)}
    except Exception as e:  # down or refusing: say so, and fall back to the record of what it last ran
        from forge_pipeline.cli.models_on_disk import live_model

        return {"up": False, "url": client.base_url, "error": str(e).split(". ")[0], "last_deployed": live_model(settings)}


def _up_serving(settings) -> dict:
    """base_url for the serving client: where a running `forge up` serves (its --port), else the environment's."""
    from forge_pipeline.cli.up import serving_base_url

    url = serving_base_url(settings)
    return {"base_url": url} if url else {}


def _nightly(settings) -> dict:
    """The schedule's state, from the Dagster web UI when it runs (`forge up` starts it; its --ui-port)."""
    import httpx

    from forge_pipeline.cli.up import running_up

    url = running_up(settings).get("dagster-webserver") or f"http://127.0.0.1:{settings.ui_port}"
    query = ('{ scheduleOrError(scheduleSelector: {repositoryLocationName: "forge_pipeline", repositoryName: '
             '"__repository__", scheduleName: "nightly_forge"}) { ... on Schedule { scheduleState { status } } } }')
    out = {"cron": settings.nightly_cron, "timezone": settings.schedule_timezone}
    try:
        r = httpx.post(url + "/graphql", json={"query": query}, timeout=3)
        out["on"] = r.json()["data"]["scheduleOrError"]["scheduleState"]["status"] == "RUNNING"
    except Exception:
        out["on"] = None  # unknown: the UI (and probably the daemon) is not running
    return out


def _evaluation(settings) -> dict | None:
    from forge_pipeline.evaluation.gate import latest_key, load_decision, load_report
    from forge_pipeline.evaluation.nightly import headline

    key = latest_key(settings.evaluation_dir)
    report = load_report(settings.evaluation_dir, key) if key else None
    decision = load_decision(settings.evaluation_dir, key) if key else None
    if report is None or decision is None:
        return None
    return {"at": report.created, "deploy": decision.deploy, "reasons": decision.reasons,
            **{k: v for k, v in headline(report, decision).items() if k != "deploy"}}


def collect_status(settings) -> dict:
    from forge_pipeline.curation.review import ReviewStore
    from forge_pipeline.files import read_jsonl

    extracted = read_jsonl(settings.extracted_path) if settings.extracted_path.exists() else []
    status = {
        "forge_home": str(settings.home_dir), "vault": str(settings.vault_dir),
        "examples": {"extracted": len(extracted) if settings.extracted_path.exists() else None,
                     "curated_train": _count(settings.curated_path), "curated_eval": _count(settings.eval_path),
                     "awaiting_review": len(ReviewStore(settings.review_decisions_path).pending(extracted))},
        "serving": _serving(settings), "nightly": _nightly(settings), "last_evaluation": _evaluation(settings),
    }
    from forge_pipeline.training.manifest import AdapterManifest

    m = AdapterManifest.read_if_exists(settings.adapter_dir)
    status["adapter"] = None if m is None else {"created": m.created, "base_model": m.base_model.name,
                                                "backend": m.backend, "eval_loss": m.eval_loss,
                                                "base_eval_loss": m.base_eval_loss}
    from forge_pipeline.export.manifest import read_last_export

    last = read_last_export(settings.models_dir, settings.home_dir)
    status["model"] = None if last is None else {
        "version": last[0].version, "kind": last[0].kind, "quantization": last[0].quantization,
        "size_mb": last[0].size_mb, "path": str(last[1] / last[0].file)}
    status["next"] = next_step(status)
    return status


def next_step(s: dict) -> str:
    ex, serving = s["examples"], s["serving"]
    if ex["extracted"] is None:
        return "forge extract (or `forge up` and let the nightly run), to read your vault"
    if ex["curated_train"] is None:
        return "forge curate" + (f" (or `forge review` first: {ex['awaiting_review']} examples await it)"
                                 if ex["awaiting_review"] else "")
    if s["adapter"] is None:
        return "dg launch --job forge_job (train, export, evaluate), or forge train"
    if not serving["up"]:
        return "forge up (serving, the nightly schedule and the deploy sensor together)"
    if s["nightly"]["on"] is False:
        return "turn the nightly on: forge up (or the Automation page of the web UI)"
    ev = s["last_evaluation"]
    if ev and not ev["deploy"]:
        return "the last candidate was refused (see its reasons); add notes or adjust training, then forge_job again"
    return "nothing to do: chat at " + serving["url"] + "/v1"


def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def serving_line(serving: dict) -> str:
    """The status line for serving: up (what it runs, since when) or down (what it last ran)."""
    if serving["up"]:
        live = f"{serving.get('version') or Path(str(serving.get('path', '?'))).name} ({serving.get('kind', 'full')}), " \
               f"loaded {_age(serving.get('loaded_at'))}"
        line = f"  serving        up at {serving['url']}: {live if serving.get('path') else 'no model loaded'}"
        back = serving.get("rolled_back_from")
        if back:  # serving's record; the deploy sensor leaves that model out (orchestration/deploy_target.py)
            line += (f"\n                 rolled back from {back.get('version') or back.get('sha256', '?')[:12]} "
                     f"{_age(back.get('at'))}: the nightly will not put it back; a newer model that passes its "
                     "gate will be deployed")
        return line
    last = serving.get("last_deployed")
    return f"  serving        down ({serving['url']})" + (
        f"; it last ran {last.get('version') or Path(last['path']).name}" if last else "")


def render(s: dict) -> str:
    ex, serving, nightly, ev, ad = s["examples"], s["serving"], s["nightly"], s["last_evaluation"], s["adapter"]
    lines = [f"forge status (FORGE_HOME {s['forge_home']})", f"  vault          {s['vault']}"]
    if ex["extracted"] is None:
        lines.append("  examples       none extracted yet")
    else:
        lines.append(f"  examples       {ex['extracted']} extracted; {ex['curated_train'] or 0} curated for training + "
                     f"{ex['curated_eval'] or 0} held out for evaluation; {ex['awaiting_review']} await review")
    lines.append(serving_line(serving))
    if ad:
        gain = (100 * (ad["base_eval_loss"] - ad["eval_loss"]) / ad["base_eval_loss"]
                if ad["eval_loss"] is not None and ad["base_eval_loss"] else None)
        lines.append(f"  adapter        trained {_age(ad['created'])} on {ad['base_model']}: eval loss "
                     f"{_fmt(ad['eval_loss'])} vs base {_fmt(ad['base_eval_loss'])}"
                     + (f" ({gain:+.1f}% better)" if gain is not None else ""))
    if ev:
        # the gate's decision; whether the model was then deployed is the serving line above
        verdict = "passed the gate" if ev["deploy"] else "refused: " + "; ".join(ev["reasons"])
        lines.append(f"  last decision  {_age(ev['at'])}: {verdict}")
        lines.append(f"                 eval loss candidate {_fmt(ev.get('eval_loss_candidate'))}, live "
                     f"{_fmt(ev.get('eval_loss_live'))}, base {_fmt(ev.get('eval_loss_base'))}; loop rate "
                     f"{_fmt(ev.get('loop_rate'), 2)}")
    on = {True: "on", False: "off", None: "unknown (the web UI is not running)"}[nightly["on"]]
    lines.append(f"  nightly        {on}; {nightly['cron']} in {nightly['timezone']}")
    lines.append(f"  next           {s['next']}")
    return "\n".join(lines)


def cmd_status(args) -> int:
    status = collect_status(_config(args))
    print(json.dumps(status, indent=2, default=str) if args.json else render(status), flush=True)
    return 0


def cmd_rollback(args) -> int:
    from serving.client import ServingAdminClient

    client = ServingAdminClient.from_env(log=lambda m: print(m), **_up_serving(_config(args)))
    before = client.status(attempts=1)
    after = client.rollback()
    print(rollback_message(before, after.get("model", after)))
    return 0


def rollback_message(before: dict, after: dict) -> str:
    """What `forge rollback` tells the person: the model now served (saying so when it is the bare base, which is
    where a rollback from the first deployed adapter lands), the one left, and that the nightly leaves it so."""
    was = before.get("version") or before.get("path")
    if after.get("kind", "full") == "full" and before.get("kind") == "adapter" \
            and after.get("sha256") == before.get("base_sha256"):
        now = (f"the base model {Path(str(after.get('path'))).name} with no adapter: none of your fine-tuning "
               f"(nothing fine-tuned ran before {was})")
    else:
        now = f"{after.get('version') or after.get('path')} ({after.get('kind', 'full')})"
    return (f"rolled back: serving now runs {now}; it ran {was}.\n"
            f"The nightly will not deploy {was} again; the next model that passes its gate will be deployed "
            "(or `forge reload PATH` one by hand).")


def add_commands(sub) -> None:
    p = sub.add_parser("status", help="what is live, how good it is, whether the nightly is on, what to do next")
    p.add_argument("--json", action="store_true", help="print the status as JSON for scripts")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rollback", help="serving goes back to the model it ran before the last reload")
    p.set_defaults(func=cmd_rollback)
