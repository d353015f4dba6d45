"""The two installs side by side: venv sizes, and the start-up time of device commands' --help.

    python benchmarks/install_and_startup.py [--before OLD_CHECKOUT] [--repeat 15]

Builds the wheel from this checkout, installs it into a fresh venv as a device does
(`pip install edge-resnet[video]`, no torch), and prints `du -sh` of that venv and of the
workstation venv running this script (.venv, with torch). Then times `edge-resnet --help`,
`camera --help`, `bench --help` and `verify --help` (median and min of --repeat runs, each a new
process) in both venvs and, with --before, in an older checkout of the repository (run with this
interpreter, the checkout first on sys.path: how the command started before the change). Prints
the machine's load average next to the figures: only figures from one run compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import machine  # noqa: E402

COMMANDS = ["--help", "camera --help", "bench --help", "verify --help"]


def _du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()[0]


def _time(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
        runs.append(time.perf_counter() - t)
        if proc.returncode != 0 or not proc.stdout.startswith("usage:"):
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr[-500:]}")
    return statistics.median(runs), min(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="an older checkout to time as well")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(ROOT)], check=True)
        wheel = next(tmp.glob("edge_resnet-*.whl"))
        device = tmp / "device-venv"
        subprocess.run([sys.executable, "-m", "venv", str(device)], check=True)
        subprocess.run([str(device / "bin" / "pip"), "install", "-q", f"{wheel}[video]"], check=True)
        workstation = Path(sys.executable).parent.parent
        print(f"device venv (pip install edge-resnet[video]): {_du(device)}")
        print(f"workstation venv ({workstation}, torch and the dev tools): {_du(workstation)}")
        print(f"load average before timing: {os.getloadavg()[0]:.2f}")
        heads = ["device venv", "workstation venv"] + (["before (torch installed)"] if args.before else [])
        print(f"{'command':<16}" + "".join(f"{h + ' median/min s':>36}" for h in heads), flush=True)
        for command in COMMANDS:
            cells = [_time([str(exe), *command.split()], args.repeat)
                     for exe in (device / "bin" / "edge-resnet", workstation / "bin" / "edge-resnet")]
            if args.before is not None:
                code = f"import sys; sys.path.insert(0, {str(args.before)!r}); import cli; sys.exit(cli.main())"
                cells.append(_time([sys.executable, "-c", code, *command.split()], args.repeat))
            print(f"{command:<16}" + "".join(f"{med:>27.3f} / {low:.3f}" for med, low in cells), flush=True)
        print(f"load average after timing: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
