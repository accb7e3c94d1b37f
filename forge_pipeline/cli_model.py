"""`forge` commands that touch models (train, export, status, reload, serve). Heavy imports stay inside."""
from __future__ import annotations


def add_commands(sub) -> None:
    """Filled in by the model and serving work; kept separate so the data commands stay light."""
