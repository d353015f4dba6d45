"""The ``edge-resnet`` command: parse options, call one library function, print its result.

Every EdgeResNetError becomes one line on stderr and exit code 1, and so does an OSError (a full disk, a
permission, a device that went away); argparse usage errors exit 2. Anything else is a bug of ours: one
line says so and where its traceback was saved, and the exit code is 70 (``EXIT_BUG``).
Commands live in two tables: the device's (``device.py``: no torch, Python 3.8) and the
workstation's (``workstation.py``: PyTorch, the ``train`` extra). Only the chosen command's
options are built, and every handler imports what it runs, so ``edge-resnet camera --help``
loads neither torch nor numpy.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from edge_resnet import __version__
from edge_resnet.cli._common import Command
from edge_resnet.cli.device import COMMANDS as DEVICE_COMMANDS
from edge_resnet.cli.workstation import COMMANDS as WORKSTATION_COMMANDS
from edge_resnet.contract import EXIT_BUG
from edge_resnet.errors import EdgeResNetError

# the order `edge-resnet --help` lists them in
_ORDER = ("models", "train", "experiment", "eval", "export", "qat", "quantize", "sensitivity", "lint", "bench", "camera",
          "bundle", "build-engine",
          "verify", "trtexec-cmd", "doctor")
COMMANDS: Dict[str, Command] = {name: {**DEVICE_COMMANDS, **WORKSTATION_COMMANDS}[name] for name in _ORDER}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, every other command gets its help line but no options."""
    parser = argparse.ArgumentParser(
        prog="edge-resnet", description="ResNet classifiers from training to an INT8 engine on a Jetson.")
    parser.add_argument("--version", action="version", version=f"edge-resnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True  # add_subparsers(required=...) is Python 3.7+, but keep 3.8's argparse happy either way
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        if only is None or name == only:
            command.options(p)
        p.set_defaults(func=command.run)
    return parser


def _chosen(argv: Sequence[str]) -> Optional[str]:
    """The subcommand named in ``argv`` (the first word that is one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


def _workstation_check(command: str) -> None:
    """A workstation command on a device install: one line naming what to install."""
    if command not in WORKSTATION_COMMANDS:
        return
    if sys.version_info < (3, 10):
        raise EdgeResNetError(f"`edge-resnet {command}` needs Python 3.10 or newer (this is "
                              f"{sys.version_info[0]}.{sys.version_info[1]}); run it on the workstation; "
                              f"this Python runs the device commands: {', '.join(DEVICE_COMMANDS)}")
    missing = [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgeResNetError(f"`edge-resnet {command}` needs PyTorch ({' and '.join(missing)} not installed); "
                              "install the workstation extra: pip install 'edge-resnet[train]'")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_chosen(argv))
    try:
        args = parser.parse_args(argv)
    except EdgeResNetError as e:  # a number out of its range (cli._common.Bounded): one line, like every mistake
        print(f"edge-resnet: error: {e}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _workstation_check(args.command)
        return func(args)
    except EdgeResNetError as e:
        print(f"edge-resnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-resnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: silence the final flush instead of a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # the system said no: disk full, permission, a device that went away
        print(f"edge-resnet: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug of ours: one line, the traceback in a file
        saved = _save_traceback(argv)
        where = f"the traceback is in {saved}" if saved else "the traceback could not be saved"
        print(f"edge-resnet: internal error (a bug in edge-resnet {__version__}, not in your input): "
              f"{type(e).__name__}: {e}; {where}; please report it", file=sys.stderr)
        return EXIT_BUG


def _save_traceback(argv: Sequence[str]) -> Optional[Path]:
    """The current exception's traceback, the command line and the versions, in a new file under the user's
    cache folder (or the temp folder); None when neither can be written."""
    text = (f"edge-resnet {__version__}, Python {sys.version.split()[0]} on {sys.platform}\n"
            f"command: edge-resnet {' '.join(argv)}\n\n{traceback.format_exc()}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-resnet"
    for folder in (cache, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


__all__ = ["COMMANDS", "build_parser", "main"]
