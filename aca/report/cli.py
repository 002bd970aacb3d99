"""Reproduce the paper's tables and figures: one command per target, one to render them all.

    python scripts/reproduce.py run TARGET [--scale smoke|cpu|paper] [--dry-run] [--fresh]
                                    [--root DIR]
    python scripts/reproduce.py render [--root DIR]
    python scripts/reproduce.py list
    python scripts/reproduce.py check [--strict]
    python scripts/reproduce.py drift [NAME ...]
    python scripts/reproduce.py summarize KIND RUNS... --out DIR

``run`` executes the commands of one paper table or figure (``aca-run`` into run folders,
then ``summarize``, from the repository root) with their records under
``<root>/<target>/`` (``.../paper/`` at paper scale) and writes the commands, their exit
status and wall time to ``REPRODUCE.txt`` there. A finished run left in a run folder
(its ``last.pt`` beside its ``result.json``) would be resumed and train nothing, so it is
refused; ``--fresh`` deletes those checkpoints first (interrupted runs still resume).
``smoke`` runs the same commands a few
batches long into ``outputs/smoke`` (to check the pipeline), ``cpu`` the committed CPU-scale
settings into ``results/``, ``paper`` the paper's settings (a GPU and the real data sets).

``summarize`` builds a cross-run summary (tables, records, figures) from run folders.
``render`` reads the run records under ``<root>`` and writes ``paper_tables.md`` and
``paper_tables.tex`` (our numbers beside the paper's) and a ``README.md`` linking every
table and figure with its commands, the machine, versions and date; a missing or partial
record is named on stderr and its cells read "missing". Rendering into the repository's
``results/`` also refreshes the README's Results section. ``check`` lists the records made
by other code than the current; ``drift`` reruns the cheap deterministic targets and
compares them with the committed records. Bad input is one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aca.errors import AcaError
from aca.report.drift import DRIFT_CHECKS, drift_command
from aca.report.plan import REPO_ROOT, SCALES, TARGETS, run_target
from aca.report.records import check
from aca.report.render import render
from aca.report.summaries import SUMMARIES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run one target's experiments")
    run_parser.add_argument("target", help=f"one of: {', '.join(TARGETS)}")
    run_parser.add_argument("--scale", default="cpu", help=f"one of: {', '.join(SCALES)}")
    run_parser.add_argument("--root", default=None,
                            help="records go to ROOT/<target> (default: results, "
                                 "outputs/smoke at smoke scale)")
    run_parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    run_parser.add_argument("--fresh", action="store_true",
                            help="delete the checkpoints of finished runs in the run folders "
                                 "first (otherwise they are refused: aca-run would resume them)")
    render_parser = commands.add_parser("render", help="render every table from the records")
    render_parser.add_argument("--root", type=Path, default=REPO_ROOT / "results")
    commands.add_parser("list", help="the targets and their scales")
    check_parser = commands.add_parser("check", help="list the records made by older code")
    check_parser.add_argument("--root", type=Path, default=REPO_ROOT / "results")
    check_parser.add_argument("--strict", action="store_true",
                              help="exit with status 1 when a record is stale")
    drift_parser = commands.add_parser("drift", help="rerun the cheap deterministic targets "
                                       "and compare them with the committed records")
    drift_parser.add_argument("names", nargs="*", help=f"some of: {', '.join(DRIFT_CHECKS)}")
    summary = commands.add_parser("summarize", help="a cross-run summary of run folders")
    summary.add_argument("kind", choices=sorted(SUMMARIES))
    summary.add_argument("runs", nargs="+", type=Path,
                         help="run folders, or folders searched recursively for them")
    summary.add_argument("--out", type=Path, required=True, help="where to write the summary")
    summary.add_argument("--title", default=None,
                         help="methods/seeds: the figure's title (default: the task name)")
    summary.add_argument("--fraction", type=float, default=0.2,
                         help="timeseries: the observed fraction drawn (default: 0.2)")
    summary.add_argument("--dims", type=int, nargs="+", default=None,
                         help="timeseries: the dims drawn (default: the first two)")
    summary.add_argument("--series", type=int, nargs="+", default=None,
                         help="timeseries: the test series drawn, of the 4 each run saves "
                         "(default: 0 1 2)")
    return parser


def summarize(args: argparse.Namespace) -> int:
    options = {"methods": {"title": args.title}, "seeds": {"title": args.title},
               "timeseries": {"fraction": args.fraction, "dims": args.dims,
                              "series": args.series}}.get(args.kind, {})
    print(SUMMARIES[args.kind](args.runs, args.out, **options))
    return 0


def render_command(root: Path) -> int:
    root = root.resolve()
    default = root == (REPO_ROOT / "results").resolve()
    problems = render(root, REPO_ROOT / "README.md" if default else None)
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    print(f"wrote {root / 'paper_tables.md'}, paper_tables.tex and README.md"
          + (" and the README's Results section" if default else "")
          + (f"; {len(problems)} missing or partial record(s)" if problems else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_target(args.target, args.scale, args.root, args.dry_run, args.fresh)
        if args.command == "check":
            return check(args.root.resolve(), args.strict)
        if args.command == "drift":
            return drift_command(args.names)
        if args.command == "summarize":
            return summarize(args)
        if args.command == "list":
            for name, spec in TARGETS.items():
                print(f"{name:15s} {'/'.join(spec.scales):16s} {spec.what}")
            return 0
        return render_command(args.root)
    except AcaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
