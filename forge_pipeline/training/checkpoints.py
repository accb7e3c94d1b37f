"""Checkpoint bookkeeping: sealing a saved checkpoint, which one is complete enough to resume from, and
atomic publishing.

A checkpoint is complete only when every file its seal lists still has the sha256 recorded there. The seal
is written after the trainer's save returns, with every file fsynced first, so a save cut short (killed,
disk full) or a file damaged later (a truncated optimizer.pt passed the old size check and crashed every
resume, issue 11 item 12) leaves an unsealed or failing checkpoint, and the previous one is used.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from forge_pipeline.files import atomic_write_json, fsync_dir, publish_dir, sha256_file  # noqa: F401  (publish_dir: re-exported)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
SEAL = "forge_checkpoint.json"
REQUIRED = ("trainer_state.json", "adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt")


def seal_checkpoint(ckpt: Path) -> Path:
    """Fsync every file of a just-saved checkpoint, then write (and fsync) its list of files and sha256s.
    The folder is made private (0700): it holds weights trained on the vault."""
    ckpt = Path(ckpt)
    os.chmod(ckpt, 0o700)
    files = {}
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != SEAL):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(ckpt).as_posix()] = sha256_file(path)
    for folder in {p.parent for p in ckpt.rglob("*")} | {ckpt}:
        fsync_dir(folder)
    return atomic_write_json(ckpt / SEAL, {"format": 1, "files": files})


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when every file it lists verifies."""
    try:
        seal = json.loads((Path(ckpt) / SEAL).read_text())
        files = seal["files"]
    except FileNotFoundError:
        return "not sealed (its save did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {SEAL} ({type(e).__name__})"
    missing = [n for n in REQUIRED if n not in files]
    if missing:
        return f"{', '.join(missing)} not saved"
    for name, digest in files.items():
        path = Path(ckpt) / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} does not match its recorded sha256 (truncated or changed)"
    return None


def checkpoint_is_complete(ckpt: Path) -> bool:
    return checkpoint_problem(ckpt) is None


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def last_complete_checkpoint(output_dir: Path, log=print) -> Path | None:
    """Newest complete checkpoint; newer incomplete ones (a crash mid-save) are removed with a log line."""
    for ckpt in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        log(f"skipping incomplete checkpoint {ckpt.name}: {problem}; removing it")
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


def clear_checkpoints(output_dir: Path) -> None:
    for ckpt in checkpoints(output_dir):
        shutil.rmtree(ckpt, ignore_errors=True)


RUN_FILE = "run.json"


def open_run(output_dir: Path, fingerprint: str) -> dict:
    """The record of the run that owns ``output_dir``'s checkpoints (run.json). Checkpoints of another
    fingerprint (other data or settings) are removed and a fresh record started."""
    path = Path(output_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("fingerprint") != fingerprint:
        clear_checkpoints(output_dir)
        record = {"fingerprint": fingerprint, "started": time.time()}
        atomic_write_json(path, record)
    return record


def update_run(output_dir: Path, **fields) -> None:
    """Keep values a resume needs (e.g. the base model's eval loss, measured only before the first step)."""
    path = Path(output_dir) / RUN_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_json(path, {**record, **fields})
