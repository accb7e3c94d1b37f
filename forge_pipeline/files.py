"""Atomic writes, JSONL and hashing: every artifact the pipeline writes goes through here.

Files are created 0600 (mkstemp's mode: training data is private text). A write is durable once it
returns: the data is fsynced, renamed over the target, and the directory is fsynced so the rename itself
survives a power cut. Temporary files carry the writer's pid (``.NAME.PID.RANDOM.tmp``), so a later run
can tell a killed writer's leftovers (tens of MB each) from a live writer's and remove them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _write_tmp(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry lives in the directory's data)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. Windows cannot open a directory: the rename is as durable as the platform makes it
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is already on disk
    finally:
        os.close(fd)


_TMP_RE = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$")
# A temporary file without a pid (written before pids were added) counts as stale after this long.
STALE_TMP_SECONDS = 600


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove temporary files left in ``folder`` by killed writers of the files ``names``. A temp file
    whose writer is still alive is kept. Returns what was removed."""
    folder, wanted, removed = Path(folder), set(names), []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or m.group("name") not in wanted:
            continue
        pid = m.group("pid")
        try:
            stale = (not _pid_alive(int(pid))) if pid else time.time() - p.stat().st_mtime > STALE_TMP_SECONDS
        except OSError:
            continue
        if stale:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def commit_files(files: dict[Path, bytes], journal: Path) -> None:
    """Replace several files as one commit: after a kill at any point, ``recover_commit(journal)`` leaves
    either all of the old files or all of the new ones (a redo journal, written after every new file is
    on disk and before the first rename)."""
    tmps = {str(Path(p)): _write_tmp(Path(p), data) for p, data in files.items()}
    atomic_write_text(journal, json.dumps(tmps))
    recover_commit(journal)


def recover_commit(journal: Path) -> bool:
    """Finish a commit that a kill interrupted (idempotent). True if one was pending."""
    journal = Path(journal)
    try:
        pending = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except ValueError:  # a torn journal means the commit never started: the old files stand
        journal.unlink(missing_ok=True)
        return False
    for target, tmp in pending.items():
        if Path(tmp).exists():
            os.replace(tmp, target)
    for folder in {Path(t).parent for t in pending}:
        fsync_dir(folder)
    journal.unlink(missing_ok=True)
    fsync_dir(journal.parent)
    return True


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file; a bad line raises ValueError naming the file and the line."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def publish_dir(tmp: Path, final: Path) -> Path:
    """Swap a fully written directory into place; readers never see a half-written one."""
    import shutil
    import time

    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{int(time.time() * 1000)}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
