"""The blocking personal-data check is independent of the redactor: what the redactor misses, it catches."""
import json
import subprocess
import sys
from collections import Counter

import pytest

from forge_pipeline.config import load_config
from forge_pipeline.curation.validators import personal_data_problems
from forge_pipeline.extraction import note as note_module
from forge_pipeline.extraction.extractor import TrainingDataExtractor
from forge_pipeline.privacy.check import find_kinds, row_problems
from forge_pipeline_tests.test_redaction import AWS_SECRET, PEM

SECRETS = {
    "e-mail": "mail jane.doe+x@example.co.uk now",
    "FR mobile": "ring 06 12 34 56 78 tonight",
    "UK mobile": "text 07911 123456 tonight",
    "US phone": "call 415-555-0176 later",
    "IBAN spaced": "IBAN FR76 3000 6000 0112 3456 7890 189",
    "IBAN compact": "wire DE89370400440532013000",
    "card": "card 4111 1111 1111 1111",
    "SSN": "ssn 536-22-8726",
    "IP": "server 192.168.1.20",
    "AWS secret": f"aws_secret_access_key = {AWS_SECRET}",
    "AWS secret alone": f"the key {AWS_SECRET} pasted",
    "password line": "password: hunter2",
    "postgres URL": "postgres://admin:s3cretPass@db.internal.example:5432/app",
    "PEM": PEM,
    "GitHub": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AWS key id": "AKIAIOSFODNN7EXAMPLE",
    "URL token": "https://nas.example/login?user=sam&token=f8Kq29XzLm71",
}
CLEAN = [
    "between 2024 2025 2026 the numbers 1000 2000 3000 grew",
    "Invoice 2026-0042-117 is paid.",
    "Order 1234 5678 9012 3456 arrived.",
    "On 2026-03-14 at 10.30 I ran 6.2 km in 31:40, (day 424605), 1,250,000 views.",
    "PR #412 merged; version 1.13.28 released.",
    "Journal/2026/08/2026-08-05.md",
    "password: [SECRET] and postgres://[CREDENTIALS]@db.internal.example:5432/app, call [PHONE]",
    "What's my honest take on my day on 2026-08-05 (Notes)?",
]


@pytest.mark.parametrize("name", SECRETS)
def test_the_check_finds_each_kind_in_raw_text(name):
    assert find_kinds(SECRETS[name]), name


@pytest.mark.parametrize("text", CLEAN)
def test_the_check_passes_clean_and_redacted_text(text):
    assert find_kinds(text) == []


def test_the_check_shares_no_code_with_the_redactor():
    # importing the check must not load the redactor (its patterns, its Presidio recognizers)
    code = ("import sys; import forge_pipeline.privacy.check as c; c.find_kinds('mail a@b.example 06 12 34 56 78');"
            "print(any(m.startswith(('forge_pipeline.extraction', 'presidio')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_problems_name_the_field_and_kind_never_the_value():
    row = {"id": "0123456789abcdef", "messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "password: hunter2"}],
           "source_file": "Inbox/jane.doe@example.com.md", "section": "Call 06 12 34 56 78", "tags": ["#ok"]}
    problems = row_problems(row)
    assert problems == ["example 0123456789abcdef: KEYWORD_LINE in its assistant turn",
                        "example 0123456789abcdef: EMAIL in its source_file",
                        "example 0123456789abcdef: PHONE in its section"]
    assert "hunter2" not in repr(problems) and "jane.doe" not in repr(problems)


def _vault(tmp_path):
    vault = tmp_path / "vault"
    (vault / "Inbox").mkdir(parents=True)
    (vault / "Inbox" / "call jane.doe@example.com.md").write_text(
        "## Reflection\nI think the bank call went well, my IBAN FR76 3000 6000 0112 3456 7890 189 is sorted.\n",
        encoding="utf-8")
    (vault / "Inbox" / "keys.md").write_text(
        "## Ring 06 12 34 56 78 about the server\n"
        f"I realize the server secret {AWS_SECRET} was in my notes for a year and password: hunter2 too.\n",
        encoding="utf-8")
    return vault


def test_a_redactor_miss_is_caught_and_blocks(tmp_path, monkeypatch):
    vault = _vault(tmp_path)
    cfg = load_config(home=str(tmp_path / "home"), vault=str(vault))
    rows = TrainingDataExtractor(cfg, use_cache=False).extract()
    assert rows and personal_data_problems(rows) == []  # the redactor did its job

    # now the redactor misses everything: the check still sees every kind, in every field
    monkeypatch.setattr(note_module, "redact", lambda text, *a, **k: (text, Counter()))
    leaked = TrainingDataExtractor(cfg, use_cache=False).extract()
    assert "hunter2" in json.dumps(leaked)
    problems = "\n".join(personal_data_problems(leaked))
    for kind in ("IBAN", "PHONE", "RANDOM_STRING", "KEYWORD_LINE", "EMAIL"):
        assert kind in problems, (kind, problems)
    assert "source_file" in problems and "hunter2" not in problems


def test_the_sample_vault_passes_the_check(config):
    rows = TrainingDataExtractor(config).extract()
    assert personal_data_problems(rows) == []


def test_each_row_reports_its_redactions_and_the_phone_regions_setting_applies(tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "berlin.md").write_text("## Reflection\nI think calling the Berlin office on 030 901820 early helped, "
                                     "and mailing ops@example.com after.\n", encoding="utf-8")
    rows = TrainingDataExtractor(load_config(home=str(tmp_path / "h1"), vault=str(vault))).extract()
    assert rows[0]["redactions"] == {"EMAIL": 1, "PHONE": 1} and "030 901820" not in json.dumps(rows)
    # read as a US-only vault, a German national number is not a phone number (and the cache is not reused)
    us = TrainingDataExtractor(load_config(home=str(tmp_path / "h1"), vault=str(vault), phone_regions=["US"])).extract()
    assert us[0]["redactions"] == {"EMAIL": 1} and "030 901820" in json.dumps(us)
