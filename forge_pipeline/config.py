"""Settings for the whole pipeline, read from the environment (prefix ``FORGE_``).

Every field can be set as an environment variable, e.g. ``FORGE_HOME=/data/companion`` or
``FORGE_NEAR_DUP_THRESHOLD=0.8``; list fields take JSON (``FORGE_EXCLUDED_FOLDERS='[".obsidian"]'``).
Every training setting can be set as ``FORGE_TRAIN_<NAME>`` (e.g. ``FORGE_TRAIN_BASE_MODEL=/models/x.gguf``,
``FORGE_TRAIN_LEARNING_RATE=1e-4``; see ``training_overrides``). A FORGE_* variable that no setting reads is
reported with the nearest known name, so a typo is not silently ignored.
This module imports nothing heavy: the CLI and Dagster definitions load it on every start.
(A little over 300 lines: it is the one owner of every setting and path, so they stay in one schema.)
"""
from __future__ import annotations

import difflib
import os
import re
import typing
import warnings
from pathlib import Path
from typing import Optional

from pydantic import Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VAULT = REPO_ROOT / "examples" / "vault"

DEFAULT_REFLECTION_TAGS = ["reflection", "insight", "learning", "decision", "analysis", "takeaway", "realization"]
# The seed's phrasings are the floor ("I think", "I feel", "I realize", "I wonder", "Looking back",
# "On one hand...", "Ultimately decided"); the rest are common introspective phrasings, British spellings
# included. An apostrophe matches ' and ’ alike.
DEFAULT_REFLECTION_PATTERNS = [
    "I think", "I feel", "I realize", "I realized", "I've realized", "I realise", "I realised", "I've realised",
    "I wonder", "Looking back", "On one hand", "On the one hand", "On the other hand", "Ultimately decided",
    "I learned", "I learnt", "I've learned", "I've learnt", "In hindsight", "In retrospect", "What if",
    "I decided", "I noticed", "I've noticed", "It occurs to me", "It struck me", "It dawned on me",
    "I've been thinking", "I keep thinking", "I keep coming back to", "Note to self", "The lesson",
    "I should have", "Next time I", "I'm starting to", "I suspect", "I'm grateful", "I regret",
    "I recognise", "I recognize", "What I want", "I'm learning",
]
DEFAULT_REFLECTION_SECTIONS = ["Reflection", "Reflections", "Insights", "Lessons learned", "Looking back", "Takeaways",
                               "Evening review", "Evening reflection", "Daily review", "Weekly review",
                               "Retrospective", "What I learned", "Lessons", "Thoughts"]
DEFAULT_SUMMARY_SECTIONS = ["Day in short", "Summary", "Today"]
DEFAULT_SYSTEM_PROMPT = "You are a thoughtful, reflective companion."


class ForgeSettings(BaseSettings):
    """Where the data lives and how the vault is read, curated and split."""

    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")
    _training_env: dict = PrivateAttr(default_factory=dict)

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except SettingsError as e:  # pydantic-settings names neither the variable nor the expected form
            raise ValueError(_settings_error_message(e)) from None

    def model_post_init(self, __context) -> None:
        self._training_env = {k: v for k, v in os.environ.items() if k.startswith(TRAIN_ENV_PREFIX)}
        for message in unknown_variable_warnings(os.environ):
            warnings.warn(message, ForgeSettingsWarning, stacklevel=4)

    home: Path = Field(Path("~/.companion"), description="Data home (FORGE_HOME): training data, caches, "
                       "review decisions, adapters, models and the Dagster storage live under it.")
    vault: Path = Field(SAMPLE_VAULT, description="The Markdown vault to learn from (FORGE_VAULT). Read-only to us.")

    # Extraction
    reflection_tags: list[str] = Field(DEFAULT_REFLECTION_TAGS, description="Tags marking a reflection "
                                       "(without '#', case-insensitive; nested tags such as reflection/work count).")
    reflection_patterns: list[str] = Field(DEFAULT_REFLECTION_PATTERNS, description="Phrasings marking a "
                                           "reflection, matched case-insensitively on word boundaries.")
    reflection_sections: list[str] = Field(DEFAULT_REFLECTION_SECTIONS, description="Headings whose whole "
                                           "section is one reflection (case-insensitive, exact heading text).")
    summary_sections: list[str] = Field(DEFAULT_SUMMARY_SECTIONS, description="Headings holding the day's "
                                        "summary, used as context in the user turn.")
    excluded_folders: list[str] = Field([".obsidian", "templates", ".trash"], description="Folder names "
                                        "skipped anywhere in the vault (case-insensitive).")
    max_note_bytes: int = Field(1_000_000, description="Notes larger than this are skipped with a reason.")
    min_unit_words: int = Field(6, description="Paragraphs or items shorter than this are never examples.")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System turn of every chat example.")
    follow_external_symlinks: bool = Field(False, description="Follow symlinks (files and folders) that lead "
                                           "outside the vault. Off: each such link is a warning and is not read.")
    note_time_budget_s: float = Field(20.0, gt=0, description="CPU seconds one note may take to extract; a note "
                                      "over it is skipped with a warning (a 1 MB note of normal text takes ~2 s).")
    extract_workers: int = Field(0, ge=0, description="Processes parsing notes at once. 0: one per CPU core "
                                 "when at least 400 notes need parsing (fewer: this process; a worker's start "
                                 "costs ~1.3 s of CPU), 1: always this process. The output is the same either way.")
    private_folders: list[str] = Field(["Private"], description="Folder names (anywhere in the vault, "
                                       "case-insensitive) whose notes are never read: counted, never named.")
    private_globs: list[str] = Field([], description="Globs on the vault-relative path (e.g. \"Journal/*/therapy*\","
                                     " \"People/**\") marking notes as private, like private_folders.")
    private_tags: list[str] = Field(["private"], description="A note with one of these tags in its frontmatter "
                                    "(or `private: true`) is excluded; a paragraph, list item or heading carrying "
                                    "one inline (#private) excludes that paragraph, item or section.")
    phone_regions: list[str] = Field(["US", "GB", "FR", "DE"], description="Regions (ISO 3166 codes) whose "
                                     "national format is read as a phone number when written without a country "
                                     "code (e.g. 06 12 34 56 78 in FR); numbers with +country are found whatever "
                                     "this list. Each region adds ~0.1 ms per text holding a long digit run.")

    # Curation
    near_dup_threshold: float = Field(0.7, description="Jaccard similarity (MinHash LSH over word 3-grams) "
                                      "above which a later example counts as a near-duplicate of an earlier one.")
    min_chars: int = Field(40, description="Curated assistant turns are at least this long.")
    max_chars: int = Field(4000, description="Curated assistant turns are at most this long.")
    eval_fraction: float = Field(0.1, description="Share of curated examples held out for eval (at least 1).")
    min_curated_examples: int = Field(50, description="The minimum-curated-examples check fails below this.")
    min_examples_severity: str = Field("ERROR", description="Severity of that check: ERROR blocks the run, WARN does not.")
    backtranslate_user_turns: Optional[bool] = Field(None, description="User turns written by a local model from "
                                                     "each reflection and its note's context (curation/user_turns.py); "
                                                     "templates stay the fallback. Unset: on with a CUDA GPU, off on "
                                                     "the CPU (cost measured there: see the README).")
    backtranslation_model: Optional[Path] = Field(None, description="GGUF that writes those user turns "
                                                  "(default: the embedded Gemma 3 270M; local only, never a hosted API).")

    # Orchestration and everyday use (Dagster, `forge up`)
    dagster_log_level: str = Field("INFO", description="Level of the run log Dagster prints to the terminal "
                                   "(`dg launch`, `dagster job execute`); DEBUG adds every engine event. The UI "
                                   "keeps all events whatever this is.")
    ui_port: int = Field(3000, ge=1, le=65535, description="Port of the Dagster web UI that `forge up` starts.")
    up_automation: bool = Field(True, description="`forge up` turns the nightly schedule and the deploy sensor "
                                "on (false: leaves them as they are in the UI).")
    verbose: bool = Field(False, description="Library chatter (warnings, Hugging Face progress bars and info "
                          "logs) in the terminal and in Dagster's trainer process; off by default, forge's own "
                          "progress lines replace it. `forge --verbose` sets it for the processes it starts.")

    # Schedule
    nightly_cron: str = Field("0 3 * * *", description="When the nightly run starts (FORGE_NIGHTLY_CRON, cron syntax).")
    timezone: Optional[str] = Field(None, description="IANA zone the cron is read in (FORGE_TIMEZONE); unset: the "
                                    "machine's local zone (see schedule_timezone).")

    # Export and disk use (forge_pipeline/export)
    keep_model_versions: int = Field(5, ge=1, description="Exported model versions kept under models/ after each "
                                     "export (FORGE_KEEP_MODEL_VERSIONS); the live model and serving's rollback "
                                     "target are kept beyond these. `forge models prune` applies it by hand.")

    # Evaluation and the deploy gate (forge_pipeline/evaluation; metric definitions in evaluation/metrics.py)
    evaluation_probes_path: Optional[Path] = Field(None, description="Probe prompts answered by base, live and "
                                                   "candidate each night: a JSON list of strings or one prompt per "
                                                   "line (default: the journaling prompts in evaluation/probes.py).")
    evaluation_max_examples: int = Field(32, ge=1, description="Eval conversations scored per model (the first N "
                                         "of the eval split; each costs one forward pass per model).")
    gate_kld_bounds: dict[str, float] = Field(
        {"f32": 0.005, "f16": 0.005, "bf16": 0.01, "q8_0": 0.02, "q6_k": 0.04, "q5_k_m": 0.06, "q4_k_m": 0.12},
        description="Largest mean KL divergence (nats/token) between the served file and the trained model, per "
                    "quantization of the served weights; a larger one means the export lost the fine-tune.")
    gate_loss_tolerance: float = Field(0.01, ge=0, description="A candidate may have an eval loss at most this "
                                       "fraction above the live model's (0.01 = 1%); the first model must beat the base.")
    gate_probe_tolerance: int = Field(0, ge=0, description="Extra probe answers that loop or invent turns the "
                                      "candidate may always have beyond the live model's.")
    gate_probe_alpha: float = Field(0.1, ge=0, le=1, description="Beyond that tolerance, more broken probe answers "
                                    "than the live model's refuse the candidate only when chance explains them "
                                    "with probability below this (one-sided Fisher exact test over the two sets of "
                                    "answers): the answers are samples, and one model's count moved 1 -> 4 of 8 "
                                    "with the seeds (bench/results/evaluation_speed.json). 0: any excess refuses.")
    gate_max_regurgitation_share: float = Field(0.25, ge=0, le=1, description="Largest share of probe answers "
                                                "that may copy 50+ characters verbatim from the training data.")
    gate_prompt_gain_ratio: float = Field(0.85, ge=0, description="A candidate whose prompt gain (how much an "
                                          "answer's own prompt lowers its loss against a neutral prompt, "
                                          "evaluation/metrics.py) is below this fraction of the live model's is "
                                          "refused when the drop is also beyond chance (gate_prompt_gain_alpha): "
                                          "the sign of answers trained under the wrong prompts, which the eval "
                                          "loss does not show. Measured on the sample vault: a good night 0.98 "
                                          "of the live model's, a scrambled night 0.67. 0 turns the rule off.")
    gate_prompt_gain_base_ratio: float = Field(0.6, ge=0, description="The same rule against the base: the "
                                               "only bar for the first model (and one whose live model has another "
                                               "vocabulary), and a floor every night against slides too small to "
                                               "see night to night. A fine-tune's prompt gain is lower than the "
                                               "base's by nature, "
                                               "since it learns what all the answers have in common, so the bar is "
                                               "lower. Measured on the sample vault (bench/results/quality.json, "
                                               "\"prompt_gain_models\"): good nights 0.75-0.80 of the base's, the "
                                               "scrambled night 0.52. 0 turns it off.")
    gate_prompt_gain_alpha: float = Field(0.05, ge=0, le=1, description="The prompt-gain drop refuses only when "
                                          "a paired sign-flip permutation test over the eval conversations gives "
                                          "it a chance below this were both models equally prompt-dependent.")

    @property
    def schedule_timezone(self) -> str:
        """FORGE_TIMEZONE, else the machine's local IANA zone (TZ, then /etc/localtime), else UTC: a 03:00
        nightly read in UTC is mid-evening for many users."""
        if self.timezone:
            return self.timezone
        tz = os.environ.get("TZ", "").lstrip(":")
        if tz and "/" in tz and not tz.startswith("/"):
            return tz
        try:
            target = os.path.realpath("/etc/localtime")
            if "zoneinfo/" in target:
                return target.split("zoneinfo/", 1)[1]
        except OSError:
            pass
        return "UTC"

    def training_overrides(self) -> dict:
        """Training settings from FORGE_TRAIN_<NAME> variables (read when these settings were), as overrides
        for ``forge_pipeline.training.config.resolve_training_config``; list values are JSON. Unknown names
        are left to the did-you-mean warning."""
        from forge_pipeline.training.config import field_names, parse_env_value

        out = {}
        for name in field_names():
            raw = self._training_env.get(TRAIN_ENV_PREFIX + name.upper())
            if raw is not None:
                out[name] = parse_env_value(name, raw)
        return out

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def vault_dir(self) -> Path:
        return self.vault.expanduser().resolve()

    @property
    def training_data_dir(self) -> Path:
        return self.home_dir / "training_data"

    @property
    def extracted_path(self) -> Path:
        return self.training_data_dir / "extracted.jsonl"

    @property
    def curated_path(self) -> Path:
        """The curated training split."""
        return self.training_data_dir / "curated.jsonl"

    @property
    def eval_path(self) -> Path:
        """The curated eval split, disjoint from curated.jsonl and stable across runs."""
        return self.training_data_dir / "curated_eval.jsonl"

    @property
    def curation_report_path(self) -> Path:
        return self.training_data_dir / "curation_report.json"

    @property
    def extraction_stats_path(self) -> Path:
        return self.training_data_dir / "extraction_stats.json"

    @property
    def cache_dir(self) -> Path:
        return self.home_dir / "cache"

    @property
    def review_decisions_path(self) -> Path:
        return self.home_dir / "review" / "decisions.json"

    @property
    def training_dir(self) -> Path:
        return self.home_dir / "training"

    @property
    def adapter_dir(self) -> Path:
        """The published adapter (training/final): the one place this path is built."""
        return self.training_dir / "final"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def base_models_dir(self) -> Path:
        """Base models converted once (HF folders from a GGUF; base GGUFs for adapter serving)."""
        return self.home_dir / "base_models"

    @property
    def evaluation_dir(self) -> Path:
        """Evaluation reports and gate decisions, one per candidate."""
        return self.home_dir / "evaluation"

    @property
    def serving_dir(self) -> Path:
        """The serving process's deployment history."""
        return self.home_dir / "serving"

    @property
    def logs_dir(self) -> Path:
        """Logs of the processes `forge up` supervises."""
        return self.home_dir / "logs"

    def relative_to_home(self, path: Path) -> str:
        """How manifests and pointers store a path: relative to FORGE_HOME when inside it, so moving the
        data home to another disk keeps every stored path right."""
        path = Path(path).expanduser().resolve()
        try:
            return path.relative_to(self.home_dir).as_posix()
        except ValueError:
            return str(path)

    def from_home(self, stored: str) -> Path:
        """Inverse of relative_to_home."""
        p = Path(stored)
        return p if p.is_absolute() else self.home_dir / p


TRAIN_ENV_PREFIX = "FORGE_TRAIN_"
# FORGE_* variables read by the serving package (it cannot import this one): its own settings class.
OTHER_VARIABLES = ("FORGE_SERVING_URL",)


class ForgeSettingsWarning(UserWarning):
    """A FORGE_* environment variable that no setting reads (most likely a typo)."""


def known_variables() -> set[str]:
    """Every FORGE_* variable some part of forge reads."""
    from forge_pipeline.training.config import field_names

    names = {f"FORGE_{n.upper()}" for n in ForgeSettings.model_fields}
    names |= {TRAIN_ENV_PREFIX + n.upper() for n in field_names()}
    try:
        from serving.settings import ServingSettings

        names |= {f"FORGE_{n.upper()}" for n in ServingSettings.model_fields}
    except ImportError:  # serving is installed separately
        pass
    return names | set(OTHER_VARIABLES)


def unknown_variable_warnings(environ) -> list[str]:
    known = sorted(known_variables())
    out = []
    for name in sorted(k for k in environ if k.startswith("FORGE_") and k not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        out.append(f"environment variable {name} is not a forge setting and is ignored{hint}")
    return out


def _settings_error_message(e: SettingsError) -> str:
    m = re.search(r'field "(\w+)"', str(e))
    if not m or m.group(1) not in ForgeSettings.model_fields:
        return str(e)
    name = m.group(1)
    var = f"FORGE_{name.upper()}"
    annotation = ForgeSettings.model_fields[name].annotation
    if any(typing.get_origin(a) is list for a in (annotation, *typing.get_args(annotation))):
        return (f"{var}={os.environ.get(var, '')!r}: expected a JSON list, e.g. {var}='[\"first\", \"second\"]'")
    return f"{var}={os.environ.get(var, '')!r}: {e}"


def load_config(**overrides) -> ForgeSettings:
    """The pipeline's settings: environment first, then ``overrides`` (e.g. ``vault=...``)."""
    return ForgeSettings(**{k: v for k, v in overrides.items() if v is not None})
