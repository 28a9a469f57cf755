"""The KITTI drift table of docs/results.md, rendered from the metrics.json files of ``kp-vo run``.

Each argument is ``LABEL=FOLDER``, FOLDER the ``--output`` of one run, e.g. of
``kp-vo run ../shared/data/kitti --sequence 07 --config config/kitti_mono.yaml --seeds 6 --extractor orb
--output outputs/kitti07_orb``. With ``--seeds N`` a cell is the mean ± standard deviation over the
seeds (``seed_spread`` in metrics.json), otherwise the single run's value; a metric the run lacks
(no ground truth, a sequence too short for drift) is left empty. Prints a Markdown table:

    python scripts/results_tables.py orb=outputs/kitti07_orb sift=outputs/kitti07_sift
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (metrics.json key, column title, decimals)
COLUMNS = (("drift_t_rel_percent", "t_rel (%)", 2),
           ("drift_r_rel_deg_per_100m", "r_rel (deg/100 m)", 2),
           ("ate_rmse_m", "ATE RMSE (m)", 3))


def cell(metrics: dict, key: str, decimals: int) -> str:
    """``mean ± std`` over the seeds when the run has them, else the run's own value, else empty."""
    spread = metrics.get("seed_spread", {}).get(key)
    if spread is not None:
        return f"{spread['mean']:.{decimals}f} ± {spread['std']:.{decimals}f}"
    value = metrics.get(key)
    return "" if value is None else f"{value:.{decimals}f}"


def kitti_table(runs: list[tuple[str, dict]]) -> str:
    """A Markdown table, one row per (label, metrics) in the given order."""
    lines = ["| extractor | " + " | ".join(title for _, title, _ in COLUMNS) + " | seeds |",
             "| --- |" + " --- |" * (len(COLUMNS) + 1)]
    for label, metrics in runs:
        seeds = len(metrics.get("seed_spread", {}).get("seeds", [])) or 1
        cells = [cell(metrics, key, decimals) for key, _, decimals in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def read_runs(arguments: list[str]) -> list[tuple[str, dict]]:
    """``LABEL=FOLDER`` arguments -> (label, the folder's metrics.json)."""
    runs = []
    for argument in arguments:
        label, sep, folder = argument.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"{argument}: expected LABEL=FOLDER")
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such file (the --output folder of a kp-vo run)")
        runs.append((label, json.loads(path.read_text())))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER", help="a row label and a kp-vo run --output folder")
    args = parser.parse_args(argv)
    print(kitti_table(read_runs(args.runs)))


if __name__ == "__main__":
    main()
