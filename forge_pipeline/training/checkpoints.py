"""Checkpoint bookkeeping: which checkpoint is complete enough to resume from, and atomic publishing."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
REQUIRED = ("trainer_state.json", "adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt")


def _safetensors_ok(path: Path) -> bool:
    """The header parses and the file is as long as the header says: a cut-off write fails this."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return size == 8 + n + end
    except (OSError, ValueError, KeyError, struct.error):
        return False


def checkpoint_is_complete(ckpt: Path) -> bool:
    if not all((ckpt / name).is_file() and (ckpt / name).stat().st_size > 0 for name in REQUIRED):
        return False
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except ValueError:
        return False
    return _safetensors_ok(ckpt / "adapter_model.safetensors")


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def last_complete_checkpoint(output_dir: Path, log=print) -> Path | None:
    """Newest complete checkpoint; newer incomplete ones (a crash mid-save) are removed with a log line."""
    for ckpt in reversed(checkpoints(output_dir)):
        if checkpoint_is_complete(ckpt):
            return ckpt
        log(f"skipping truncated checkpoint {ckpt.name} (incomplete files); removing it")
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


def clear_checkpoints(output_dir: Path) -> None:
    for ckpt in checkpoints(output_dir):
        shutil.rmtree(ckpt, ignore_errors=True)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Swap a fully written directory into place; readers never see a half-written final/."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{int(time.time() * 1000)}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
