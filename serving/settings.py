"""Serving settings (environment prefix FORGE_, like the pipeline's).

Where serving lives is ONE setting, FORGE_SERVING_URL (default http://127.0.0.1:7373): the server binds to its
host and port (unless `forge serve --host/--port` say otherwise) and every client (`forge reload`, the Dagster
deploy, `serving.client.ServingAdminClient`) talks to it."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:7373"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"FORGE_SERVING_URL must look like http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")

    home: Path = Field(Path("~/.companion"), description="FORGE_HOME: deployment history lives in serving/ under it.")
    serving_url: str = Field(DEFAULT_URL, description="FORGE_SERVING_URL: where serving lives. The server binds to "
                             "its host and port (unless `forge serve --host/--port`); clients send requests "
                             "there. Anything but loopback needs an admin token.")
    model_path: Optional[Path] = Field(None, description="FORGE_MODEL_PATH: GGUF served when no deployment is recorded.")
    base_path: Optional[Path] = Field(None, description="FORGE_BASE_PATH: the base GGUF that model_path goes on when "
                                      "model_path is a LoRA adapter GGUF.")
    n_ctx: int = Field(2048, ge=128, description="Context size in tokens.")
    n_threads: Optional[int] = Field(None, ge=1, description="CPU threads for generation (default: half the "
                                     "cores, llama-cpp-python's choice).")
    n_threads_batch: Optional[int] = Field(None, ge=1, description="CPU threads for reading prompts (default: "
                                           "n_threads). More than n_threads reads long prompts faster on an "
                                           "idle machine, but ggml's threads wait for each other after every "
                                           "op, so on busy cores one waits for another that is descheduled.")
    n_gpu_layers: int = Field(0, description="Layers offloaded to the GPU (-1: all), when llama.cpp was built with GPU support.")
    malloc_mmap_threshold: int = Field(2 << 20, ge=0, description="FORGE_MALLOC_MMAP_THRESHOLD: bytes from which glibc "
                                       "maps each allocation on its own, so a freed LoRA adapter's buffer goes back to "
                                       "the OS instead of staying resident in malloc's heap (serving.worker."
                                       "keep_large_buffers_out_of_the_heap); 0 leaves glibc's dynamic default.")
    allowed_model_roots: Optional[list[Path]] = Field(None, description="Folders a reload may load from "
                                                      "(default: FORGE_HOME/models, FORGE_HOME/base_models and "
                                                      "FORGE_HOME/training).")
    admin_token: Optional[str] = Field(None, description="FORGE_ADMIN_TOKEN: when set, /admin/* needs 'Authorization: "
                                       "Bearer <token>'. Required to bind to a non-loopback address.")
    api_token_required: Optional[bool] = Field(None, description="FORGE_API_TOKEN_REQUIRED: the admin token also "
                                               "protects /v1/* (chat, models). Default: on whenever the server "
                                               "binds beyond loopback, off on loopback.")
    trusted_hosts: list[str] = Field(default_factory=list, description="FORGE_TRUSTED_HOSTS (JSON list): Host "
                                     "header names served besides localhost, 127.0.0.1 and [::1] (DNS-rebinding "
                                     "guard). Binding to a specific address trusts that address too.")
    allowed_origins: list[str] = Field(default_factory=list, description="FORGE_ALLOWED_ORIGINS (JSON list): "
                                       "browser origins (e.g. http://localhost:3000) allowed to POST; other "
                                       "foreign origins are refused with 403.")
    max_request_bytes: int = Field(1_000_000, description="Larger request bodies are refused with 413 (counted "
                                   "while they arrive).")
    max_tokens_limit: int = Field(1024, description="Upper bound for a request's max_tokens.")
    default_max_tokens: int = Field(256, description="max_tokens when a request gives none.")
    # Serving's sampling defaults: what a request that sets none gets, and what the nightly evaluation's probes
    # are answered with (evaluation/served.py reads them here), so the gate measures what a person gets.
    default_temperature: float = Field(0.7, ge=0.0, le=2.0, description="temperature when a request gives none.")
    default_top_p: float = Field(0.95, gt=0.0, le=1.0, description="top_p when a request gives none.")
    default_repeat_penalty: float = Field(1.1, gt=0.0, le=2.0, description="llama.cpp's repetition penalty "
                                          "(over the last 64 tokens) when a request gives none (`repeat_penalty`, "
                                          "llama-cpp-python's extension of the OpenAI API). 1.0: off.")
    max_queued_requests: int = Field(32, ge=0, description="Chat requests waiting for the model beyond the one "
                                     "generating; more get 429 with Retry-After.")
    validation_timeout_s: float = Field(180, description="Time a new GGUF gets to load and generate in the probe process.")

    @field_validator("trusted_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, v):
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    def with_bind(self, host: Optional[str] = None, port: Optional[int] = None) -> ServingSettings:
        """`forge serve --host/--port`: this process binds elsewhere than FORGE_SERVING_URL says."""
        if not host and not port:
            return self
        h, p = split_url(self.serving_url)
        host = host or h
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return self.model_copy(update={"serving_url": f"http://{host}:{port or p}"})

    @property
    def bind_host(self) -> str:
        return split_url(self.serving_url)[0]

    @property
    def bind_port(self) -> int:
        return split_url(self.serving_url)[1]

    @property
    def beyond_loopback(self) -> bool:
        return not is_loopback(self.bind_host)

    @property
    def protect_api(self) -> bool:
        wanted = self.beyond_loopback if self.api_token_required is None else self.api_token_required
        return bool(wanted and self.admin_token)

    @property
    def allowed_host_names(self) -> Optional[set[str]]:
        """Host header names accepted; None: any (bound to every interface with no names configured, where
        the token, required there, guards every route instead)."""
        names = {n.lower().strip("[]") for n in (*LOOPBACK_NAMES, *self.trusted_hosts)}
        bind = self.bind_host.strip("[]")
        if bind in ("0.0.0.0", "::", ""):
            return names if self.trusted_hosts else None
        return names | {bind.lower()}

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def model_roots(self) -> list[Path]:
        roots = self.allowed_model_roots or [self.home_dir / "models", self.home_dir / "base_models",
                                             self.home_dir / "training"]
        return [Path(r).expanduser().resolve() for r in roots]

    @property
    def deployments_path(self) -> Path:
        return self.home_dir / "serving" / "deployments.json"
