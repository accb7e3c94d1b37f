"""The sample vault's planted secrets (examples/build_sample_vault.py, PRIVACY_NOTES) never reach the extracted or
curated data, nor anything else written under FORGE_HOME; its harmless numbers come through untouched."""
import json

import pytest

from forge_pipeline.curation.curate import curate, read_curated
from forge_pipeline.curation.validators import personal_data_problems
from forge_pipeline.extraction.extractor import TrainingDataExtractor

PLANTED = [
    "FR76 3000 6000 0112 3456 7890 189", "3000 6000 0112", "DE89370400440532013000",   # IBAN spaced, compact
    "4111 1111 1111 1111",                                                             # card
    "06 12 34 56 78", "07911 123456", "7911 123456",                                   # FR / UK mobiles
    "Tr0ub4dor", "wJalrXUtnFEMI", "bPxRfiCYEXAMPLEKEY",                                # password, AWS secret
    "s3cretPass", "admin:s3cret",                                                      # postgres URL
    "b3BlbnNzaC1rZXktdjEA", "QyNTUxOQAAACDx1kYk", "OPENSSH PRIVATE KEY",               # PEM block, whole
    "ghp_abcdef", "xoxb-1234",                                                         # service tokens
    "536-22-8726",                                                                     # US SSN
    "claire.martin", "maya.lee", "example.fr",                                         # e-mails in a heading, a file name
]
SURVIVE = [
    "I think between 2024 2025 2026 the numbers 1000 2000 3000 grew faster than my attention did.",
    "Invoice 2026-0042-117 was paid on 2026-03-14 at 10:30, order 1234 5678 9012 3456 arrived on time, "
    "and version 1.13.28 shipped before lunch",
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, sample_vault):
    from forge_pipeline.config import load_config
    home = tmp_path_factory.mktemp("home")
    config = load_config(home=str(home), vault=str(sample_vault))
    ex = TrainingDataExtractor(config)
    extracted = ex.extract()
    ex.save_to_jsonl()
    curate(config)
    train, evals = read_curated(config)
    return home, extracted, train + evals


def test_every_planted_secret_is_redacted_in_extracted_and_curated_output(outputs):
    home, extracted, curated = outputs
    for rows in (extracted, curated):
        text = json.dumps(rows, ensure_ascii=False)
        leaked = [s for s in PLANTED if s in text]
        assert leaked == []
        for placeholder in ("[IBAN]", "[CARD]", "[PHONE]", "[SECRET]", "[API_KEY]", "[CREDENTIALS]", "[EMAIL]",
                            "[NATIONAL_ID]"):
            assert placeholder in text, placeholder
    # nothing else written under FORGE_HOME holds them either (caches, stats, reports)
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode("utf-8", "replace")
            assert [s for s in PLANTED if s in data] == [], path


def test_headings_titles_and_file_names_are_redacted_but_keep_their_shape(outputs):
    _, extracted, _ = outputs
    by_source = {r["source_file"]: r for r in extracted}
    assert "Inbox/Thread with [EMAIL].md" in by_source
    sections = {r["section"] for r in extracted}
    assert "Call with [EMAIL] about the move" in sections
    bank = by_source["Areas/Admin/Bank and accounts.md"]
    assert "[IBAN]" in bank["messages"][1]["content"]  # the title, in the user turn
    assert bank["redactions"]["IBAN"] >= 2
    server = by_source["Areas/Admin/Server access.md"]["messages"][2]["content"]
    assert "postgres://[CREDENTIALS]@db.internal.example:5432/app" in server and "[EMAIL]" not in server
    assert '"temporary": [SECRET] The tokens' in server  # the PEM block went whole


def test_harmless_numbers_survive_and_the_curated_set_passes_the_independent_check(outputs):
    _, extracted, curated = outputs
    answers = " ".join(r["messages"][2]["content"] for r in extracted)
    for sentence in SURVIVE:
        assert sentence in answers
    assert personal_data_problems(extracted) == [] and personal_data_problems(curated) == []
