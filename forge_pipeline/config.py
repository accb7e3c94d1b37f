"""Settings for the whole pipeline, read from the environment (prefix ``FORGE_``).

Every field can be set as an environment variable, e.g. ``FORGE_HOME=/data/companion`` or
``FORGE_NEAR_DUP_THRESHOLD=0.8``; list fields take JSON (``FORGE_EXCLUDED_FOLDERS='[".obsidian"]'``).
This module imports nothing heavy: the CLI and Dagster definitions load it on every start.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VAULT = REPO_ROOT / "examples" / "vault"

DEFAULT_REFLECTION_TAGS = ["reflection", "insight", "learning", "decision", "analysis", "takeaway", "realization"]
DEFAULT_REFLECTION_PATTERNS = [
    "I think", "I realize", "I realized", "I've realized", "I learned", "I've learned", "Looking back",
    "In hindsight", "What if", "On one hand", "On the other hand", "Ultimately decided", "I decided",
    "I noticed", "I wonder", "It occurs to me", "The lesson", "I should have", "Next time I",
]
DEFAULT_REFLECTION_SECTIONS = ["Reflection", "Reflections", "Insights", "Lessons learned", "Looking back", "Takeaways"]
DEFAULT_SUMMARY_SECTIONS = ["Day in short", "Summary", "Today"]
DEFAULT_SYSTEM_PROMPT = "You are a thoughtful, reflective companion."


class ForgeSettings(BaseSettings):
    """Where the data lives and how the vault is read, curated and split."""

    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")

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

    # Curation
    near_dup_threshold: float = Field(0.7, description="Jaccard similarity (MinHash LSH over word 3-grams) "
                                      "above which a later example counts as a near-duplicate of an earlier one.")
    min_chars: int = Field(40, description="Curated assistant turns are at least this long.")
    max_chars: int = Field(4000, description="Curated assistant turns are at most this long.")
    eval_fraction: float = Field(0.1, description="Share of curated examples held out for eval (at least 1).")
    min_curated_examples: int = Field(50, description="The minimum-curated-examples check fails below this.")
    min_examples_severity: str = Field("ERROR", description="Severity of that check: ERROR blocks the run, WARN does not.")

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


def load_config(**overrides) -> ForgeSettings:
    """The pipeline's settings: environment first, then ``overrides`` (e.g. ``vault=...``)."""
    return ForgeSettings(**{k: v for k, v in overrides.items() if v is not None})
