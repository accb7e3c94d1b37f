"""Publishing a trained adapter: weights, tokenizer, chat template, loss curve and manifest written to a
temporary folder, then swapped into place whole (readers never see half an adapter)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from forge_pipeline.files import publish_dir
from forge_pipeline.training.base_model import ResolvedBase
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.data import TrainingData
from forge_pipeline.training.manifest import AdapterManifest, BaseModelRef, DataRef, to_stored
from forge_pipeline.training.measurement import versions


def plot_loss_curve(log_history: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def build_manifest(*, fingerprint: str, resumed: bool, base: ResolvedBase, backend: str, cuda: bool,
                   cfg: TrainingConfig, data: TrainingData, metrics: dict, log_history: list,
                   home: Optional[Path] = None, seeded_turn_tokens: Optional[dict] = None) -> AdapterManifest:
    """Paths are stored relative to ``home`` (default: FORGE_HOME, where readers resolve them)."""
    base_path = base.path if base.source == "hub" else to_stored(base.path, home)
    return AdapterManifest(
        fingerprint=fingerprint, status="resumed" if resumed else "trained",
        base_model=BaseModelRef(name=base.name, path=base_path, source=base.source, fingerprint=base.fingerprint,
                                seeded_turn_tokens=seeded_turn_tokens or {}),
        backend=backend, device="cuda" if cuda else "cpu", hyperparameters=cfg.model_dump(),
        data=DataRef(train_path=to_stored(data.train_path, home), train_sha256=data.train_sha256,
                     train_examples=len(data.train_rows),
                     eval_path=to_stored(data.eval_path, home) if data.eval_path else None,
                     eval_sha256=data.eval_sha256, eval_examples=len(data.eval_rows)),
        metrics=metrics, log_history=log_history, versions=versions(),
        timings={k: metrics[k] for k in ("load_s", "train_s") if metrics.get(k) is not None})


def load_adapter_tokenizer(adapter_dir: Path):
    """The tokenizer an adapter folder was trained with, its chat template included (publish_adapter writes
    it both in the tokenizer's config and as chat_template.jinja; the file is the fallback)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(adapter_dir))
    template = Path(adapter_dir) / "chat_template.jinja"
    if not tok.chat_template and template.exists():
        tok.chat_template = template.read_text(encoding="utf-8")
    return tok


def publish_adapter(trainer, tokenizer, manifest: AdapterManifest, output_dir: Path, final_dir: Path) -> Path:
    tmp = output_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    plot_loss_curve(manifest.log_history, tmp / "loss_curve.png")
    manifest.write(tmp)
    return publish_dir(tmp, final_dir)
