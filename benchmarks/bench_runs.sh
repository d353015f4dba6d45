#!/usr/bin/env bash
# `edge-resnet bench` on the two runs the README shows, by hand from the repository root:
#   bash benchmarks/bench_runs.sh            (PY=python3 on a device whose python3 has edge-resnet)
# 1. runs/resnet20-digits (the default run; exported with --int8 --fp16 when it has no manifest),
#    with the bundled digits as frames: the table, plot and JSON in benchmarks/results/bench-resnet20-digits/.
# 2. runs/resnet18-224 (random weights, speed only; built by benchmarks/camera_fps.py's ensure_run
#    when missing, so the camera benchmark and this one time the same models), with real photographs
#    (six scikit-image samples, scaled to 640x480 as a VGA camera delivers them, kept in
#    runs/photos-640x480/) as frames: benchmarks/results/bench-resnet18-224/.
# Each bench.txt is what the command printed. Extra arguments go to both bench commands.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results
bench() { "$PY" -c 'import sys, cli; sys.exit(cli.main(sys.argv[1:]))' bench "$@"; }

if [ ! -f runs/resnet20-digits/manifest.json ]; then
  "$PY" -c 'import sys, cli; sys.exit(cli.main(sys.argv[1:]))' export --int8 --fp16
fi
"$PY" -c 'from benchmarks.camera_fps import ensure_run; ensure_run()'

FRAMES=runs/photos-640x480  # written once; runs/ is not committed
[ -d "$FRAMES" ] || "$PY" - "$FRAMES" <<'PYEOF'
import sys
from pathlib import Path

from PIL import Image

try:
    from skimage import data
except ImportError:
    sys.exit("scikit-image is needed for the photographs: pip install -e '.[dev]'")
out = Path(sys.argv[1])
out.mkdir(parents=True)
for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"):
    try:
        img = Image.fromarray(getattr(data, name)())
    except Exception as e:  # a sample missing from this scikit-image version
        print(f"skipping {name}: {e}", file=sys.stderr)
        continue
    img.convert("RGB").resize((640, 480), Image.Resampling.BILINEAR).save(out / f"{name}.png")
PYEOF

mkdir -p "$OUT/bench-resnet20-digits" "$OUT/bench-resnet18-224"
bench runs/resnet20-digits --output "$OUT/bench-resnet20-digits" "$@" | tee "$OUT/bench-resnet20-digits/bench.txt"
bench runs/resnet18-224 --frames "$FRAMES" --output "$OUT/bench-resnet18-224" "$@" | tee "$OUT/bench-resnet18-224/bench.txt"
