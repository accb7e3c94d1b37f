"""Small ConfigurableResources. Each wraps settings or a client; the core never sees Dagster."""

from typing import Optional

from dagster import ConfigurableResource

from forge_pipeline.config import ForgeSettings, load_config


class ForgeSettingsResource(ConfigurableResource):
    """Pipeline settings: the environment (FORGE_*), with optional per-deployment overrides."""

    home: Optional[str] = None
    vault: Optional[str] = None

    def settings(self) -> ForgeSettings:
        return load_config(home=self.home, vault=self.vault)


class TrainerLauncher(ConfigurableResource):
    """How the trainer process is started: a local subprocess here. Swap for another Pipes client (e.g.
    dagster-k8s's PipesK8sClient) to train on a GPU node; the entry point stays the same module."""

    python: Optional[str] = None  # default: this interpreter
    env: dict = {}

    def run(self, context, extras: dict):
        import os
        import sys

        from dagster import PipesSubprocessClient

        cmd = [self.python or sys.executable, "-m", "forge_pipeline.training.pipes_entry"]
        client = PipesSubprocessClient(env={**os.environ, **self.env})
        return client.run(command=cmd, context=context, extras=extras)


class ServingClient(ConfigurableResource):
    """The serving process's admin API. The admin token is read at call time from the environment variable
    named by ``admin_token_env`` (default FORGE_ADMIN_TOKEN), so no secret lives in run config."""

    url: Optional[str] = None  # default: FORGE_SERVING_URL, else http://127.0.0.1:7373
    admin_token_env: str = "FORGE_ADMIN_TOKEN"
    max_attempts: int = 6
    backoff_s: float = 2.0
    timeout_s: float = 600.0

    @property
    def base_url(self) -> str:
        import os

        return self.url or os.environ.get("FORGE_SERVING_URL", "http://127.0.0.1:7373")

    def reload(self, model_path: str, log=print) -> dict:
        import os
        import time

        import httpx

        token = os.environ.get(self.admin_token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = httpx.post(f"{self.base_url}/admin/reload-model", json={"model_path": model_path},
                               headers=headers, timeout=self.timeout_s)
                if r.status_code == 200:
                    return r.json()
                message = r.json().get("error", {}).get("message", r.text) if r.content else r.reason_phrase
                if r.status_code not in (409, 502, 503, 504):
                    raise RuntimeError(f"serving refused the model ({r.status_code}): {message}")
                last = f"{r.status_code} {message}"
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.max_attempts:
                wait = self.backoff_s * 2 ** (attempt - 1)
                log(f"serving at {self.base_url} not ready ({last}); retry {attempt}/{self.max_attempts - 1} in {wait:.0f} s")
                time.sleep(wait)
        raise RuntimeError(f"could not deploy {model_path}: serving at {self.base_url} unreachable after "
                           f"{self.max_attempts} attempts ({last}). Start it with `forge serve`.")
