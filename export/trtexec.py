"""The trtexec recipe: the command lines that build this model's engine, per TensorRT version.

``trtexec_args`` gives the arguments of one build (from ``edge_resnet.export.build_plan.plan_build``, the same
plan the Python builder follows); ``build_script`` writes ``build_engine.sh``, which finds
trtexec, reads its TensorRT version from trtexec's own banner, picks the lines for that version,
names the engine by its key (``edge_resnet.contract.engine.engine_filename``, reproduced in shell) and
writes the key beside it. ``edge-resnet trtexec-cmd`` prints the lines for a version given on the
command line, so everything here is testable without TensorRT.

Flags by version, as each version's ``samples/common/sampleOptions.cpp`` parses them (the option
sets are recorded in tests/fixtures/tensorrt/trtexec and a per-version stand-in refuses anything
else, as trtexec does): 8.5/8.6/10.x build a Q/DQ graph with ``--int8 --fp16``; 11.x takes no
precision flags at all (strongly typed). DLA adds ``--useDLACore=N --allowGPUFallback``, and on
8.x/10.x DLA INT8 builds model.int8.implicit.onnx with ``--int8 --calib=<cache>``.
``--memPoolSize=workspace:N`` (MiB) replaced ``--workspace`` (8.4+); ``--builderOptimizationLevel``
exists from 8.6. Stopping after the build is ``--buildOnly`` in 8.5, either spelling in 8.6, and
``--skipInference`` only from 10.0.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import replace

from edge_resnet import __version__
from edge_resnet.export.build_plan import BuildOptions, BuildPlan, plan_build
from edge_resnet.contract.engine import engine_filename, version_code, version_tuple
from edge_resnet.export.jetson import (DLA_JETPACK_11, FIRST_11X_DLA, LAST_10X_DLA, LAST_JETSON_11X, NO_DLA_BOARDS,
                                      dla_device_refusal, dla_version_refusal)

TRTEXEC_JETPACK = "/usr/src/tensorrt/bin/trtexec"
FLAG_ARGS = {"INT8": "--int8", "FP16": "--fp16", "GPU_FALLBACK": "--allowGPUFallback"}
# trtexec options 11.0 removed (NVIDIA's trtexec 10.x -> 11.x migration page): never emitted for 11.x
REMOVED_IN_11_TRTEXEC = ("--int8", "--fp16", "--best", "--calib")
# the TensorRT versions build_engine.sh carries lines for; each stands for its family
SCRIPT_FAMILIES = {"8": "8.6.0", "10": "10.3.0", "11": "11.4.1"}


def retagged_cache_name(code: int) -> str:
    """calib.cache with its header rewritten for the TensorRT that reads it (``TRT-<code>-...``)."""
    return f"calib.trt{code}.cache"


def retag_cache(text: str, code: int) -> str:
    """A calibration cache whose header names TensorRT ``code`` (NV_TENSORRT_VERSION), ranges unchanged."""
    first, _, rest = text.partition("\n")
    parts = first.split("-", 2)
    if len(parts) != 3 or parts[0] != "TRT":
        raise ValueError(f"not a TensorRT calibration cache header: {first!r}")
    return f"TRT-{code}-{parts[2]}\n{rest}"


def build_only_flag(tensorrt: str) -> str:
    """trtexec's "exit after the build" option: 8.5 knows only --buildOnly, 10+ only --skipInference."""
    return "--buildOnly" if version_tuple(tensorrt)[:2] < (8, 6) else "--skipInference"


def shape_arg(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:" + "x".join(str(d) for d in (batch, *chw))


def trtexec_args(plan: BuildPlan, input_name: str, chw: Sequence[int], engine: str,
                 calib_cache: str | None = None) -> list[str]:
    """trtexec's arguments for ``plan`` (without the program name).

    Args:
        chw: the input's (C, H, W); the batch comes from the plan's profile.
        engine: the --saveEngine file name.
        calib_cache: the cache file to pass for an implicit INT8 build (default: the plan's).
    """
    lo, opt, hi = plan.batch
    args = [f"--onnx={plan.onnx}", f"--saveEngine={engine}",
            f"--minShapes={shape_arg(input_name, lo, chw)}",
            f"--optShapes={shape_arg(input_name, opt, chw)}",
            f"--maxShapes={shape_arg(input_name, hi, chw)}"]
    args += [FLAG_ARGS[f] for f in plan.flags if f != "GPU_FALLBACK"]
    if plan.calib_cache:
        args.append(f"--calib={calib_cache or plan.calib_cache}")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", FLAG_ARGS["GPU_FALLBACK"]]
    if plan.workspace_mib is not None:
        args.append(f"--memPoolSize=workspace:{plan.workspace_mib}")
    if plan.timing_cache:
        args.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.opt_level is not None:
        args.append(f"--builderOptimizationLevel={plan.opt_level}")
    args.append(build_only_flag(plan.tensorrt))
    return args


def command_line(plan: BuildPlan, input_name: str, chw: Sequence[int], gpu: str | None,
                 trtexec: str = "trtexec") -> str:
    """The one-line trtexec command for ``plan`` on GPU ``gpu`` (engine named by the key)."""
    engine = engine_filename("model", plan.precision, plan.batch, plan.dla_core, plan.int8_mode, plan.tensorrt,
                             gpu)
    cache = retagged_cache_name(version_code(plan.tensorrt)) if plan.calib_cache else None
    lines = []
    if cache:
        lines.append(f"sed '1s/^TRT-[0-9]*-/TRT-{version_code(plan.tensorrt)}-/' calib.cache > {cache}")
    lines.append(shlex.join([trtexec, *trtexec_args(plan, input_name, chw, engine, cache)]))
    return "\n".join(lines)


# ---------------------------------------------------------------- build_engine.sh

def _script_args(plan: BuildPlan, input_name: str, chw: Sequence[int]) -> str:
    """The plan's arguments as shell words. The DLA core comes from a variable; the engine and cache
    names are known only after the case statement, so they stay @ENGINE@/@CACHE@ until then."""
    words = []
    for arg in trtexec_args(plan, input_name, chw, engine="@ENGINE@", calib_cache="@CACHE@"):
        if arg.startswith("--useDLACore="):
            words.append('"--useDLACore=$DLA_CORE"')
        else:
            words.append(shlex.quote(arg))
    return " ".join(words)


def build_script(options: BuildOptions, available: set[str], input_name: str, chw: Sequence[int],
                 model_name: str) -> str:
    """``build_engine.sh`` for a bundle: ``./build_engine.sh [int8|fp16|fp32] [DLA_CORE]``.

    The default precision and DLA core are ``options``'; lines exist for every precision the
    bundle's files allow, with and without DLA, for TensorRT 8.5/8.6, 10.x and 11.x.
    """
    cases = []
    for family, version in SCRIPT_FAMILIES.items():
        for precision in ("int8", "fp16", "fp32"):
            for dla in (False, True):
                opts = replace(options, precision=precision, dla_core=0 if dla else None,
                               implicit=options.implicit and precision == "int8" and family != "11")
                try:
                    plan = plan_build(version, opts, available)
                except Exception as e:  # noqa: BLE001 - the reason becomes the script's message
                    body = f"fail {shlex.quote(str(e))}"
                else:
                    mode = plan.int8_mode or ""
                    lo, opt, hi = plan.batch  # the plan's: DLA fixes the batch to the profile's opt
                    body = (f"ONNX={shlex.quote(plan.onnx)}; MODE={shlex.quote(mode)}; "
                            f"NEED_CACHE={'1' if plan.calib_cache else '0'}; "
                            f"BATCH=b{lo}-{opt}-{hi}; BATCH_LIST='{lo}, {opt}, {hi}'; "
                            f"ARGS=({_script_args(plan, input_name, chw)})")
                cases.append(f"    {family}:{precision}:{'dla' if dla else 'gpu'}) {body} ;;")
    default_dla = "" if options.dla_core is None else str(options.dla_core)
    return _SCRIPT.format(
        version=__version__, model=model_name, precision=options.precision, dla=default_dla,
        implicit_suffix="-implicit", cases="\n".join(cases), jetpack_trtexec=TRTEXEC_JETPACK,
        dla_checks=_dla_checks())


def _dla_checks() -> str:
    """Shell lines refusing a DLA build where none exists: the rules and words of ``edge_resnet.export.jetson``,
    with the version the script read from trtexec in place of the example one."""
    def script_words(text: str) -> str:  # the script takes the core as its second argument
        return text.replace("drop --dla", "drop the DLA core argument")

    def said(example: str) -> str:
        return shlex.quote(script_words(dla_version_refusal(example))).replace(example, "'\"$VERSION\"'")

    last_minor = LAST_10X_DLA[1]
    jp = ".".join(map(str, DLA_JETPACK_11))
    old_jetpack = shlex.quote(script_words(dla_device_refusal(None, "11.4.1", "7.1"))).replace(
        "11.4.1", "'\"$VERSION\"'").replace("JetPack 7.1", "JetPack '\"$JETPACK\"'")
    not_agx = shlex.quote(script_words(dla_device_refusal("jetson orin nx", "11.4.1"))).replace(
        "11.4.1", "'\"$VERSION\"'")
    newer = f"{LAST_JETSON_11X[0]}.{LAST_JETSON_11X[1] + 1}.0"
    lines = [f'  if [ "$FAMILY" = 10 ] && [ "$MINOR" -gt {last_minor} ]; then fail {said(f"10.{last_minor + 1}.0")}; fi',
             f'  if [ "$MAJOR" = 11 ] && {{ [ "$MINOR" -lt {FIRST_11X_DLA[1]} ] || {{ [ "$MINOR" -eq {FIRST_11X_DLA[1]} ] '
             f'&& [ "$PATCH" -lt {FIRST_11X_DLA[2]} ]; }}; }}; then fail {said("11.0.0")}; fi',
             f'  if [ "$FAMILY" = 11 ] && {{ [ "$MAJOR" -gt {LAST_JETSON_11X[0]} ] || [ "$MINOR" -gt {LAST_JETSON_11X[1]} ]; }}; '
             f'then fail {said(newer)}; fi',
             '  if [ "$FAMILY" = 11 ] && [ -n "$JETPACK" ] && '
             f'[ "$(printf \'%s\\n\' {jp} "$JETPACK" | sort -V | head -n 1)" != {jp} ]; then fail {old_jetpack}; fi',
             '  case "$(printf \'%s\' "$GPU" | tr \'A-Z\' \'a-z\')" in']
    for key in NO_DLA_BOARDS:
        lines.append(f"    *{shlex.quote(key)}*) fail {shlex.quote(script_words(dla_device_refusal(key, '10.3.0')))} ;;")
    # 11.4.1 has DLA on Jetson AGX Orin only (Orin NX has DLA cores, but NVIDIA's 11.x serves none there)
    lines.append(f'    *agx*orin*) ;;\n    *orin*) [ "$FAMILY" != 11 ] || fail {not_agx} ;;')
    lines.append("  esac")
    return "\n".join(lines)


_SCRIPT = r"""#!/usr/bin/env bash
# Builds the TensorRT engine of {model} on this device with trtexec (written by edge-resnet {version}).
#   ./build_engine.sh [int8|fp16|fp32] [DLA_CORE]        default: {precision} {dla}
# The engine is named by what it is valid for (precision, batch profile, TensorRT version, GPU),
# and <engine>.json beside it records that key for edge-resnet to check before loading it.
# `edge-resnet build-engine .` does the same through the Python API and then checks accuracy.
set -euo pipefail
cd "$(dirname "$0")"
PRECISION="${{1:-{precision}}}"
DLA_CORE="${{2:-{dla}}}"

fail() {{ echo "build_engine.sh: $1" >&2; exit 1; }}

TRTEXEC="${{TRTEXEC:-}}"
if [ -z "$TRTEXEC" ]; then
  if command -v trtexec >/dev/null 2>&1; then TRTEXEC="$(command -v trtexec)"
  elif [ -x {jetpack_trtexec} ]; then TRTEXEC={jetpack_trtexec}
  else fail "trtexec is neither on PATH nor at {jetpack_trtexec}; install TensorRT (JetPack ships it) or set TRTEXEC=/path/to/trtexec"
  fi
fi
echo "trtexec: $TRTEXEC"

# TensorRT's version as trtexec prints it in its banner: [TensorRT v100300] = 10.3.0, v8502 = 8.5.2
CODE="${{TRT_VERSION_CODE:-$({{ "$TRTEXEC" --help 2>&1 || true; }} | sed -n 's/.*TensorRT v\([0-9][0-9]*\).*/\1/p' | head -n 1)}}"
[ -n "$CODE" ] || fail "cannot read the TensorRT version from '$TRTEXEC --help'; set TRT_VERSION_CODE (e.g. 100300 for 10.3.0)"
if [ "$CODE" -ge 10000 ]; then MAJOR=$((CODE / 10000)); REST=$((CODE % 10000)); else MAJOR=$((CODE / 1000)); REST=$((CODE % 1000)); fi
MINOR=$((REST / 100)); PATCH=$((REST % 100)); VERSION="$MAJOR.$MINOR.$PATCH"
if [ "$MAJOR" -lt 8 ] || {{ [ "$MAJOR" -eq 8 ] && [ "$MINOR" -lt 5 ]; }}; then fail "TensorRT $VERSION is older than 8.5 (JetPack 5.1); upgrade it"; fi
if [ "$MAJOR" -ge 11 ]; then FAMILY=11; elif [ "$MAJOR" -ge 10 ]; then FAMILY=10; elif [ "$MAJOR" -eq 9 ]; then fail "TensorRT 9 is not supported; use 8.5+, 10.x or 11.x"; else FAMILY=8; fi
# 8.5 lacks what 8.6 added: --builderOptimizationLevel, and --skipInference (8.5 says --buildOnly)
TRT85=""; [ "$FAMILY" != 8 ] || [ "$MINOR" -ge 6 ] || TRT85=1

# the device: a Jetson names itself in the device tree, other machines through nvidia-smi
# (EDGE_RESNET_SYSROOT: where those files are read from, for testing with a recorded board; default /)
ROOT="${{EDGE_RESNET_SYSROOT:-}}"
L4T=""; JETPACK=""; GPU=""; CC=""
if [ -f "$ROOT/etc/nv_tegra_release" ]; then
  L4T="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9]*\)\.\([0-9]*\).*/\1.\2.\3/p' "$ROOT/etc/nv_tegra_release" | head -n 1)"
  JETPACK="$(dpkg-query -W -f='${{Version}}' nvidia-jetpack 2>/dev/null | sed -n 's/^\([0-9][0-9.]*\).*/\1/p' || true)"
  GPU="$(tr -d '\000' < "$ROOT/proc/device-tree/model" 2>/dev/null || true)"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  [ -n "$GPU" ] || GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)"
  CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)"
fi
SLUG="$(printf '%s' "$GPU" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')"
[ -n "$SLUG" ] || SLUG=unknown-gpu

TARGET="gpu"; [ -z "$DLA_CORE" ] || TARGET="dla"
if [ -n "$DLA_CORE" ]; then
{dla_checks}
fi
ARGS=(); ONNX=""; MODE=""; NEED_CACHE=0; BATCH=""; BATCH_LIST=""
case "$FAMILY:$PRECISION:$TARGET" in
{cases}
    *) fail "unknown precision '$PRECISION' (int8, fp16 or fp32)" ;;
esac

NAME_PRECISION="$PRECISION"; [ "$MODE" != implicit ] || NAME_PRECISION="$PRECISION{implicit_suffix}"
ENGINE="model.$NAME_PRECISION${{DLA_CORE:+.dla$DLA_CORE}}.$BATCH.trt$VERSION.$SLUG.engine"
CACHE=""
if [ "$NEED_CACHE" = 1 ]; then
  # the same ranges, under the header this TensorRT writes itself
  CACHE="calib.trt$CODE.cache"
  sed "1s/^TRT-[0-9]*-/TRT-$CODE-/" calib.cache > "$CACHE"
fi
for i in "${{!ARGS[@]}}"; do
  case "${{ARGS[$i]}}" in
    --saveEngine=@ENGINE@) ARGS[$i]="--saveEngine=$ENGINE" ;;
    --calib=@CACHE@) ARGS[$i]="--calib=$CACHE" ;;
    --builderOptimizationLevel=*) [ -z "$TRT85" ] || unset 'ARGS[i]' ;;  # 8.6+ only
    --skipInference) [ -z "$TRT85" ] || ARGS[$i]=--buildOnly ;;
  esac
done
echo "building $ENGINE with TensorRT $VERSION ($PRECISION${{DLA_CORE:+ on DLA $DLA_CORE}})"
# trtexec writes the engine in place: its old key goes first, so an interrupted build is never trusted
rm -f "$ENGINE.json"
START=$(date +%s)
"$TRTEXEC" "${{ARGS[@]}}"
[ -s "$ENGINE" ] || fail "trtexec finished without writing $ENGINE"
echo "built $ENGINE in $(( $(date +%s) - START )) s"

# the engine's key, for edge-resnet to compare with the system that loads it
json() {{ if [ -n "$1" ]; then printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; else printf null; fi; }}
SHA="$(sha256sum "$ONNX" | cut -d ' ' -f 1)"
INT8_MODE=null; [ -z "$MODE" ] || INT8_MODE="\"$MODE\""
DLA_JSON=null; [ -z "$DLA_CORE" ] || DLA_JSON="$DLA_CORE"
cat > "$ENGINE.json.tmp" <<EOF
{{"format": "edge-resnet/engine-key-1", "gpu": $(json "$GPU"), "compute_capability": $(json "$CC"),
 "tensorrt": "$VERSION", "jetpack": $(json "$JETPACK"), "l4t": $(json "$L4T"), "precision": "$PRECISION",
 "batch": [$BATCH_LIST], "dla_core": $DLA_JSON, "int8_mode": $INT8_MODE, "onnx": "$ONNX", "onnx_sha256": "$SHA",
 "built_by": "build_engine.sh"}}
EOF
mv "$ENGINE.json.tmp" "$ENGINE.json"
echo "wrote $ENGINE.json; check the engine with: edge-resnet verify --bundle . --engine $ENGINE"
"""
