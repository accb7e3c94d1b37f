"""Walk the vault read-only: which notes exist, and which files are skipped and why.

Symlinked folders are followed once (Obsidian users link shared folders in); a link that leads back
into a folder already walked is a loop and becomes a warning, not a hang.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class VaultError(ValueError):
    """The vault as a whole cannot be used (missing, not a folder, no notes)."""


@dataclass(frozen=True)
class NoteFile:
    rel_path: str  # vault-relative, POSIX
    path: Path
    size: int
    mtime_ns: int


@dataclass
class VaultScan:
    notes: list[NoteFile] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    warnings: list[dict] = field(default_factory=list)  # {"file", "problem"}


def check_vault(vault: Path) -> Path:
    vault = Path(vault).expanduser()
    if not vault.exists():
        raise VaultError(f"vault not found: {vault} (set FORGE_VAULT or pass --vault)")
    if not vault.is_dir():
        raise VaultError(f"vault is not a folder: {vault}")
    return vault.resolve()


def scan_vault(vault: Path, excluded_folders: list[str], max_note_bytes: int) -> VaultScan:
    root = check_vault(vault)
    excluded = {name.lower() for name in excluded_folders}
    scan = VaultScan()
    visited: set[str] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        real = os.path.realpath(folder)
        if real in visited:
            scan.warnings.append({"file": rel or ".", "problem": "symlink loop: folder already visited, not followed"})
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            scan.warnings.append({"file": rel or ".", "problem": f"folder unreadable: {e.strerror or e}"})
            continue
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as e:  # e.g. ELOOP on a self-referencing link
                scan.warnings.append({"file": entry_rel, "problem": f"cannot follow link: {e.strerror or e}"})
                continue
            if is_dir:
                if entry.name.lower() in excluded:
                    scan.skipped.append({"file": entry_rel + "/", "reason": "excluded folder"})
                else:
                    stack.append((Path(entry.path), entry_rel))
                continue
            if entry.is_symlink() and not is_file:
                scan.warnings.append({"file": entry_rel, "problem": "broken symlink"})
                continue
            if not is_file or not entry.name.lower().endswith(".md"):
                continue  # attachments, canvases, config: not notes
            st = entry.stat(follow_symlinks=True)
            if st.st_size > max_note_bytes:
                scan.skipped.append({"file": entry_rel, "reason": f"too large ({st.st_size} bytes > {max_note_bytes})"})
                continue
            scan.notes.append(NoteFile(entry_rel, Path(entry.path), st.st_size, st.st_mtime_ns))
    scan.notes.sort(key=lambda n: n.rel_path)
    return scan


def inventory_notes(vault: Path, excluded_folders: list[str], max_note_bytes: int) -> dict:
    """The vault's notes with content hash, size and mtime, plus what was skipped and why."""
    from datetime import datetime, timezone

    from forge_pipeline.files import sha256_file

    scan = scan_vault(vault, excluded_folders, max_note_bytes)
    notes, warnings = [], list(scan.warnings)
    for n in scan.notes:
        try:
            digest = sha256_file(n.path)
        except OSError as e:
            warnings.append({"file": n.rel_path, "problem": f"unreadable: {e.strerror or e}"})
            continue
        notes.append({"path": n.rel_path, "sha256": digest, "size": n.size,
                      "mtime": datetime.fromtimestamp(n.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")})
    return {"vault": str(Path(vault).expanduser().resolve()), "notes": notes, "skipped": scan.skipped,
            "warnings": warnings}
