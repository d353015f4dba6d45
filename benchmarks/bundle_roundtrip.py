"""The Jetson bundle's round trip, with ONNX Runtime standing in for the engine.

Bundles the default run (runs/resnet20-digits, exported first if missing), unpacks the .tar.gz into a
fresh folder, verifies every checksum, and runs the validation set through each ONNX model with the
same code path `edge-resnet build-engine` uses for an engine (deploy._judge -> runtime.validate).
Prints sizes, times and the comparison with the stored FP32 logits.

    .venv/bin/python benchmarks/bundle_roundtrip.py [RUN_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine  # noqa: E402
from edge_resnet.deploy import check_model, make_bundle, open_bundle  # noqa: E402
from edge_resnet.export.bundle import safe_extract  # noqa: E402


def main() -> int:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/resnet20-digits")
    if not (run / "manifest.json").is_file():
        from edge_resnet import cli

        if cli.main(["export", "--int8", "--fp16"]) != 0:
            return 1
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        made = make_bundle(run, Path(tmp) / "work" / f"{run.name}-bundle")
        print(f"bundle: {made.archive.stat().st_size / 1e6:.2f} MB archive, {len(made.files)} files "
              f"({', '.join(made.files)}), {made.samples} validation samples, FP32 top-1 "
              f"{100 * made.fp32_top1:.2f}%, {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        folder = safe_extract(made.archive, Path(tmp) / "device")
        manifest = open_bundle(folder)
        print(f"unpacked into a fresh folder and verified {len(manifest.files)} sha256 checksums in "
              f"{time.perf_counter() - t:.2f} s")
        ok = True
        for name in sorted(n for n in manifest.files if n.endswith(".onnx")):
            t = time.perf_counter()
            check = check_model(folder, name, providers=["CPUExecutionProvider"])
            print(f"  {check.result.summary()}  [{time.perf_counter() - t:.2f} s, max |logit diff| "
                  f"{check.result.max_abs_diff:.4f}]")
            ok &= check.result.passed
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
