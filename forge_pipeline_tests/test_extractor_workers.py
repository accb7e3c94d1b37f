"""Notes parsed in worker processes (extraction/workers.py) give exactly what a serial run gives: the same
JSONL bytes, the same report, the same cache behaviour on a re-run; a note over its time budget is still
skipped inside a worker. The serial run (workers=1, this process) is the reference."""
import json
import os
import shutil

from forge_pipeline.config import SAMPLE_VAULT, load_config
from forge_pipeline.extraction.extractor import run_extraction
from forge_pipeline.extraction.workers import PARALLEL_MIN_NOTES, worker_count


def _run(vault, home, workers, **kw):
    cfg = load_config(home=str(home), vault=str(vault), extract_workers=workers, **kw)
    report = run_extraction(cfg)
    stats = {k: v for k, v in report.to_dict().items() if k not in ("output", "stats_path")}
    return (cfg.extracted_path.read_bytes(), stats)


def test_parallel_extraction_equals_serial_and_reuses_the_cache(tmp_path):
    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    serial = _run(vault, tmp_path / "h1", 1)
    parallel = _run(vault, tmp_path / "h2", 2)
    assert serial[1]["notes_parsed"] > 20 and serial[1]["total"] > 20
    assert parallel == serial
    # re-run: one note edited, one touched without a change, one new
    notes = sorted(vault.rglob("*.md"))
    edited, touched = next(p for p in notes if "Journal" in str(p)), notes[-1]
    edited.write_text(edited.read_text() + "\nI realize an edit tonight changed how I see the week ahead.\n")
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (vault / "new.md").write_text("I think a new note tonight is a good sign that the habit is back.\n")
    serial, parallel = _run(vault, tmp_path / "h1", 1), _run(vault, tmp_path / "h2", 2)
    assert parallel == serial
    assert parallel[1]["notes_parsed"] == 2 and parallel[1]["notes_from_cache"] == parallel[1]["notes_scanned"] - 2


def test_time_budget_holds_inside_a_worker(tmp_path, make_vault):
    vault = make_vault({"slow.md": "I think " + "[[a " * 60_000 + "\n",
                        "ok.md": "I think the walk cleared my head more than the long meeting did.\n"})
    data, stats = _run(vault, tmp_path / "h", 2, note_time_budget_s=0.05)
    assert [s["file"] for s in stats["notes_skipped"]] == ["slow.md"], stats["notes_skipped"]
    assert "time budget" in stats["notes_skipped"][0]["reason"]
    assert [json.loads(x)["source_file"] for x in data.splitlines()] == ["ok.md"]


def test_worker_count():
    assert worker_count(0, PARALLEL_MIN_NOTES - 1) == 1  # too few notes to pay for starting workers
    assert worker_count(0, PARALLEL_MIN_NOTES) == min(len(os.sched_getaffinity(0)), 8)
    assert worker_count(1, 10_000) == 1 and worker_count(3, 2) == 2 and worker_count(4, 1) == 1


def test_with_other_threads_alive_workers_are_spawned_and_agree(tmp_path, monkeypatch):
    import multiprocessing
    import threading

    vault = tmp_path / "vault"
    shutil.copytree(SAMPLE_VAULT, vault)
    contexts = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda m=None: contexts.append(m) or real(m))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # like Dagster's step process: forking would copy its locks
    other.start()
    try:
        parallel = _run(vault, tmp_path / "h2", 2)
    finally:
        stop.set()
        other.join()
    assert contexts == ["spawn"]
    assert parallel == _run(vault, tmp_path / "h1", 1)
