"""forge_pipeline: an Obsidian-style vault -> a private, nightly fine-tuned companion model.

``defs`` (the Dagster Definitions) is loaded on first access, so `import forge_pipeline.config` or the
`forge` CLI do not pay for importing Dagster; `dagster job execute -m forge_pipeline` still finds it.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "defs":
        from forge_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'forge_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "defs"]
