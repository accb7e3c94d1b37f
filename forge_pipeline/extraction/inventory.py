"""Walk the vault read-only: which notes exist, and which files are skipped and why.

- Symlinks that stay inside the vault are followed once (Obsidian users link shared folders in); real
  folders are walked before linked ones, so a folder keeps its own path and the link to it is the one
  reported as already read (a loop becomes a warning, not a hang).
- Symlinks that leave the vault (files or folders) are not followed unless ``follow_external_symlinks``:
  a link to ``/etc`` once made the scanner walk ``/etc``, and a linked file's text reached the training data.
- A file or folder name that is not valid UTF-8 cannot be stored in JSON: it is a warning naming the file
  with its bytes escaped (``bad\\xff.md``), and the run goes on.
- Notes under a private folder (or matching a private glob) are counted, never listed: their names can
  be as private as their text.
"""
from __future__ import annotations

import fnmatch
import os
from collections import Counter
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
    private: Counter = field(default_factory=Counter)  # reason -> notes excluded as private (never named)


@dataclass(frozen=True)
class ScanOptions:
    excluded_folders: tuple[str, ...] = (".obsidian", "templates", ".trash")
    max_note_bytes: int = 1_000_000
    follow_external_symlinks: bool = False
    private_folders: tuple[str, ...] = ()
    private_globs: tuple[str, ...] = ()
    private_tags: frozenset[str] = frozenset({"private"})  # frontmatter tags making a note private


def check_vault(vault: Path) -> Path:
    vault = Path(vault).expanduser()
    if not vault.exists():
        raise VaultError(f"vault not found: {vault} (set FORGE_VAULT or pass --vault)")
    if not vault.is_dir():
        raise VaultError(f"vault is not a folder: {vault}")
    return vault.resolve()


def escaped_name(name: str) -> str:
    """A file name as printable, JSON-safe text: undecodable bytes become ``\\xff``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as lone surrogates
        return False
    return True


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _private_reason(rel: str, is_dir: bool, opts: ScanOptions) -> str | None:
    name = rel.rsplit("/", 1)[-1].lower()
    if is_dir and name in {f.strip("/").lower() for f in opts.private_folders}:
        return "private folder"
    if any(fnmatch.fnmatch(rel.lower() + ("/" if is_dir else ""), g.lower()) for g in opts.private_globs):
        return "private glob"
    return None


def path_private_reason(rel: str, opts: ScanOptions) -> str | None:
    """Whether a vault path lies in a private folder or matches a private glob (it or any folder above it)."""
    parts = [p for p in rel.strip("/").split("/") if p]
    for i in range(1, len(parts)):
        reason = _private_reason("/".join(parts[:i]), True, opts)
        if reason:
            return reason
    return _private_reason("/".join(parts), False, opts) if parts else None


def _head_private_reason(path: Path, opts: ScanOptions) -> str | None:
    """A note's frontmatter privacy from its first bytes only (frontmatter over MAX_FRONTMATTER_CHARS is
    not read anyway); an unreadable head is treated as private: it cannot be shown to be public."""
    from forge_pipeline.extraction.markdown import MAX_FRONTMATTER_CHARS
    from forge_pipeline.extraction.optout import frontmatter_private_reason

    try:
        with open(path, "rb") as f:
            head = f.read(4 * MAX_FRONTMATTER_CHARS + 16)
    except OSError:
        return None  # listed as too large, like any unreadable note the extractor names (redacted)
    return frontmatter_private_reason(head.decode("utf-8", "replace"), opts.private_tags)


def _count_notes(folder: Path) -> int:
    n = 0
    for _dirpath, _dirs, files in os.walk(folder):  # os.walk does not follow links: no escape, no loop
        n += sum(1 for f in files if f.lower().endswith(".md"))
    return n


def scan_vault(vault: Path, excluded_folders: list[str] | None = None, max_note_bytes: int = 1_000_000,
               options: ScanOptions | None = None) -> VaultScan:
    opts = options or ScanOptions(tuple(excluded_folders or ()), max_note_bytes)
    root = check_vault(vault)
    root_real = os.path.realpath(root)
    excluded = {name.lower() for name in opts.excluded_folders}
    scan = VaultScan()
    visited: set[str] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    linked: list[tuple[Path, str]] = []  # symlinked folders, walked after every real folder
    while stack or linked:
        folder, rel = stack.pop() if stack else linked.pop(0)
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
                is_link = entry.is_symlink()
            except OSError as e:  # e.g. ELOOP on a self-referencing link
                if not _private_reason(entry_rel, False, opts):
                    scan.warnings.append({"file": escaped_name(entry_rel),
                                          "problem": f"cannot follow link: {e.strerror or e}"})
                continue
            leaves = is_link and (is_dir or is_file) and not _inside(os.path.realpath(entry.path), root_real)
            # Private first: every later branch (bad name, link out, too large) would name the file.
            private = _private_reason(entry_rel, is_dir, opts)
            if private:
                if is_dir and not leaves:
                    scan.private[private] += _count_notes(Path(entry.path))
                elif not is_dir and entry.name.lower().endswith(".md"):
                    scan.private[private] += 1
                continue
            if not _valid_utf8(entry.name):
                scan.warnings.append({"file": escaped_name(entry_rel), "problem": "file name is not valid UTF-8; "
                                      "not read (rename it to include it)"})
                continue
            if leaves and not opts.follow_external_symlinks:
                scan.warnings.append({"file": entry_rel, "problem": "symlink to a place outside the vault, not "
                                      "followed (FORGE_FOLLOW_EXTERNAL_SYMLINKS=true allows it)"})
                continue
            if is_dir:
                if entry.name.lower() in excluded:
                    scan.skipped.append({"file": entry_rel + "/", "reason": "excluded folder"})
                else:
                    (linked if is_link else stack).append((Path(entry.path), entry_rel))
                continue
            if is_link and not is_file:
                scan.warnings.append({"file": entry_rel, "problem": "broken symlink"})
                continue
            if not is_file or not entry.name.lower().endswith(".md"):
                continue  # attachments, canvases, config: not notes
            st = entry.stat(follow_symlinks=True)
            if st.st_size > opts.max_note_bytes:
                # not extracted, but its frontmatter may still say private: then it is counted, not named
                private = _head_private_reason(Path(entry.path), opts)
                if private:
                    scan.private[private] += 1
                else:
                    scan.skipped.append({"file": entry_rel,
                                         "reason": f"too large ({st.st_size} bytes > {opts.max_note_bytes})"})
                continue
            scan.notes.append(NoteFile(entry_rel, folder / entry.name, st.st_size, st.st_mtime_ns))
    scan.notes.sort(key=lambda n: n.rel_path)
    return scan


def inventory_notes(vault: Path, excluded_folders: list[str] | None = None, max_note_bytes: int = 1_000_000,
                    options: ScanOptions | None = None, phone_regions: tuple[str, ...] | None = None) -> dict:
    """The vault's notes with content hash, size and mtime, plus what was skipped and why. It is stored and
    logged, so every file name in it is shown with its secrets redacted (forge_pipeline/privacy/names.py),
    and a note whose frontmatter marks it private is counted by reason, never listed."""
    from datetime import datetime, timezone

    from forge_pipeline.extraction.optout import frontmatter_private_reason
    from forge_pipeline.extraction.redaction import DEFAULT_PHONE_REGIONS
    from forge_pipeline.files import sha256_bytes
    from forge_pipeline.privacy.names import redact_file_entries, shown_path

    regions = tuple(phone_regions or DEFAULT_PHONE_REGIONS)
    opts = options or ScanOptions(tuple(excluded_folders or ()), max_note_bytes)
    scan = scan_vault(vault, options=opts)
    notes, warnings, private = [], list(scan.warnings), Counter(scan.private)
    for n in scan.notes:
        try:
            raw = n.path.read_bytes()  # notes are at most max_note_bytes: read whole, hashed and checked once
        except OSError as e:
            warnings.append({"file": n.rel_path, "problem": f"unreadable: {e.strerror or e}"})
            continue
        reason = frontmatter_private_reason(raw.decode("utf-8", "replace"), opts.private_tags)
        if reason:
            private[reason] += 1
            continue
        notes.append({"path": shown_path(n.rel_path, regions), "sha256": sha256_bytes(raw), "size": n.size,
                      "mtime": datetime.fromtimestamp(n.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")})
    return {"vault": str(Path(vault).expanduser().resolve()), "notes": notes,
            "skipped": redact_file_entries(scan.skipped, regions), "warnings": redact_file_entries(warnings, regions),
            "private_excluded": dict(sorted(private.items()))}
