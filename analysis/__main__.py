"""python -m analysis {collect,leaderboard,plot,scores}: results -> tables, plots, score studies.

python -m analysis collect results --out runs.csv
python -m analysis leaderboard results --format latex --out table.tex
python -m analysis leaderboard wandb:ENTITY/PROJECT --group SWEEP --tag paper
python -m analysis leaderboard wandb-offline:wandb     # runs logged offline, no server
python -m analysis plot results --out figures/accuracy
python -m analysis scores el2n.csv grand.csv forgetting.csv --out scores.md
python -m analysis subsets results --out kept/     # each cell's kept indices, .npy and .csv
python -m analysis overlap results                 # Jaccard of kept sets between methods
python -m analysis classes results                 # kept examples per class, per method
python -m analysis compare results --reference ccs_cifar10 --format latex
python -m analysis rank results --figure figures/cd   # average ranks, Friedman, Nemenyi, CD
python -m analysis pareto results --figure figures/pareto   # accuracy against total compute
python -m analysis bundle results --out study.tar.gz   # records, subsets, scores, manifest
python -m analysis leaderboard study.tar.gz            # the same tables, from the bundle
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.bundle import build_bundle, log_artifact
from analysis.classes import class_count_tables
from analysis.collect import collect
from analysis.compare import compare, load_reference, render_comparison
from analysis.errors import AnalysisError
from analysis.leaderboard import METRICS, build_tables
from analysis.pareto import plot_pareto, points, render_front
from analysis.plot import plot
from analysis.rank import plot_cd, rank, render_ranking
from analysis.render import render
from analysis.scores import load_scores, report
from analysis.subsets import cell_subsets, export_subsets, overlap_tables

EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="command", required=True)

    collect = commands.add_parser("collect", help="all runs as one CSV, one row per run")
    _source(collect)
    collect.add_argument("--out", type=Path, help="CSV file (default: stdout)")

    board = commands.add_parser("leaderboard", help="mean ± std per method and removed fraction")
    _source(board)
    _selection(board)
    board.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    board.add_argument("--out", type=Path, help="file to write (default: stdout)")

    plot = commands.add_parser("plot", help="metric vs removed fraction, PNG and PDF")
    _source(plot)
    _selection(plot)
    plot.add_argument(
        "--out", type=Path, required=True, help="file stem: writes STEM.png, STEM.pdf"
    )

    versus = commands.add_parser(
        "compare", help="our cells beside the papers' reported accuracies (with citations)"
    )
    _source(versus)
    _selection(versus)
    versus.add_argument(
        "--reference",
        required=True,
        help="analysis/references/NAME.csv (by NAME) or a CSV path with the same columns",
    )
    versus.add_argument("--format", choices=("md", "latex"), default="md")
    versus.add_argument("--out", type=Path, help="file to write (default: stdout)")

    ranking = commands.add_parser(
        "rank",
        help="average rank over every (data, model, protocol, fraction) cell, Friedman test, "
        "Nemenyi post-hoc, critical-difference diagram",
    )
    _source(ranking)
    _selection(ranking)
    ranking.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    ranking.add_argument("--out", type=Path, help="file to write (default: stdout)")
    ranking.add_argument(
        "--figure", type=Path, help="file stem of the CD diagram: writes STEM.png, STEM.pdf"
    )
    ranking.add_argument("--alpha", type=float, default=0.05, help="significance level")
    ranking.add_argument(
        "--by-seed",
        action="store_true",
        help="one block per (cell, seed) instead of per cell (mean over seeds)",
    )

    pareto = commands.add_parser(
        "pareto",
        help="metric against total compute per (data, model): Pareto-optimal runs, figure",
    )
    _source(pareto)
    _selection(pareto)
    pareto.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    pareto.add_argument("--out", type=Path, help="file to write (default: stdout)")
    pareto.add_argument(
        "--figure", type=Path, help="file stem of the figure: writes STEM.png, STEM.pdf"
    )

    bundle = commands.add_parser(
        "bundle",
        help="records, kept subsets, score exports and a checked manifest in one .tar.gz",
    )
    bundle.add_argument("source", type=Path, help="results directory (searched recursively)")
    bundle.add_argument("--out", type=Path, required=True, help="NAME.tar.gz to write")
    bundle.add_argument(
        "--no-scores",
        action="store_true",
        help="leave out the static methods' score exports (they are read from the score "
        "cache, computed where missing)",
    )
    bundle.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="also log the bundle as a W&B artifact there"
    )

    scores = commands.add_parser(
        "scores", help="Spearman agreement and noise AUROC of score exports"
    )
    scores.add_argument(
        "files", nargs="+", type=Path, help="score.py exports (NAME.csv + NAME.csv.json)"
    )
    scores.add_argument("--format", choices=("md", "csv"), default="md")
    scores.add_argument("--out", type=Path, help="file to write (default: stdout)")
    scores.add_argument("--digits", type=int, choices=range(7), default=3, metavar="0-6")

    classes = commands.add_parser(
        "classes", help="kept examples per class, per method and removed fraction"
    )
    _source(classes)
    classes.add_argument("--out", type=Path, help="file to write (default: stdout)")
    classes.add_argument("--digits", type=int, choices=range(7), default=0, metavar="0-6")

    subsets = commands.add_parser(
        "subsets", help="each cell's kept training indices (original order), .npy and .csv"
    )
    subsets.add_argument("source", type=Path, help="results directory (searched recursively)")
    subsets.add_argument("--out", type=Path, required=True, help="folder to write them to")

    overlap = commands.add_parser(
        "overlap", help="Jaccard overlap of kept sets between methods, and across seeds"
    )
    overlap.add_argument("source", type=Path, help="results directory (searched recursively)")
    overlap.add_argument("--out", type=Path, help="file to write (default: stdout)")
    overlap.add_argument("--digits", type=int, choices=range(7), default=3, metavar="0-6")
    return p


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="results directory (searched recursively), wandb:ENTITY/PROJECT, or "
        "wandb-offline:DIR (the runs W&B wrote offline below DIR)",
    )
    p.add_argument("--group", help="W&B source only: runs of this group (e.g. a sweep)")
    p.add_argument("--tag", action="append", default=[], help="W&B source only: runs with this tag")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", default=[], help="only these data sets (cell data names)")
    p.add_argument("--model", nargs="+", default=[], help="only these models")
    p.add_argument(
        "--metric", choices=list(METRICS), default="test_acc", help="(default: test_acc)"
    )
    p.add_argument(
        "--digits", type=int, choices=range(7), default=2, metavar="0-6", help="decimals"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _run(args)
    except AnalysisError as err:
        print(f"analysis: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.command == "scores":
        _write(report(load_scores(args.files), args.format, args.digits), args.out)
        return
    if args.command == "bundle":
        manifest = build_bundle(args.source, args.out, scores=not args.no_scores)
        print(
            f"analysis: wrote {args.out} ({manifest['records']} records, "
            f"{len(manifest['members'])} members)",
            file=sys.stderr,
        )
        if args.wandb:
            where = log_artifact(args.out, args.wandb, manifest)
            print(f"analysis: logged {args.out} as the W&B artifact {where}", file=sys.stderr)
        return
    if args.command in ("subsets", "overlap"):
        cells, notes = cell_subsets(args.source)
        for note in notes:
            print(f"analysis: note: {note}", file=sys.stderr)
        if args.command == "overlap":
            _write(overlap_tables(cells, args.digits), args.out)
            return
        export_subsets(cells, args.out)
        print(f"analysis: wrote {len(cells)} cells (.npy and .csv) to {args.out}", file=sys.stderr)
        return
    reference = load_reference(args.reference) if args.command == "compare" else None
    found = collect(args.source, args.group, args.tag)
    for note in found.notes:
        print(f"analysis: note: {note}", file=sys.stderr)
    if args.command == "collect":
        _write(found.all_runs.to_csv(index=False), args.out)
        return
    if args.command == "classes":
        _write(class_count_tables(found.runs, args.digits), args.out)
        return
    tables = build_tables(found.runs, args.metric, args.data, args.model, args.digits)
    if reference is not None:
        _write(render_comparison(compare(tables, reference), args.format, args.digits), args.out)
        return
    if args.command == "rank":
        if not 0 < args.alpha < 1:
            raise AnalysisError(f"--alpha {args.alpha} must lie in (0, 1)")
        ranking = rank(tables, args.alpha, args.by_seed)
        _write(render_ranking(ranking, args.format, args.digits), args.out)
        if args.figure is not None:
            for path in plot_cd(ranking, args.figure):
                print(f"analysis: wrote {path}", file=sys.stderr)
        return
    if args.command == "pareto":
        found_points, notes = points(tables)
        for note in notes:
            print(f"analysis: note: {note}", file=sys.stderr)
        title = tables[0].metric.title
        _write(render_front(found_points, title, args.format, args.digits), args.out)
        if args.figure is not None:
            for path in plot_pareto(found_points, title, args.figure):
                print(f"analysis: wrote {path}", file=sys.stderr)
        return
    if args.command == "leaderboard":
        _write(render(tables, args.format, args.digits), args.out)
    else:
        for path in plot(tables, args.out):
            print(f"analysis: wrote {path}", file=sys.stderr)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"analysis: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
