"""Nothing leaks through the orchestrator or the server (issue 12): canary secrets planted in a copy of the
sample vault (bodies, a heading, a file name, a frontmatter title, tags, a password line, an IBAN, an AWS-style
secret, a private note, a note in the private folder, #private paragraphs) go through forge_job in Dagster
(data assets, their blocking checks, a tiny real LoRA training through Pipes and its GGUF export) on a temporary
DAGSTER_HOME, then a real serving process answers one chat on the produced model. Every file under FORGE_HOME
and DAGSTER_HOME (JSONL, caches, manifests, the sqlite run/event-log databases as bytes and as dumped rows,
compute logs), the captured terminal output and the serving log are searched for each canary: no hit.
The check is a byte search, independent of the redactor and of the personal-data check."""
import shutil
import sqlite3

import pytest

from forge_pipeline.config import SAMPLE_VAULT
from forge_pipeline_tests.conftest import REPO_ROOT

# canary -> the note text that carries it (each a reflection, so it would be trained on if not redacted/excluded)
CANARIES = {
    "canarybody": "Inbox/Call notes.md",
    "canaryhead": "Journal/2026-05-04.md",
    "canaryfile": "Inbox/Thread with ozzy.canaryfile@example.net.md",
    "canarytitle": "Projects/Launch retro.md",
    "CanAryTagZq8": "Journal/2026-05-05.md",
    "CanaryPw7781": "Areas/Servers.md",
    "GB82 WEST 1234 5698": "Areas/Bank.md",  # a valid IBAN; searched spaced and compact
    "CANARYKEYq9": "Areas/Servers.md",
    "Quixotrelpha": "Journal/2026-05-06 Quixotrelpha.md",  # private: true; its file name too (vault_inventory once listed it)
    "Vellumquartz": "Journal/2026-05-07.md",  # a #private paragraph
    "Zorblatnique": "Private/Zorblatnique plans.md",  # private folder: name and text
    "Mirthgrovel": "Journal/2026-05-08.md",  # a #private heading section
}
NOTES = {
    "Inbox/Call notes.md": "## Reflection\nI realize the call went better once I wrote to maya.canarybody@example.org "
                           "first and said what I needed plainly.\n",
    "Journal/2026-05-04.md": "## Call with lena.canaryhead@example.com #reflection\nI think the hardest part of the "
                             "call was admitting that the plan was mine and the delay was too.\n",
    "Inbox/Thread with ozzy.canaryfile@example.net.md": "## Reflection\nI realize the thread mattered more than the "
                                                        "plan itself, and that I had been avoiding it for weeks.\n",
    "Projects/Launch retro.md": "---\ntitle: Retro notes for rita.canarytitle@example.org\n---\n## Reflection\n"
                                "Looking back, the launch slipped because I said yes to every small request.\n",
    "Journal/2026-05-05.md": "I think rotating the deploy key early saved the week #reflection "
                             "#ghp_CanAryTagZq8Xw3Lm9Pt2Rk7Vb4Nc6Hd1Jf5Gs\n",
    "Areas/Servers.md": "## Reflection\nI realize I kept password: CanaryPw7781 in my notes for a year, and the "
                        "secret key wJalrXUtnFEMI/K7MDENG/bPxRfiCANARYKEYq9 too, which was careless of me.\n",
    "Areas/Bank.md": "## Reflection\nI think moving savings to GB82 WEST 1234 5698 7654 32 was the first grown-up "
                     "money decision I made this year.\n",
    "Journal/2026-05-06 Quixotrelpha.md": "---\nprivate: true\n---\n## Reflection\nI think Quixotrelpha is the word I "
                                     "use for the feeling I never tell anyone about.\n",
    "Journal/2026-05-07.md": "## Reflection\nI think the walk cleared my head more than the meeting did.\n\n"
                             "I realize Vellumquartz is still the thing I cannot say out loud. #private\n",
    "Private/Zorblatnique plans.md": "## Reflection\nI think Zorblatnique is what I will call the move.\n",
    "Journal/2026-05-08.md": "## Reflection\nI realize I rest better when the phone stays in the kitchen.\n\n"
                             "## Mirthgrovel thoughts #private\nI think Mirthgrovel is mine alone and stays so.\n",
}


def _vault(root):
    shutil.copytree(SAMPLE_VAULT, root)
    for rel, text in NOTES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def _hits(data: bytes) -> list[str]:
    """Canaries in ``data``, case-insensitive and whatever the spacing (an IBAN written compact or spaced)."""
    low = data.lower().replace(b" ", b"")
    return [c for c in CANARIES if c.lower().replace(" ", "").encode() in low]


def _sqlite_rows(path) -> bytes:
    """Every row of every table, as text (a second look beside the raw bytes: pages may hold compressed cells)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump()).encode("utf-8", "replace")
    finally:
        con.close()


def _leaks_under(root) -> dict[str, list[str]]:
    found = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        hits = _hits(p.read_bytes())
        if p.suffix == ".db" or p.name.endswith(".sqlite"):
            hits += _hits(_sqlite_rows(p))
        hits += _hits(str(p.relative_to(root)).encode())  # a file named after a canary
        if hits:
            found[str(p.relative_to(root))] = sorted(set(hits))
    return found


@pytest.mark.slow
def test_no_canary_reaches_any_file_log_or_the_server(tmp_path, monkeypatch, capfd):
    from dagster import DagsterInstance

    from forge_pipeline.config import load_config
    from forge_pipeline.definitions import defs
    from forge_pipeline_tests.helpers import Server
    from forge_pipeline_tests.tiny_models import make_tiny_llama

    vault, home, dagster_home = _vault(tmp_path / "vault"), tmp_path / "forge_home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy2(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    base = make_tiny_llama(tmp_path / "tiny_base")
    for k, v in {"FORGE_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "FORGE_VAULT": str(vault),
                 "FORGE_TRAIN_BASE_MODEL": str(base), "FORGE_TRAIN_MAX_STEPS": "2", "FORGE_TRAIN_BATCH_SIZE": "4",
                 "FORGE_TRAIN_MAX_SEQ_LENGTH": "256", "FORGE_TRAIN_GRADIENT_ACCUMULATION_STEPS": "1",
                 "FORGE_TRAIN_EVAL_STEPS": "", "FORGE_SERVING_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(k, v) if v else monkeypatch.delenv(k, raising=False)

    job = defs().get_job_def("forge_job")
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(run_config={"export": {"quantization": "f16"}}, instance=instance,
                                        raise_on_error=False)
        failures = [e.message for e in result.all_events if e.is_failure]
        assert result.success, failures
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["no_personal_data_in_curated"] and checks["curated_jsonl_schema"], checks
        # asset previews show redacted text: the placeholders are there, the canaries are not
        extracted_md = result.asset_materializations_for_node("extracted_examples")[0].metadata
        gguf_md = result.asset_materializations_for_node("model_export")[0].metadata
        events = "\n".join(str(e) for e in result.all_events)
        assert "[EMAIL]" in (home / "training_data" / "extracted.jsonl").read_text()
        assert "redactions" in extracted_md
        assert not _hits(events.encode()), _hits(events.encode())
        run_logs = "\n".join(str(e) for e in instance.all_logs(result.run_id))
        assert not _hits(run_logs.encode())

    model = gguf_md["path"].value
    base_models = load_config().base_models_dir
    base_ggufs = sorted(base_models.rglob("*.gguf")) if base_models.exists() else []
    server = Server(home, model=base_ggufs[0] if base_ggufs else model).wait(timeout=180)
    try:
        if base_ggufs:  # an adapter export: served on its base, as the deploy step does
            r = server.post("/admin/reload-model", json={"model_path": model, "base_path": str(base_ggufs[0])})
            assert r.status_code == 200, r.text
        r = server.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Looking back on the thread, what stands out? My e-mail is "
                                                     "written nowhere here."}], "max_tokens": 16})
        assert r.status_code == 200, r.text
        server_log = server.output()
    finally:
        server.stop()
    assert "/v1/chat/completions" in server_log, server_log[-2000:]  # the log was captured, with the request

    out, err = capfd.readouterr()
    # the stores searched are the real ones: Dagster's sqlite databases and the pipeline's outputs are there
    searched = {p.name for p in home.rglob("*") if p.is_file()} | {p.name for p in dagster_home.rglob("*")}
    assert {"runs.db", "extracted.jsonl", "curated.jsonl", "extraction-cache.json"} <= searched, sorted(searched)
    # and the event log stores the asset previews as plain bytes (so a leaked value would be found there)
    assert any(b"[EMAIL]" in p.read_bytes() for p in (home / "dagster").rglob("*.db")), "previews not in the event log"
    leaks = {**_leaks_under(home), **_leaks_under(dagster_home)}
    for name, text in (("terminal output", out + err), ("serving log", server_log)):
        if _hits(text.encode()):
            leaks[name] = _hits(text.encode())
    assert leaks == {}, leaks
    # the search is able to find them: each canary is in the vault it was planted in
    vault_bytes = b"\n".join(p.read_bytes() + str(p).encode() for p in vault.rglob("*.md"))
    assert sorted(_hits(vault_bytes)) == sorted(CANARIES)
