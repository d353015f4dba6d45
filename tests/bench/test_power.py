"""tegrastats parsing on lines written from its documented format, one per board family, and the
power arithmetic (known answers)."""

from __future__ import annotations

import pytest

from edge_resnet.bench.power import board_power_mw, parse_tegrastats, power_summary

# Orin Nano / Orin NX, JetPack 6 (a timestamp first, units on the rails)
ORIN_NANO = ("11-27-2026 10:00:00 RAM 2448/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) "
             "CPU [12%@1510,3%@1510,0%@1510,1%@1510,off,off] GR3D_FREQ 41% cpu@47.5C soc2@46.8C soc0@46.9C "
             "gpu@46.6C tj@47.5C soc1@47.2C VDD_IN 6120mW/5016mW VDD_CPU_GPU_CV 1602mW/980mW VDD_SOC 1521mW/1430mW")
# AGX Orin, JetPack 5: no input rail, only its parts
AGX_ORIN = ("RAM 5112/62780MB (lfb 13945x4MB) SWAP 0/31390MB (cached 0MB) CPU [1%@2201,0%@2201,off,off] "
            "EMC_FREQ 0%@3199 GR3D_FREQ 0%@[1300,1300] VIC_FREQ 729 APE 174 CV0@-256C CPU@45.2C Tboard@34C "
            "VDD_GPU_SOC 2400mW/2400mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 3224mW/3224mW VDDQ_VDD2_1V8AO 404mW/404mW")
# Jetson Nano, JetPack 4: no units, IRAM in kB
NANO = ("RAM 1534/3964MB (lfb 72x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [3%@102,2%@102,0%@102,1%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@25C CPU@27.5C "
        "PMIC@100C GPU@27C AO@34C thermal@27.25C POM_5V_IN 1143/1143 POM_5V_GPU 0/0 POM_5V_CPU 163/163")
# AGX Xavier, JetPack 4: rails named GPU, CPU, SOC... without units
AGX_XAVIER = ("RAM 1234/15823MB (lfb 3000x4MB) SWAP 0/7911MB (cached 0MB) CPU [2%@1190,1%@1190,off,off] "
              "EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@31C GPU@31.5C Tdiode@33.75C "
              "GPU 0/0 CPU 311/311 SOC 1245/1245 CV 0/0 VDDRQ 156/156 SYS5V 1032/1032")


@pytest.mark.parametrize(("line", "rails"), [
    (ORIN_NANO, {"VDD_IN": 6120, "VDD_CPU_GPU_CV": 1602, "VDD_SOC": 1521}),
    (AGX_ORIN, {"VDD_GPU_SOC": 2400, "VDD_CPU_CV": 400, "VIN_SYS_5V0": 3224, "VDDQ_VDD2_1V8AO": 404}),
    (NANO, {"POM_5V_IN": 1143, "POM_5V_GPU": 0, "POM_5V_CPU": 163}),
    (AGX_XAVIER, {"GPU": 0, "CPU": 311, "SOC": 1245, "CV": 0, "VDDRQ": 156, "SYS5V": 1032}),
])
def test_rails_are_the_instantaneous_values_and_nothing_else(line: str, rails: dict[str, int]) -> None:
    """RAM/SWAP (MB), IRAM (kB), CPU loads and temperatures are not rails; the first number is the
    current reading, the second the running average."""
    assert parse_tegrastats(line) == rails


def test_board_power_prefers_the_input_rail_else_sums_the_parts() -> None:
    assert board_power_mw(parse_tegrastats(ORIN_NANO)) == (6120.0, "VDD_IN")
    assert board_power_mw(parse_tegrastats(NANO)) == (1143.0, "POM_5V_IN")
    assert board_power_mw(parse_tegrastats(AGX_ORIN)) == (2400.0 + 400 + 3224 + 404, "sum of rails")
    assert board_power_mw(parse_tegrastats("RAM 1534/3964MB SWAP 0/1982MB (cached 0MB)")) is None


def test_power_summary_known_answer() -> None:
    # 4 W and 5 W samples over 2 s for 100 images: 4.5 W mean, 4.5 W * 2 s / 100 = 90 mJ per image
    got = power_summary([4000.0, 5000.0], seconds=2.0, images=100, rail="VDD_IN")
    assert got == {"rail": "VDD_IN", "samples": 2, "mean_w": 4.5, "energy_per_image_mj": pytest.approx(90.0)}
    assert power_summary([4000.0], seconds=2.0, images=100, rail="VDD_IN") is None  # one sample: no figure
