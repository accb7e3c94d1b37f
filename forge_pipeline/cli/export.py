"""`forge export`: the trained adapter -> a versioned GGUF under FORGE_HOME/models (a LoRA adapter GGUF on a
cached base by default; --merged for one full GGUF plus an Ollama Modelfile)."""
from __future__ import annotations

import sys
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def cmd_export(args) -> int:
    from tqdm import tqdm

    from forge_pipeline.export.pipeline import export_model, export_stages
    from forge_pipeline.export.validate import degenerate_problems, load_problems, parity_problems

    config = _config(args)
    adapter = Path(args.adapter) if args.adapter else config.adapter_dir
    stages = export_stages(args.merged)
    keep = args.keep or config.keep_model_versions
    with tqdm(total=len(stages), desc="export", unit="stage", file=sys.stderr) as bar:
        def on_stage(name: str) -> None:
            bar.update(stages.index(name) - bar.n)
            bar.set_postfix_str(name)

        report = export_model(adapter, config.models_dir, quant=args.quant, name=args.name, eval_path=config.eval_path,
                              on_stage=on_stage, merged=args.merged, home=config.home_dir,
                              base_models_dir=config.base_models_dir, serving_dir=config.serving_dir,
                              keep_versions=keep, system_prompt=config.system_prompt)
        bar.update(bar.total - bar.n)
    what = f"adapter for base {report.base_gguf}" if report.kind == "adapter" else "merged"
    print(f"{report.status}: {report.gguf_path} ({report.size_mb} MB, {what}, {report.quantization}, "
          f"sha256 {report.sha256[:16]}...)")
    if report.modelfile:
        print(f"Ollama: cd {Path(report.modelfile).parent} && ollama create companion -f Modelfile")
    if report.pruned and report.pruned.removed:
        print(f"pruned {len(report.pruned.removed)} old version(s), freed {report.pruned.freed_mb} MB "
              f"(keeping the newest {keep} and what serving uses)")
    if report.pruned and report.pruned.skipped:
        print(f"not pruned: {report.pruned.skipped}", file=sys.stderr)
    problems = load_problems(report.validation) + degenerate_problems(report.validation) + parity_problems(report.validation)
    for p in problems:
        print(f"validation: {p}", file=sys.stderr)
    return 1 if problems else 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="adapter -> GGUF under FORGE_HOME/models/<version>/ (LoRA adapter on a cached "
                                      "base; --merged: one full GGUF + Ollama Modelfile)")
    p.add_argument("--adapter", help="adapter folder (default: FORGE_HOME/training/final)")
    p.add_argument("--merged", action="store_true",
                   help="merge the adapter into the base and write one full GGUF with an Ollama Modelfile beside it "
                        "(for Ollama / LM Studio, or a base that cannot take adapters)")
    p.add_argument("--quant", choices=["q4_k_m", "q5_k_m", "q8_0", "f16"],
                   help="GGUF type of the merged file or of the adapter's base (default: chosen for the base model: "
                        "f16 for the embedded Gemma 270M, q4_k_m otherwise)")
    p.add_argument("--name", default="companion", help="file name stem of the exported GGUF (default: %(default)s)")
    p.add_argument("--keep", type=int, help="model versions to keep (default FORGE_KEEP_MODEL_VERSIONS, 5); "
                                            "live and rollback models are always kept")
    p.set_defaults(func=cmd_export)
