"""The notes that need parsing, parsed in worker processes when there are enough of them.

Extraction is CPU-bound pure Python: cProfile on 1,000 synthetic notes (bench/synthetic_vault.py) put
markdown-it's parse at ~2/3 of the time and the redactor (already gated by cheap character tests and memoized
per distinct string) at ~10%, so no single hot spot is left to cut and the remaining lever is the other
cores. Each note is independent (``extract_note`` is pure), so they are handed out in order to a process
pool and collected in order: the output is byte-identical to a serial run (test_extraction_workers.py).

Workers read the note themselves (the parent never holds a whole vault's bytes) and report one of:
("parsed", NoteResult as a dict), ("unchanged", None) when its sha256 equals the cached one (touched but not
edited), or ("unreadable", problem).

Start-up: a worker that imports the extractor and loads the detectors takes ~1.3 s of CPU (measured on this
machine), so below ``PARALLEL_MIN_NOTES`` notes the pool costs more than it saves and the notes are parsed
here. Where this process has no other thread, workers are forked after the detectors are loaded (no start-up
cost); with other threads alive (Dagster's step process, pytest), forking could copy a lock held by one of
them, so workers are spawned fresh.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from forge_pipeline.extraction.note import NoteOptions, extract_note
from forge_pipeline.files import sha256_bytes

PARALLEL_MIN_NOTES = 400


@dataclass(frozen=True)
class NoteJob:
    rel_path: str
    path: str
    cached_sha256: str | None = None  # a cached result exists for this path: reuse it if the bytes match


Outcome = tuple[str, "dict | str | None"]


def process(job: NoteJob, opts: NoteOptions) -> Outcome:
    try:
        raw = Path(job.path).read_bytes()
    except OSError as e:
        return "unreadable", f"unreadable: {e.strerror or e}"
    if job.cached_sha256 is not None and job.cached_sha256 == sha256_bytes(raw):
        return "unchanged", None
    return "parsed", extract_note(job.rel_path, raw, opts).__dict__


_OPTS: NoteOptions | None = None


def _init(opts: NoteOptions) -> None:
    global _OPTS
    _OPTS = opts
    from forge_pipeline.extraction.redaction import get_redactor
    get_redactor(opts.phone_regions)  # once per worker, not inside its first note's time budget


def _work(job: NoteJob) -> Outcome:
    return process(job, _OPTS)


def worker_count(setting: int, jobs: int) -> int:
    """``setting`` workers when set (FORGE_EXTRACT_WORKERS), else one per usable core when enough notes
    need parsing; 1 means this process."""
    if jobs < 2:
        return 1
    if setting > 0:
        return min(setting, jobs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8) if jobs >= PARALLEL_MIN_NOTES else 1


def process_all(jobs: list[NoteJob], opts: NoteOptions, workers: int) -> Iterator[Outcome]:
    """Each job's outcome, in the jobs' order. The workers start here, before the caller iterates (and before
    it starts a progress bar's thread, which would rule out forking)."""
    if workers <= 1:
        return (process(j, opts) for j in jobs)
    fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    if fork:
        _init(opts)  # loaded here once; the forked workers inherit it
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork" if fork else "spawn"),
                               initializer=_init, initargs=(opts,))
    # map submits every job now; with fork, the workers are forked before the pool starts its own thread
    results = pool.map(_work, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8))))
    return _collect(pool, results, jobs, opts)


def _collect(pool: ProcessPoolExecutor, results: Iterator[Outcome], jobs: list[NoteJob], opts: NoteOptions
             ) -> Iterator[Outcome]:
    done = 0
    try:
        for outcome in results:
            done += 1
            yield outcome
    except BrokenProcessPool:
        # a worker died (killed, out of memory): the rest is parsed here, so the run still completes
        yield from (process(j, opts) for j in jobs[done:])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
