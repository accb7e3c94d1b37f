"""`forge export`: adapter -> GGUF under FORGE_HOME/models."""
from __future__ import annotations

import sys
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def cmd_export(args) -> int:
    from tqdm import tqdm

    from forge_pipeline.export.export import EXPORT_STAGES, export_model
    from forge_pipeline.export.gguf import default_quantization
    from forge_pipeline.export.validate import degenerate_problems, load_problems, parity_problems
    from forge_pipeline.training.base_model import cuda_available

    config = _config(args)
    from forge_pipeline.training.manifest import AdapterManifest

    adapter = Path(args.adapter) if args.adapter else config.adapter_dir
    manifest = AdapterManifest.read_if_exists(adapter)
    base = manifest.base_model.name if manifest else None
    quant = args.quant or default_quantization(base, cuda_available())
    with tqdm(total=len(EXPORT_STAGES), desc="export", unit="stage", file=sys.stderr) as bar:
        def on_stage(name: str) -> None:
            bar.update(EXPORT_STAGES.index(name) - bar.n)
            bar.set_postfix_str(name)

        report = export_model(adapter, config.models_dir, quant=quant, name=args.name, eval_path=config.eval_path,
                              on_stage=on_stage)
        bar.update(bar.total - bar.n)
    print(f"{report.status}: {report.gguf_path} ({report.size_mb} MB, {report.quantization}, sha256 {report.sha256[:16]}...)")
    problems = load_problems(report.validation) + degenerate_problems(report.validation) + parity_problems(report.validation)
    for p in problems:
        print(f"validation: {p}", file=sys.stderr)
    return 1 if problems else 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="adapter -> merged 16-bit -> GGUF (FORGE_HOME/models/<version>/)")
    p.add_argument("--adapter", help="adapter folder (default: FORGE_HOME/training/final)")
    p.add_argument("--quant", choices=["q4_k_m", "q5_k_m", "q8_0", "f16"])
    p.add_argument("--name", default="companion")
    p.set_defaults(func=cmd_export)
