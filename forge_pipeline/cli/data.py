"""`forge extract`, `forge curate`, `forge review`: the data commands. They never import torch."""
from __future__ import annotations

import sys
from pathlib import Path

from forge_pipeline.cli.common import config_from_args as _config


def cmd_extract(args) -> int:
    from forge_pipeline.extraction.extractor import extract_training_data

    if args.explain is not None:
        return cmd_explain(args)
    report = extract_training_data(config=_config(args), output_path=args.output, progress=True)
    for line in report.summary_lines():
        print(line)
    for w in report.warnings:
        print(f"warning: {w['file']}: {w['problem']}", file=sys.stderr)
    for hint in report.hints:
        print(f"hint: {hint}")
    return 0


def cmd_explain(args) -> int:
    from forge_pipeline.extraction.explain import explain_note, explain_vault
    from forge_pipeline.extraction.note import options_from_settings, scan_options_from_settings

    config = _config(args)
    opts, scan_opts = options_from_settings(config), scan_options_from_settings(config)
    lines = explain_note(config.vault_dir, args.explain, opts, scan_opts) if args.explain else \
        explain_vault(config.vault_dir, opts, scan_opts)
    print("\n".join(lines))
    return 0


def cmd_curate(args) -> int:
    from forge_pipeline.curation.curate import curate
    from forge_pipeline.curation.validators import check_curated_set

    config = _config(args)
    report = curate(config, Path(args.input) if args.input else None)
    print(f"curated {report.train_count} train + {report.eval_count} eval from {report.input_count} extracted; "
          f"dropped {report.dropped_by_reason or 'none'}")
    if report.user_turns:  # back-translation ran (curation/user_turns.py)
        t = report.user_turns
        print(f"user turns: {t['generated']} written by the model, {t['from_cache']} from cache, "
              f"templates kept {t['fallback'] or 'for none'} ({t['generation_s']} s)")
    print(f"train: {report.train_path}\neval:  {report.eval_path}")
    # the blocking checks Dagster runs on curated_examples (one implementation: curation/validators.py)
    checks = check_curated_set(config, Path(report.train_path), Path(report.eval_path))
    print("\n".join(checks.lines()))
    if not checks.ok:
        print(f"forge curate: {len(checks.blocking_failures)} blocking check(s) failed; training is blocked until "
              "they pass", file=sys.stderr)
        return 1
    return 0


def cmd_review(args) -> int:
    import os

    from forge_pipeline.curation.curate import reviewable
    from forge_pipeline.curation.review import ReviewStore, edit_in_editor, list_decisions, review_interactive
    from forge_pipeline.files import read_jsonl

    config = _config(args)
    if not config.extracted_path.exists():
        raise FileNotFoundError(f"{config.extracted_path}: nothing to review; run `forge extract` first")
    store = ReviewStore(config.review_decisions_path)
    examples = read_jsonl(config.extracted_path)
    if args.list:
        lines = list_decisions(examples, store)
        print("\n".join(lines) if lines else "no review decisions yet")
        return 0
    queue = reviewable(examples, config, note=args.note, tag=args.tag, kind=args.kind)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    read_edit = (lambda current: edit_in_editor(current, editor, config.review_decisions_path.parent / "scratch")) \
        if editor and sys.stdin.isatty() else None
    print(f"{len(queue)} examples curation would keep match; "
          + ("all shown" if args.all else "undecided ones shown (--all: every one)"))
    counts = review_interactive(queue, store, sys.stdin, sys.stdout, read_edit=read_edit, include_decided=args.all)
    print(f"\nreviewed: {counts}. Decisions saved in {config.review_decisions_path}; "
          "run `forge curate` to apply them.")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("extract", help="vault notes -> training_data/extracted.jsonl")
    p.add_argument("--vault", help="vault folder (default: FORGE_VAULT or the bundled sample vault)")
    p.add_argument("--output", help="output JSONL (default: FORGE_HOME/training_data/extracted.jsonl)")
    p.add_argument("--explain", nargs="?", const="", metavar="NOTE",
                   help="write nothing; for NOTE (vault path or file name) say which rule fired for each paragraph "
                        "or why none did; without NOTE, list the notes that gave no example")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("curate", help="extracted -> curated.jsonl + curated_eval.jsonl")
    p.add_argument("--input", help="extracted JSONL (default: FORGE_HOME/training_data/extracted.jsonl)")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("review", help="accept, reject or edit the examples curation would keep (edits open "
                       "$EDITOR when set); 'b' goes back to change a decision")
    p.add_argument("--vault", help="vault folder (default: FORGE_VAULT or the bundled sample vault)")
    p.add_argument("--list", action="store_true", help="list the decisions made so far and exit")
    p.add_argument("--all", action="store_true", help="also show examples already decided, to change them")
    p.add_argument("--note", help="only examples from notes whose vault path contains this")
    p.add_argument("--tag", help="only examples carrying this tag")
    p.add_argument("--kind", choices=["tag", "pattern", "section"], help="only examples of this kind")
    p.set_defaults(func=cmd_review)
