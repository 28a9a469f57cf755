"""The KITTI drift table of docs/results.md, rendered from the metrics.json files of ``kp-vo run``.

Each argument is ``LABEL=FOLDER[,FOLDER...]``, a FOLDER the ``--output`` of one run, e.g. of
``kp-vo run ../shared/data/kitti --sequence 07 --config config/kitti_mono.yaml --seeds 6 --extractor orb
--output outputs/kitti07_orb``; several folders per row (one per sequence, in the order ``--sequences``
names them: ``--sequences 07,00``) give one group of columns per sequence. With ``--seeds N`` a cell is the mean ± standard
deviation over the seeds (``seed_spread`` in metrics.json), otherwise the single run's value; a metric the
run lacks (no ground truth, a sequence too short for drift) is left empty. Prints a Markdown table:

    python scripts/results_tables.py orb=outputs/kitti07_orb sift=outputs/kitti07_sift
    python scripts/results_tables.py --sequences 07,00 orb=outputs/kitti07_orb,outputs/kitti00_orb
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (metrics.json key, column title, its title after a sequence name, decimals)
COLUMNS = (("drift_t_rel_percent", "t_rel (%)", "t_rel", 2),
           ("drift_r_rel_deg_per_100m", "r_rel (deg/100 m)", "r_rel", 2),
           ("ate_rmse_m", "ATE RMSE (m)", "ATE (m)", 3))


def cell(metrics: dict, key: str, decimals: int) -> str:
    """``mean ± std`` over the seeds when the run has them, else the run's own value, else empty."""
    spread = metrics.get("seed_spread", {}).get(key)
    if spread is not None:
        return f"{spread['mean']:.{decimals}f} ± {spread['std']:.{decimals}f}"
    value = metrics.get(key)
    return "" if value is None else f"{value:.{decimals}f}"


def kitti_table(runs: list[tuple[str, list[dict]]], sequences: list[str] | None = None) -> str:
    """A Markdown table, one row per (label, metrics of each sequence) in the given order; ``sequences``
    names the column groups (needed with more than one run per row)."""
    groups = len(runs[0][1])
    if any(len(metrics) != groups for _, metrics in runs):
        raise SystemExit("every row needs the same number of runs (one per sequence)")
    if groups > 1 and (sequences is None or len(sequences) != groups):
        raise SystemExit(f"{groups} runs per row: name their sequences with --sequences (one each)")
    if sequences:
        titles = [f"{seq} {short}" for seq in sequences for _, _, short, _ in COLUMNS]
    else:
        titles = [title for _, title, _, _ in COLUMNS]
    lines = ["| extractor | " + " | ".join(titles) + " | seeds |", "| --- |" + " --- |" * (len(titles) + 1)]
    for label, metrics in runs:
        seeds = max(len(m.get("seed_spread", {}).get("seeds", [])) or 1 for m in metrics)
        cells = [cell(m, key, decimals) for m in metrics for key, _, _, decimals in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def read_runs(arguments: list[str]) -> list[tuple[str, list[dict]]]:
    """``LABEL=FOLDER[,FOLDER...]`` arguments -> (label, each folder's metrics.json)."""
    runs = []
    for argument in arguments:
        label, sep, folders = argument.partition("=")
        if not sep or not label or not folders:
            raise SystemExit(f"{argument}: expected LABEL=FOLDER[,FOLDER...]")
        metrics = []
        for folder in folders.split(","):
            path = Path(folder) / "metrics.json"
            if not path.is_file():
                raise SystemExit(f"{path}: no such file (the --output folder of a kp-vo run)")
            metrics.append(json.loads(path.read_text()))
        runs.append((label, metrics))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER[,FOLDER...]",
                        help="a row label and the kp-vo run --output folder of each sequence")
    parser.add_argument("--sequences", metavar="NAME,NAME", help="the sequences of each row's folders, in order")
    args = parser.parse_args(argv)
    print(kitti_table(read_runs(args.runs), args.sequences.split(",") if args.sequences else None))


if __name__ == "__main__":
    main()
