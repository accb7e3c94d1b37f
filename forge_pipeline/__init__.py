"""forge_pipeline: an Obsidian-style vault -> a private, nightly fine-tuned companion model.

``dagster_definitions`` (the project's Dagster definitions, forge_pipeline.definitions.defs) is resolved on
first access, so `import forge_pipeline.config` or the `forge` CLI do not pay for importing Dagster, while
`dagster job execute -m forge_pipeline` still finds it. (It is not called ``defs``: that name is the
forge_pipeline/defs/ folder of the `dg` layout.)
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "dagster_definitions":
        from forge_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'forge_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["__version__", "dagster_definitions"]
