"""The typed results of a nightly evaluation (pydantic, so they go to and from JSON unchanged).

Metric definitions live in evaluation/metrics.py; this module only holds the numbers.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class ProbeResult(BaseModel):
    prompt: str
    text: str
    finish_reason: Optional[str] = None
    completion_tokens: int = 0
    loop: Optional[str] = None  # why it loops (metrics.loop_reason)
    invented_turn: Optional[str] = None  # the invented marker (metrics.invented_turn)
    empty: bool = False
    cut: bool = False  # stopped at the token limit
    copied_chars: int = 0  # longest verbatim run from the training answers

    @property
    def flagged(self) -> bool:
        """Counts against the model in the gate's probe rule: a loop or an invented turn."""
        return bool(self.loop or self.invented_turn)


class ModelResult(BaseModel):
    role: str  # "base" | "live" | "candidate"
    gguf: str
    lora: Optional[str] = None
    identity: str = ""  # sha256 of the GGUF (+ ":" + the adapter's)
    eval_loss: Optional[float] = None
    eval_tokens: int = 0
    loss_cached: bool = False  # eval loss taken from the cache (same model, same token ids)
    not_scored: Optional[str] = None  # why eval loss was not measured (e.g. another vocabulary than the candidate's)
    probes: list[ProbeResult] = Field(default_factory=list)
    probes_cached: bool = False
    drift_kld: Optional[float] = None  # vs the base, on the general-text set
    regurgitation_max_chars: int = 0
    regurgitation_share: float = 0.0
    style_similarity: Optional[float] = None
    # metrics.prompt_gains: per scored eval conversation, in the eval split's order (conversations without a
    # neutral-prompt score are left out, the same ones for every model, so the gate pairs the candidate's
    # with the live model's); None where not measured
    prompt_gains: Optional[list[float]] = None

    @property
    def prompt_gain(self) -> Optional[float]:
        """The mean of prompt_gains (nats per answer token)."""
        return sum(self.prompt_gains) / len(self.prompt_gains) if self.prompt_gains else None

    def count(self, what: str) -> int:
        return sum(bool(getattr(p, what)) for p in self.probes)

    @property
    def flagged(self) -> int:
        return sum(p.flagged for p in self.probes)

    @property
    def loop_rate(self) -> float:
        return self.count("loop") / len(self.probes) if self.probes else 0.0


class Fidelity(BaseModel):
    kld_mean: float
    kld_p99: float
    top1_agreement: float
    positions: int
    quantization: str
    # "trainer-top64": the trainer's sparse reference logits (a lower bound of the full KL, metrics.py);
    # "hf": the trained model loaded again in Hugging Face form (the full KL)
    reference: str = "hf"


class RoundTrip(BaseModel):
    ok: bool
    conversations: int = 0
    mismatched: list[int] = Field(default_factory=list)  # indexes of eval conversations whose prompt ids differ
    end_of_turn_token: Optional[str] = None
    end_of_turn_id: Optional[int] = None
    end_of_turn_is_eog: bool = False
    problems: list[str] = Field(default_factory=list)


class DataChanges(BaseModel):
    against: str  # the identity of the model compared with
    new: int = 0
    dropped: int = 0
    edited: int = 0
    unchanged: int = 0


class EvaluationReport(BaseModel):
    created: str
    candidate_key: str  # names this evaluation's folder under evaluation_dir
    eval_examples: int
    eval_tokens: int
    eval_sha256: Optional[str] = None
    max_seq_length: int
    sampling: dict
    probe_prompts: list[str]
    models: dict[str, ModelResult]  # by role
    fidelity: Optional[Fidelity] = None
    round_trip: RoundTrip
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)  # (step, eval loss), base at step 0
    data_changes: Optional[DataChanges] = None
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def candidate(self) -> ModelResult:
        return self.models["candidate"]

    @property
    def live(self) -> Optional[ModelResult]:
        return self.models.get("live")

    @property
    def base(self) -> Optional[ModelResult]:
        return self.models.get("base")


class GateDecision(BaseModel):
    deploy: bool
    reasons: list[str] = Field(default_factory=list)  # one sentence per failed rule (empty when deploy)
    passed: list[str] = Field(default_factory=list)  # one line per rule that held
    against: str = "live"  # "live", or "base" for the first model
    candidate_key: str = ""
    decided_at: str = ""
