"""Serving settings (environment prefix FORGE_, like the pipeline's)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")

    home: Path = Field(Path("~/.companion"), description="FORGE_HOME: deployment history lives in serving/ under it.")
    serve_host: str = Field("127.0.0.1", description="FORGE_SERVE_HOST. Anything but loopback needs an admin token.")
    serve_port: int = Field(7373, description="FORGE_SERVE_PORT.")
    model_path: Optional[Path] = Field(None, description="FORGE_MODEL_PATH: GGUF served when no deployment is recorded.")
    n_ctx: int = Field(2048, ge=128, description="Context size in tokens.")
    n_threads: Optional[int] = Field(None, description="CPU threads for generation (default: llama.cpp's choice).")
    n_gpu_layers: int = Field(0, description="Layers offloaded to the GPU (-1: all), when llama.cpp was built with GPU support.")
    allowed_model_roots: Optional[list[Path]] = Field(None, description="Folders a reload may load from "
                                                      "(default: FORGE_HOME/models and FORGE_HOME/training).")
    admin_token: Optional[str] = Field(None, description="FORGE_ADMIN_TOKEN: when set, /admin/* needs 'Authorization: "
                                       "Bearer <token>'. Required to bind to a non-loopback address.")
    max_request_bytes: int = Field(1_000_000, description="Larger request bodies are refused with 413.")
    max_tokens_limit: int = Field(1024, description="Upper bound for a request's max_tokens.")
    default_max_tokens: int = Field(256, description="max_tokens when a request gives none.")
    validation_timeout_s: float = Field(180, description="Time a new GGUF gets to load and generate in the probe process.")

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def model_roots(self) -> list[Path]:
        roots = self.allowed_model_roots or [self.home_dir / "models", self.home_dir / "training"]
        return [Path(r).expanduser().resolve() for r in roots]

    @property
    def deployments_path(self) -> Path:
        return self.home_dir / "serving" / "deployments.json"
