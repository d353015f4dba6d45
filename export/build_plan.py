"""How to build an engine with a given TensorRT version: which ONNX, which flags, which calibration.

One pure function, ``plan_build``, decides it for both ways of building (the Python builder in
``edge_resnet.export.engine`` and the trtexec lines in ``edge_resnet.export.trtexec``), so the two cannot drift apart:

| TensorRT | int8 | fp16 | fp32 |
|---|---|---|---|
| 8.5, 8.6, 10.x | model.int8.onnx + INT8 (+FP16 for layers without INT8 kernels); with `implicit` or on DLA: model.int8.implicit.onnx + calib.cache + INT8 + FP16 | model.fp32.onnx + FP16 | model.fp32.onnx |
| 11.x | model.int8.onnx, no flags (strongly typed) | model.fp16.onnx, no flags | model.fp32.onnx |

Implicit INT8 builds from ``model.int8.implicit.onnx``: the FP32 graph with the bias-corrected
biases of model.int8.onnx and the classifier as a 1x1 convolution, so every tensor TensorRT's ONNX
parser creates has a range in calib.cache (a Gemm would add unnamed ones that run in FP16/FP32).

TensorRT 11 removed BuilderFlag.INT8/FP16, calibrators and trtexec's --int8/--fp16/--calib, so
nothing here ever asks for them there (``REMOVED_IN_11``; the conformance test checks it against
the 11.x bindings). DLA builds are refused where no DLA exists (``edge_resnet.export.jetson``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_resnet.errors import ConfigError
from edge_resnet.contract.files import FILES, TIMING_CACHE
from edge_resnet.contract.engine import PRECISIONS, short_version, strongly_typed_only, version_tuple
from edge_resnet.export.jetson import dla_device_refusal, dla_version_refusal

# the run directory's files the build reads, by the precision (or mode) it builds
ONNX_FILES = {"fp32": FILES["fp32"], "fp16": FILES["fp16"], "int8": FILES["tensorrt"], "implicit": FILES["implicit"]}
# TensorRT Python names 11.0 removed (NVIDIA's 10.x -> 11.x migration guide) that 8.5-10.x builds use:
# no plan for 11.x may reach them (tests/export/test_tensorrt_api.py checks both against the bindings)
REMOVED_IN_11 = ("BuilderFlag.INT8", "BuilderFlag.FP16", "IInt8EntropyCalibrator2", "IBuilderConfig.int8_calibrator",
                 "IBuilderConfig.set_calibration_profile", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
CALIB_CACHE = FILES["cache"]


@dataclass(frozen=True)
class BuildOptions:
    """What the user asks of an engine; ``plan_build`` turns it into TensorRT settings."""

    precision: str = "int8"
    # optimization profile (min, opt, max) over the batch dimension; opt 1 suits a camera loop
    batch: tuple[int, int, int] = (1, 1, 32)
    # builder workspace limit in MiB; None leaves TensorRT's default (the device's memory)
    workspace_mib: int | None = None
    # a DLA core (Jetson AGX/NX); layers DLA cannot run fall back to the GPU
    dla_core: int | None = None
    # INT8 from calib.cache (model.int8.implicit.onnx) instead of the Q/DQ graph (DLA on 8.5-10.x needs it)
    implicit: bool = False
    # the timing cache file, read when it exists and written back after the build
    timing_cache: str | None = TIMING_CACHE
    # builder optimization level 0-5 (TensorRT 8.6+); None: TensorRT's default (3)
    opt_level: int | None = None

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got {lo}/{opt}/{hi}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ConfigError(f"workspace must be at least 1 MiB, got {self.workspace_mib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"DLA core must be 0 or 1, got {self.dla_core}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ConfigError(f"builder optimization level must be 0-5, got {self.opt_level}")
        if self.implicit and self.precision != "int8":
            raise ConfigError("--implicit is an INT8 mode; drop it or use --precision int8")
        if self.dla_core is not None and self.precision == "fp32":
            raise ConfigError("DLA runs FP16 and INT8 only; use --precision int8 or fp16 with --dla")


@dataclass(frozen=True)
class BuildPlan:
    """TensorRT settings for one build; ``flags`` are BuilderFlag member names."""

    tensorrt: str
    onnx: str
    precision: str
    batch: tuple[int, int, int]
    flags: tuple[str, ...]
    # "qdq", "implicit" or None
    int8_mode: str | None
    calib_cache: str | None
    dla_core: int | None
    # TensorRT 8.x needs NetworkDefinitionCreationFlag.EXPLICIT_BATCH; 10 made it the only mode
    explicit_batch_flag: bool
    strongly_typed: bool
    workspace_mib: int | None
    timing_cache: str | None
    opt_level: int | None
    notes: tuple[str, ...] = field(default=())


def plan_build(tensorrt: str, options: BuildOptions, available: set[str] | frozenset[str], *,
               device: str | None = None, jetpack: str | None = None) -> BuildPlan:
    """The build of ``options`` with TensorRT ``tensorrt`` from the files in ``available``.

    Args:
        device: the board or GPU name, when known: a DLA build for a board without one is refused.
        jetpack: the JetPack release, when known (DLA with TensorRT 11 needs 7.2.2+).

    Raises:
        ConfigError: a combination this TensorRT (or device) cannot build, or a file the run lacks
            (named, with the export command that writes it).
    """
    options.validate()
    version = short_version(tensorrt)
    major, minor, _ = version_tuple(version)
    if major < 8 or (major == 8 and minor < 5):
        raise ConfigError(f"TensorRT {version} is older than this tool supports (8.5, JetPack 5.1); "
                          "upgrade JetPack or TensorRT")
    if major == 9:
        raise ConfigError(f"TensorRT {version} (a short-lived 9.x release) is not supported; use 8.5/8.6, 10.x or 11.x")
    if options.dla_core is not None:
        why = dla_version_refusal(version) or dla_device_refusal(device, version, jetpack)
        if why:
            raise ConfigError(why)
    typed = strongly_typed_only(version)
    notes: list[str] = []
    implicit = options.implicit or (options.precision == "int8" and options.dla_core is not None and not typed)
    if implicit and not options.implicit:
        notes.append("DLA INT8 builds from calib.cache (implicit quantization), as DLA requires")
    if typed and options.implicit:
        raise ConfigError(f"TensorRT {version} has no implicit INT8 (calibration caches were removed in 11); "
                          "drop --implicit to build the Q/DQ model")

    batch = tuple(options.batch)
    if options.dla_core is not None and batch[0] != batch[2]:
        # DLA runs static shapes only; a dynamic profile would send every layer back to the GPU
        batch = (batch[1],) * 3
        notes.append(f"DLA needs a fixed batch; building for batch {batch[1]} (the profile's opt)")
    flags: list[str] = []
    int8_mode = calib = None
    if options.precision == "int8":
        int8_mode = "implicit" if implicit else "qdq"
        onnx = ONNX_FILES["implicit"] if implicit else ONNX_FILES["int8"]
        calib = CALIB_CACHE if implicit else None
        if not typed:
            # FP16 lets layers without INT8 kernels run in half precision instead of FP32
            flags = ["INT8", "FP16"]
    elif options.precision == "fp16":
        onnx = ONNX_FILES["fp16"] if typed else ONNX_FILES["fp32"]
        if not typed:
            flags = ["FP16"]
    else:
        onnx = ONNX_FILES["fp32"]
    if options.dla_core is not None:
        flags.append("GPU_FALLBACK")
    missing = [f for f in (onnx, calib) if f is not None and f not in available]
    if missing:
        hint = {ONNX_FILES["int8"]: "edge-resnet export --int8", CALIB_CACHE: "edge-resnet export --int8",
                ONNX_FILES["implicit"]: "edge-resnet export --int8",
                ONNX_FILES["fp16"]: "edge-resnet export --fp16", ONNX_FILES["fp32"]: "edge-resnet export"}
        raise ConfigError(f"building {options.precision} with TensorRT {version} needs {missing[0]}, which the run "
                          f"does not have; re-export with `{hint[missing[0]]}`")
    opt_level = options.opt_level
    if opt_level is not None and (major, minor) < (8, 6):
        notes.append(f"TensorRT {version} has no builder optimization level; ignoring {opt_level}")
        opt_level = None
    return BuildPlan(tensorrt=version, onnx=onnx, precision=options.precision, batch=batch,
                     flags=tuple(flags), int8_mode=int8_mode, calib_cache=calib, dla_core=options.dla_core,
                     explicit_batch_flag=major < 10, strongly_typed=typed, workspace_mib=options.workspace_mib,
                     timing_cache=options.timing_cache, opt_level=opt_level, notes=tuple(notes))
