"""`forge eval`: evaluate the latest candidate against the live model (or the base) and print the gate's
decision; the same evaluation the nightly job runs, saved under FORGE_HOME/evaluation."""
from __future__ import annotations

import sys

from forge_pipeline.cli.common import config_from_args, print_json


def cmd_eval(args) -> int:
    from forge_pipeline.evaluation.nightly import headline, table
    from forge_pipeline.evaluation.run import run_evaluation

    config = config_from_args(args)
    log = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda m: None)
    report, decision, folder = run_evaluation(config, against=args.against, log=log)
    if args.json:
        print_json({"deploy": decision.deploy, "reasons": decision.reasons, "passed": decision.passed,
                    "against": decision.against, "candidate_key": report.candidate_key,
                    "metrics": headline(report, decision), "report": str(folder / "report.md")})
    else:
        print(table(report))
        print(("DEPLOY" if decision.deploy else "DO NOT DEPLOY") + f" (compared with {decision.against})")
        for reason in decision.reasons:
            print(f"  - {reason}")
        print(f"report: {folder / 'report.md'}")
    return 0 if decision.deploy else 1


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the latest export against the live model and show the deploy decision")
    p.add_argument("--against", choices=["live", "base"], default="live",
                   help="compare with the live model (default; the base when nothing is live) or the base")
    p.add_argument("--json", action="store_true", help="print JSON: deploy (bool), reasons (list), metrics")
    p.set_defaults(func=cmd_eval)
