"""Which file a reload request may open. Checked before anything is opened: the path must resolve (after
symlinks) inside an allowed root and be a regular .gguf file."""
from __future__ import annotations

import os
from pathlib import Path

GGUF_MAGIC = b"GGUF"


class ModelPathError(ValueError):
    """Refused before opening anything (HTTP 400)."""


class BadModelError(ValueError):
    """The file is inside the roots but is not a usable GGUF (HTTP 422)."""


def _inside(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r) + os.sep) for r in roots)


def resolve_model_path(raw: str, roots: list[Path], anywhere: bool = False) -> Path:
    """``anywhere`` is for the operator's own start-up setting (--model), never for the HTTP API."""
    if not isinstance(raw, str) or not raw.strip():
        raise ModelPathError("model_path is empty")
    if "\x00" in raw:
        raise ModelPathError("model_path contains a NUL byte")
    real = os.path.realpath(os.path.expanduser(raw))
    if anywhere:
        roots = [Path(real) if os.path.isdir(real) else Path(real).parent]
    if not _inside(real, roots):
        raise ModelPathError(f"model_path must be inside the allowed model roots ({', '.join(map(str, roots))})")
    path = Path(real)
    if path.is_dir():
        ggufs = sorted((p for p in path.glob("*.gguf")), key=lambda p: p.stat().st_mtime)
        if not ggufs:
            hint = (" It looks like a Hugging Face model directory: run `forge export` to make a GGUF."
                    if (path / "config.json").exists() or (path / "adapter_config.json").exists() else "")
            raise BadModelError(f"{raw}: no .gguf file in this directory.{hint}")
        path = Path(os.path.realpath(ggufs[-1]))
        if not _inside(str(path), roots):
            raise ModelPathError("the GGUF in that directory links outside the allowed model roots")
    if path.suffix.lower() != ".gguf":
        raise ModelPathError("model_path must name a .gguf file (or a directory holding one)")
    if not path.exists():
        raise ModelPathError(f"{raw}: no such file")
    if not path.is_file():
        raise ModelPathError(f"{raw}: not a regular file")
    return path


def check_gguf_header(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise BadModelError(f"{path.name}: empty file")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise BadModelError(f"{path.name}: not a GGUF file (bad magic bytes)")
    if size < 64:
        raise BadModelError(f"{path.name}: truncated GGUF ({size} bytes)")
