"""Write a ``kp-vo bench --rows`` file for one torch device: every ``device: cuda`` of a row's extractor or
depth options becomes ``--device`` (and "cuda" in the row's name with it); on ``cpu`` the rows with
``precision: fp16`` (CUDA only) are dropped.

    python scripts/bench_rows_for_device.py config/bench_gpu.yaml rows_cpu.yaml --device cpu

``kp-vo bench --set`` cannot do this: it sets the base config, and each row's own options are merged
over it. Used by scripts/gpu_check.sh for its CPU dry run.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import yaml

log = logging.getLogger("bench_rows_for_device")
SECTIONS = ("extractor", "depth")      # the row sections whose ``options`` name a torch device


def row_options(row: dict) -> list[dict]:
    """The ``options`` mappings of a row's extractor and depth estimator (those it has)."""
    return [row[s]["options"] for s in SECTIONS if isinstance(row.get(s), dict) and "options" in row[s]]


def rows_for_device(rows: dict[str, dict], device: str) -> dict[str, dict]:
    """``rows`` {name: partial pipeline config} with their CUDA devices set to ``device`` ("cpu" or
    "cuda") and named for it; on "cpu" the float16 rows are left out."""
    out = {}
    for name, row in rows.items():
        row = copy.deepcopy(row)
        options = row_options(row)
        if device == "cpu" and any(o.get("precision") == "fp16" for o in options):
            log.info("row %s left out: precision fp16 needs CUDA", name)
            continue
        on_cuda = [o for o in options if o.get("device") == "cuda"]
        for o in on_cuda:
            o["device"] = device
        out[name.replace("cuda", device) if on_cuda else name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=Path, help="rows YAML {rows: {NAME: partial pipeline config}}")
    parser.add_argument("output", type=Path, help="rows YAML to write")
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rows = rows_for_device(yaml.safe_load(args.rows.read_text())["rows"], args.device)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(yaml.safe_dump({"rows": rows}, sort_keys=False))
    log.info("%d rows for device %s written to %s", len(rows), args.device, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
