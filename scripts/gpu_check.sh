#!/usr/bin/env bash
# GPU check of the learned extractors (docs/gpu.md): prints the torch / CUDA versions and the device, runs
# `kp-vo bench` on KITTI 07 (config/bench_gpu.yaml) and on synthetic:room (config/bench_gpu_rgbd.yaml),
# then the pytest tests marked `gpu`. Writes gpu_check.log, bench_kitti07.json and bench_room.json under
# ${OUT:-outputs}/. Sized to stay well under 8 minutes on one H100 with the defaults.
#
#   bash scripts/gpu_check.sh --stage                  # here, first: wheels into .whl/, KITTI 07 frames into
#                                                      # .gpu_data/ (both git-ignored), for the run's `carry`
#   bash scripts/gpu_check.sh                          # on the GPU machine (device cuda)
#   bash scripts/gpu_check.sh --device cpu --max-frames 5   # CPU dry run: fp16 rows left out, gpu tests skip
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 [--device cuda|cpu] [--max-frames N] [--kitti DIR] [--stage]" >&2
    exit 2
}

DEVICE=cuda
MAX_FRAMES=40           # frames per bench (3 of them warm-up); the KITTI frames must fit the carry limit
KITTI=""
STAGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:?}"; shift 2 ;;
        --max-frames) MAX_FRAMES="${2:?}"; shift 2 ;;
        --kitti) KITTI="${2:?}"; shift 2 ;;
        --stage) STAGE=1; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "--device must be cpu or cuda, got $DEVICE" >&2; exit 2 ;; esac
case "$MAX_FRAMES" in ''|0|*[!0-9]*) echo "--max-frames must be a positive integer" >&2; exit 2 ;; esac

CARRY_LIMIT=$((64 * 1024 * 1024))   # bytes a device call carries: working tree + .whl + .gpu_data
WHEELS="faiss-cpu poselib"          # imported by `kp-vo bench`, absent from the GPU machine's image

# The first KITTI root that holds sequence 07: --kitti, the shared data beside the checkout, the staged copy.
find_kitti() {
    local root
    for root in ${KITTI:+"$KITTI"} ../shared/data/kitti .gpu_data/kitti; do
        if [ -f "$root/sequences/07/calib.txt" ]; then echo "$root"; return 0; fi
    done
    return 1
}

# Bytes of the working tree that travels (tracked and untracked-not-ignored files).
tree_bytes() {
    git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f1
}

# Wheels (CPython 3.12, x86-64 Linux) of $WHEELS at the versions installed here, into .whl/.
stage_wheels() {
    local py name version
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
    rm -rf .whl && mkdir .whl
    for name in $WHEELS; do
        version="$("$py" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")"
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$name==$version"
    done
}

# --stage: the wheels into .whl/, and as many of the first MAX_FRAMES frames of KITTI 07 (calib, timestamps,
# images) into .gpu_data/kitti as fit the carry limit with 2 MB to spare; both git-ignored. The device
# machine gets them when the run call names them in `carry` (../shared beside the checkout does not travel).
stage() {
    local src dst exclude path budget frame_bytes frames
    src="$(find_kitti)" || { echo "KITTI 07 not found (--kitti DIR)" >&2; exit 1; }
    exclude="$(git rev-parse --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    for path in /.gpu_data/ /.whl/; do
        grep -qx "$path" "$exclude" 2>/dev/null || echo "$path" >> "$exclude"
    done
    stage_wheels
    budget=$((CARRY_LIMIT - $(tree_bytes) - $(du -cb .whl | tail -n 1 | cut -f1) - 2000000))
    frame_bytes=$(find "$src/sequences/07/image_0" -name '*.png' | sort | head -n "$MAX_FRAMES" \
        | xargs du -cb | tail -n 1 | cut -f1)
    frames=$((budget * MAX_FRAMES / frame_bytes))
    [ "$frames" -le "$MAX_FRAMES" ] || frames=$MAX_FRAMES
    [ "$frames" -ge 8 ] || { echo "only $frames KITTI frames fit the carry limit" >&2; exit 1; }
    dst=.gpu_data/kitti/sequences/07
    rm -rf .gpu_data/kitti
    mkdir -p "$dst/image_0"
    cp "$src/sequences/07/calib.txt" "$dst/"
    head -n "$frames" "$src/sequences/07/times.txt" > "$dst/times.txt"
    find "$src/sequences/07/image_0" -name '*.png' | sort | head -n "$frames" | xargs cp -t "$dst/image_0"
    echo "staged $(ls .whl | tr '\n' ' ')in .whl/ and $frames frames of KITTI 07 in .gpu_data/kitti"
    echo "carried in all: $((($(tree_bytes) + $(du -cb .whl .gpu_data | tail -n 1 | cut -f1)) / 1048576)) MiB" \
         "of $((CARRY_LIMIT / 1048576)) MiB"
    echo "on the device: bash scripts/gpu_check.sh --max-frames $frames, with carry [\".gpu_data\", \".whl\"]"
}

if [ "$STAGE" = 1 ]; then stage; exit 0; fi

OUT_DIR="${OUT:-outputs}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G '.whl/*.whl' > /dev/null && ! "$PY" -c 'import kp_vo.cli.bench' 2> /dev/null; then
    # the staged wheels (--stage) of packages this machine lacks
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
START=$SECONDS

section() { echo; echo "== $* ($((SECONDS - START)) s)"; }

section "environment (device $DEVICE, max frames $MAX_FRAMES)"
"$PY" - "$DEVICE" <<'PYEOF'
import platform
import sys

import torch

device = sys.argv[1]
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"TF32 convolutions: {torch.backends.cudnn.allow_tf32}")
else:
    print(f"device: CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads")
try:
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}")
except ImportError:
    print("onnxruntime: not installed")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("--device cuda but torch sees no CUDA device; use --device cpu for a dry run")
try:
    import kp_vo.cli.bench  # noqa: F401
except ImportError as e:
    sys.exit(f"kp_vo does not import here ({e}); missing packages travel as wheels: "
             "scripts/gpu_check.sh --stage, then carry .whl")
PYEOF

bench() {   # bench NAME ROWS SOURCE [kp-vo bench arguments...]
    local name="$1" rows="$2" source="$3"
    shift 3
    "$PY" scripts/bench_rows_for_device.py "$rows" "$WORK/$name.yaml" --device "$DEVICE"
    "$PY" -m kp_vo.cli bench "$source" --max-frames "$MAX_FRAMES" --rows "$WORK/$name.yaml" \
        --output "$OUT_DIR/bench_$name.json" "$@"
}

MISSING=""
section "bench: KITTI 07, monocular (config/bench_gpu.yaml)"
if ROOT="$(find_kitti)"; then
    bench kitti07 config/bench_gpu.yaml "$ROOT" --sequence 07 --config config/kitti_mono.yaml
else
    MISSING="KITTI 07 (--kitti DIR, or --stage here and carry .gpu_data)"
    echo "SKIPPED: $MISSING not found"
fi

section "bench: synthetic:room, RGB-D (config/bench_gpu_rgbd.yaml)"
bench room config/bench_gpu_rgbd.yaml synthetic:room

section "tests marked gpu"
mapfile -t GPU_TESTS < <(grep -l 'mark\.gpu' test/test_*.py)
"$PY" -m pytest -q -rs -p no:cacheprovider -m gpu "${GPU_TESTS[@]}"

section "done"
if [ -n "$MISSING" ]; then
    echo "incomplete: $MISSING was not found"
    exit 3
fi
echo "gpu check complete: $OUT_DIR/bench_kitti07.json, $OUT_DIR/bench_room.json, $OUT_DIR/gpu_check.log"
