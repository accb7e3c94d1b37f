import pytest

from forge_pipeline.extraction.redaction import find_personal_data, redact


@pytest.mark.parametrize("text,label", [
    ("mail jane.doe+x@example.co.uk now", "EMAIL"),
    ("call +1 (415) 555-0132 later", "PHONE"),
    ("call 415-555-0176 later", "PHONE"),
    ("ring 06 12 34 56 78 tonight", "PHONE"),
    ("card 4111 1111 1111 1111 used", "CARD"),
    ("key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c here", "API_KEY"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "API_KEY"),
    ("aws AKIAIOSFODNN7EXAMPLE key", "API_KEY"),
    ("link https://nas.example/login?user=sam&token=f8Kq29XzLm71 ok", "TOKEN"),
    ("link https://bob:hunter2@db.example/ ok", "CREDENTIALS"),
])
def test_each_kind_is_redacted_with_its_placeholder(text, label):
    out, counts = redact(text)
    assert counts[label] == 1
    assert f"[{label}]" in out
    assert find_personal_data(out) == []


@pytest.mark.parametrize("text", [
    "On 2026-03-14 at 10.30 I ran 6.2 km in 31:40.",
    "Order 1234 5678 9012 3456 arrived.",  # fails the Luhn check: not a card
    "PR #412 merged; version 1.13.28 released.",
])
def test_ordinary_numbers_survive(text):
    out, counts = redact(text)
    assert out == text and not counts


def test_url_keeps_its_shape():
    out, _ = redact("https://api.example.com/v1?user=3&token=abc123XYZ&x=1")
    assert out == "https://api.example.com/v1?user=3&token=[TOKEN]&x=1"
