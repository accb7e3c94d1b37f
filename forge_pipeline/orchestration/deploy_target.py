"""Level-triggered deployment, decided as a plain function: whenever the live model differs from the newest
model whose gate passed, one deploy is requested, never two at once.

Edge-triggered deploys ("a new model was made: deploy it once") lose a model for good when serving is down at
that moment; comparing states each tick instead deploys it once serving is back, and brings a server that
restarted on an old model forward. The run key counts the finished attempts for the target, so the same state
always yields the same key (a daemon killed inside a tick re-submits nothing new: Dagster drops a run key it
has seen), and a new attempt gets a new key only after the previous one ended.

A person's rollback is the exception: serving's deployment record names the model they rolled back from
(`rolled_back_from` in /admin/model-status), and that model is not put back; the next model that passes its
gate is (found by hand: under `forge up`, `forge rollback` was undone by the next tick, 30 s later)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Target:
    """The newest model whose gate passed: what serving should run."""

    sha256: str  # of the file to load (adapter GGUF or full GGUF)
    path: str
    version: Optional[str] = None
    base_path: Optional[str] = None  # the base GGUF an adapter goes on, when serving should swap it too


@dataclass(frozen=True)
class Decision:
    request: bool
    reason: str
    run_key: Optional[str] = None


def decide(target: Optional[Target], live_sha256: Optional[str], serving_error: Optional[str],
           in_flight: int, finished_attempts: int, refused: bool = False,
           rolled_back_from: Optional[str] = None) -> Decision:
    """``live_sha256``: what serving runs (None: no model); ``serving_error``: why serving could not be asked
    (None: it answered); ``in_flight``: deploy runs queued or running; ``finished_attempts``: deploy runs for
    this target that ended (succeeded or not); ``refused``: serving looked at the target and said no (asking
    again would fail the same way: wait for the next model); ``rolled_back_from``: the sha256 of the model a
    person rolled back from, per serving's record."""
    if target is None:
        return Decision(False, "no model has passed its gate yet")
    name = target.version or target.sha256[:12]
    if serving_error is not None:
        return Decision(False, f"serving is not reachable ({serving_error}); {name} is deployed once it is back")
    if live_sha256 == target.sha256:
        return Decision(False, f"serving already runs {name}, the newest model that passed its gate")
    if rolled_back_from == target.sha256:
        live = live_sha256[:12] if live_sha256 else "no model"
        return Decision(False, f"serving was rolled back from {name} by hand; it stays on {live} until a newer "
                               "model passes its gate (or `forge reload` deploys one by hand)")
    if refused:
        return Decision(False, f"serving refused {name} (see the failed deploy run); waiting for the next model")
    if in_flight:
        return Decision(False, f"a deploy is already queued or running; {name} is checked again next tick")
    return Decision(True, f"serving runs {live_sha256[:12] if live_sha256 else 'no model'}, the newest model that "
                          f"passed its gate is {name}", run_key=f"deploy-{target.sha256}-{finished_attempts}")
