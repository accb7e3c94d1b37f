"""Former name of forge_pipeline.export.pipeline, kept so existing imports keep working; import from
``forge_pipeline.export.pipeline`` (export_model) and ``forge_pipeline.export.manifest`` (ExportManifest)."""
from forge_pipeline.export.manifest import LAST_EXPORT, MANIFEST  # noqa: F401
from forge_pipeline.export.pipeline import (  # noqa: F401
    ADAPTER_STAGES,
    EXPORT_STAGES,
    MERGED_STAGES,
    ExportReport,
    export_model,
    export_stages,
    find_export,
    last_export,
    validate_export,
)
