"""`forge`: the command line, mirroring the original tool (extract, curate, review, train, export, status,
reload, serve). Each command imports only what it needs, so the data commands start without torch."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config(args):
    from forge_pipeline.config import load_config

    return load_config(home=getattr(args, "home", None), vault=getattr(args, "vault", None))


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def cmd_extract(args) -> int:
    from forge_pipeline.extraction.extractor import extract_training_data

    stats = extract_training_data(config=_config(args), output_path=args.output, progress=True)
    print(f"extracted {stats['total']} examples from {stats['notes_scanned']} notes "
          f"({stats['notes_parsed']} parsed, {stats['notes_from_cache']} from cache) -> {stats['output']}")
    print(f"by kind: {stats['by_kind']}  redactions: {stats['redactions'] or 'none'}")
    for w in stats["warnings"]:
        print(f"warning: {w['file']}: {w['problem']}", file=sys.stderr)
    return 0


def cmd_curate(args) -> int:
    from forge_pipeline.curation.curate import curate

    report = curate(_config(args), Path(args.input) if args.input else None)
    print(f"curated {report.train_count} train + {report.eval_count} eval from {report.input_count} extracted; "
          f"dropped {report.dropped_by_reason or 'none'}")
    print(f"train: {report.train_path}\neval:  {report.eval_path}")
    return 0


def cmd_review(args) -> int:
    from forge_pipeline.curation.review import ReviewStore, review_interactive
    from forge_pipeline.files import read_jsonl

    config = _config(args)
    if not config.extracted_path.exists():
        raise FileNotFoundError(f"{config.extracted_path}: nothing to review; run `forge extract` first")
    store = ReviewStore(config.review_decisions_path)
    counts = review_interactive(read_jsonl(config.extracted_path), store, sys.stdin, sys.stdout)
    print(f"\nreviewed: {counts}. Decisions saved in {config.review_decisions_path}; "
          "run `forge curate` to apply them.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge", description=__doc__)
    parser.add_argument("--home", help="data home (default: FORGE_HOME or ~/.companion)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="vault notes -> training_data/extracted.jsonl")
    p.add_argument("--vault", help="vault folder (default: FORGE_VAULT or the bundled sample vault)")
    p.add_argument("--output", help="output JSONL (default: FORGE_HOME/training_data/extracted.jsonl)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("curate", help="extracted -> curated.jsonl + curated_eval.jsonl")
    p.add_argument("--input", help="extracted JSONL (default: FORGE_HOME/training_data/extracted.jsonl)")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("review", help="accept, reject or edit extracted examples in the terminal")
    p.set_defaults(func=cmd_review)

    from forge_pipeline import cli_model

    cli_model.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"forge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
