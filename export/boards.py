"""Which Jetson a board is, and which JetPack its L4T release belongs to: the facts ``edge-resnet doctor``
reads a board's own files against.

Sources: the module data sheets and NVIDIA's device-tree names for each module (part number
p<board>-<sku>, the second entry of /proc/device-tree/compatible: p3701 AGX Orin, p3767 Orin NX/Nano,
p2888 AGX Xavier, p3668 Xavier NX, p3834 Thor; DLA cores per SKU from the data sheets: Orin NX 8GB has one,
Orin Nano and Thor none); the L4T release of each JetPack from NVIDIA's JetPack archive. Exact releases
only: a revision missing from the table is named by its major (L4T R36 is "6.x"), never guessed.
Torch-free and TensorRT-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from edge_resnet.export.jetson import JETPACKS, JetPack

from edge_resnet.contract.engine import version_tuple


@dataclass(frozen=True)
class Module:
    """One Jetson module SKU."""

    part: str  # "p3701-0000": the device tree's module entry
    name: str
    dla_cores: int
    soc: str  # tegra234 (Orin), tegra194 (Xavier), tegra264 (Thor)


MODULES: tuple[Module, ...] = (
    Module("p3701-0000", "Jetson AGX Orin (developer kit module)", 2, "tegra234"),
    Module("p3701-0004", "Jetson AGX Orin 32GB", 2, "tegra234"),
    Module("p3701-0005", "Jetson AGX Orin 64GB", 2, "tegra234"),
    Module("p3701-0008", "Jetson AGX Orin Industrial", 2, "tegra234"),
    Module("p3767-0000", "Jetson Orin NX 16GB", 2, "tegra234"),
    Module("p3767-0001", "Jetson Orin NX 8GB", 1, "tegra234"),
    Module("p3767-0003", "Jetson Orin Nano 8GB", 0, "tegra234"),
    Module("p3767-0004", "Jetson Orin Nano 4GB", 0, "tegra234"),
    Module("p3767-0005", "Jetson Orin Nano 8GB (developer kit module)", 0, "tegra234"),
    Module("p2888-0001", "Jetson AGX Xavier 16GB", 2, "tegra194"),
    Module("p2888-0004", "Jetson AGX Xavier 32GB", 2, "tegra194"),
    Module("p2888-0005", "Jetson AGX Xavier 64GB", 2, "tegra194"),
    Module("p2888-0008", "Jetson AGX Xavier Industrial", 2, "tegra194"),
    Module("p3668-0000", "Jetson Xavier NX (developer kit module)", 2, "tegra194"),
    Module("p3668-0001", "Jetson Xavier NX", 2, "tegra194"),
    Module("p3668-0003", "Jetson Xavier NX 16GB", 2, "tegra194"),
    Module("p3834-0000", "Jetson T5000 (Thor)", 0, "tegra264"),
    Module("p3834-0008", "Jetson T5000 (Thor, developer kit module)", 0, "tegra264"),
)
# by the board name alone (a device tree without a known module entry): lower-case key -> DLA cores;
# the first match wins, so "orin nano" comes before "orin"
DLA_BY_NAME = (("orin nano", 0), ("orin nx", None), ("agx orin", 2), ("thor", 0), ("xavier", 2))

# L4T release -> JetPack, exact releases only
JETPACK_FOR_L4T = {
    "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "35.6.1": "5.1.5", "35.6.2": "5.1.5",
    "36.3.0": "6.0", "36.4.0": "6.1", "36.4.2": "6.1.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "36.5.0": "6.2.2", "36.5.2": "6.2.3",
    "38.2.0": "7.0", "38.2.1": "7.0", "38.4.0": "7.1",
    "39.2.0": "7.2", "39.2.1": "7.2.1",
}
JETPACK_MAJOR_FOR_L4T = {"32": "4.x", "34": "5.0", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}


def module_of(compatible: Sequence[str]) -> Module | None:
    """The module named by /proc/device-tree/compatible ("nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000",
    "nvidia,tegra234"), or None when no entry names a module of the table."""
    parts = set()
    for entry in compatible:
        parts.update(re.findall(r"p\d{4}-\d{4}", entry))
    for module in MODULES:
        if module.part in parts:
            return module
    return None


def dla_cores(compatible: Sequence[str], model: str | None) -> int | None:
    """DLA cores of the board: from its module, else from its name; None when neither says."""
    module = module_of(compatible)
    if module is not None:
        return module.dla_cores
    name = (model or "").lower()
    for key, cores in DLA_BY_NAME:
        if key in name:
            return cores
    return None


def jetpack_for_l4t(l4t: str | None) -> str | None:
    """"36.4.3" -> "6.2"; an unknown revision -> its major's family ("6.x"); None for None."""
    if not l4t:
        return None
    if l4t in JETPACK_FOR_L4T:
        return JETPACK_FOR_L4T[l4t]
    return JETPACK_MAJOR_FOR_L4T.get(l4t.split(".")[0])


# the JetPack versions each row of JETPACKS covers: [low, high)
# ("7.2.2+" is not a JetPack of its own: NVIDIA's TensorRT 11.4.1 package, installed on JetPack 7.2.2 or later)
ROW_SPANS = {"5.1.x": ((5, 1, 0), (5, 2, 0)), "6.0": ((6, 0, 0), (6, 1, 0)), "6.1/6.2": ((6, 1, 0), (7, 0, 0)),
             "7.0/7.1": ((7, 0, 0), (7, 2, 0)), "7.2": ((7, 2, 0), (999, 0, 0))}
ADD_ON_SPANS = {"7.2.2+": ((7, 2, 2), (999, 0, 0))}


def jetpack_row(jetpack: str | None, l4t: str | None = None) -> JetPack | None:
    """The row of ``JETPACKS`` a JetPack release falls in ("6.2" -> the 6.1/6.2 row). A family from an unknown
    L4T revision ("6.x") is placed by the L4T release where that decides it (R36.4+ is 6.1/6.2, R38 is 7.0/7.1).
    None for a JetPack edge-resnet has no row for (4.x, 5.0) or cannot place."""
    if not jetpack:
        return None
    if jetpack.endswith(".x"):
        l4t_v = version_tuple(l4t) if l4t else (0, 0, 0)
        by_l4t = {35: "5.1" if l4t_v >= (35, 2, 0) else None, 36: "6.0" if l4t_v < (36, 4, 0) else "6.1",
                  38: "7.0", 39: "7.2"}
        jetpack = by_l4t.get(l4t_v[0])
        if jetpack is None:
            return None
    v = version_tuple(jetpack)
    for row in JETPACKS:
        low, high = ROW_SPANS.get(row.release, ((0,), (0,)))
        if low <= v < high:
            return row
    return None


def tensorrt_releases(jetpack: str | None, l4t: str | None = None) -> tuple[str, ...]:
    """The TensorRT versions NVIDIA supports on a JetPack: the one it ships, and a package installed on top
    where one exists (11.4.1 on JetPack 7.2.2+)."""
    row = jetpack_row(jetpack, l4t)
    if row is None:
        return ()
    v = version_tuple(jetpack) if jetpack and not jetpack.endswith(".x") else (0, 0, 0)
    extra = [r.tensorrt for r in JETPACKS for name, (low, high) in ADD_ON_SPANS.items()
             if r.release == name and low <= v < high]
    return (row.tensorrt, *extra)
