"""`forge models`: the exported model versions (date, kind, size, eval numbers, gate decision, live/previous);
`forge models prune`: keep the newest N plus whatever serving uses, as each export does by itself."""
from __future__ import annotations

from forge_pipeline.cli.common import config_from_args as _config
from forge_pipeline.cli.common import print_json


def _keep(args, config) -> int:
    return args.keep or config.keep_model_versions


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_models(args) -> int:
    from forge_pipeline.export.inventory import as_dicts, base_rows, model_versions

    config = _config(args)
    rows = model_versions(config.models_dir, config.home_dir, config.serving_dir, config.evaluation_dir)
    bases = base_rows(config.base_models_dir)
    if args.json:
        print_json({"versions": as_dicts(rows), "base_ggufs": bases})
        return 0
    if not rows:
        print(f"no exported models under {config.models_dir}; run `forge export`")
    else:
        print(f"{'version':26} {'created':20} {'kind':7} {'quant':6} {'MB':>9} {'eval':>7} {'base':>7} "
              f"{'ppl x':>6} {'gate':8} serving")
        for r in rows:
            print(f"{r.version:26} {r.created:20} {r.kind:7} {r.quantization:6} {r.size_mb:9.1f} "
                  f"{_fmt(r.eval_loss):>7} {_fmt(r.base_eval_loss):>7} {_fmt(r.perplexity_ratio, 2):>6} "
                  f"{r.gate or '-':8} {r.serving}")
            for reason in r.gate_reasons[:3]:
                print(f"{'':28}gate: {reason}")
    for b in bases:
        print(f"base GGUF {b['path']} ({b['size_mb']:.1f} MB, shared by the adapter versions made for it)")
    return 0


def cmd_prune(args) -> int:
    from forge_pipeline.export.retention import prune_versions

    config = _config(args)
    keep = _keep(args, config)
    report = prune_versions(config.models_dir, config.home_dir, keep=keep, serving_dir=config.serving_dir,
                            base_models_dir=config.base_models_dir, dry_run=args.dry_run)
    if report.skipped:
        print(f"forge models prune: nothing removed: {report.skipped}")
        return 1
    verb = "would remove" if args.dry_run else "removed"
    for name in report.removed:
        print(f"{verb} {name}")
    print(f"{verb} {len(report.removed)}, kept {len(report.kept)} (newest {keep}"
          + (f", plus {', '.join(report.protected)} in use by serving" if report.protected else "")
          + f"); {report.freed_mb} MB {'would be ' if args.dry_run else ''}freed")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="exported model versions: kind, size, eval numbers, gate, live/previous")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)
    msub = p.add_subparsers(dest="models_command")
    q = msub.add_parser("prune", help="remove all but the newest N versions; never one serving uses")
    q.add_argument("--keep", type=int, help="versions to keep (default FORGE_KEEP_MODEL_VERSIONS, 5)")
    q.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    q.set_defaults(func=cmd_prune)
