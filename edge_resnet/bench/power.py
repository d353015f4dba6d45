"""Board power on a Jetson, from ``tegrastats``.

tegrastats prints one line per interval; the power rails come last, each as
``NAME current/average`` in milliwatts (JetPack 5/6 write the unit: ``VDD_IN 4507mW/4507mW``;
JetPack 4 does not: ``POM_5V_IN 1143/1143``). The rest of the line (``RAM 2448/7764MB``,
``CPU [5%@1190,...]``, temperatures) is not power and is skipped: a rail's numbers end at a
space or the end of the line, never in ``MB`` or ``kB``.

The board's input rail is the figure a benchmark wants (it includes CPU, GPU, memory and the
rest of the module): ``VDD_IN`` (Orin NX/Nano, Xavier NX), ``POM_5V_IN`` (Nano, TX2), else the
sum of all rails (AGX Orin, AGX Xavier list only their parts). jetson-stats (``jtop``) reads the
same sysfs counters through a service; tegrastats ships with every JetPack, so it is the one used.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RAIL = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
# the input rail of each board family, best first; other boards: the sum of their rails
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
INTERVAL_MS = 100


def parse_tegrastats(line: str) -> dict[str, int]:
    """Rail name -> instantaneous power in mW from one tegrastats line (empty when it has none)."""
    return {m.group(1): int(m.group(2)) for m in RAIL.finditer(line)}


def board_power_mw(rails: dict[str, int]) -> tuple[float, str] | None:
    """(board power in mW, which rail or "sum of rails") of one sample, or None without rails."""
    if not rails:
        return None
    for name in TOTAL_RAILS:
        if name in rails:
            return float(rails[name]), name
    return float(sum(rails.values())), "sum of rails"


@dataclass
class PowerSampler:
    """Runs ``tegrastats --interval`` in the background and keeps (time, board mW) samples.

    Use ``PowerSampler.start()`` (None where tegrastats is absent), ``window(t0, t1)`` for the
    samples of a timed loop (``time.perf_counter()`` clock), ``stop()`` at the end.
    """

    process: subprocess.Popen[str]
    samples: list[tuple[float, float]] = field(default_factory=list)
    rail: str | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, interval_ms: int = INTERVAL_MS) -> PowerSampler | None:
        exe = shutil.which("tegrastats")
        if exe is None:
            return None
        try:
            proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as e:
            log.warning("tegrastats would not start (%s); no power figures", e)
            return None
        sampler = cls(proc)
        sampler._thread = threading.Thread(target=sampler._read, daemon=True)
        sampler._thread.start()
        return sampler

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            power = board_power_mw(parse_tegrastats(line))
            if power is not None:
                self.rail = power[1]
                self.samples.append((time.perf_counter(), power[0]))

    def window(self, t0: float, t1: float, images: int) -> dict[str, Any] | None:
        """Mean board power over [t0, t1] and energy per image; None with fewer than 2 samples
        (the loop was shorter than two tegrastats intervals)."""
        return power_summary([p for t, p in list(self.samples) if t0 <= t <= t1], t1 - t0, images, self.rail)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def power_summary(samples_mw: list[float], seconds: float, images: int, rail: str | None) -> dict[str, Any] | None:
    """Mean power (W) of the samples and energy per image (mJ) = mean power x seconds / images."""
    if len(samples_mw) < 2 or images < 1 or seconds <= 0:
        return None
    mean_w = sum(samples_mw) / len(samples_mw) / 1000
    return {"rail": rail, "samples": len(samples_mw), "mean_w": mean_w,
            "energy_per_image_mj": 1000 * mean_w * seconds / images}
