"""How the command ends when something goes wrong: a user's mistake (one line, exit 1), the system saying no
(one line, exit 1), a bug of ours (one line saying it is a bug and where its traceback went, exit 70)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_resnet.contract import EXIT_BUG

ROOT = Path(__file__).resolve().parents[1]

# a command whose handler fails the way a bug would, run through the real entry point in its own process
RUN = """
import sys
import edge_resnet.cli as cli
from edge_resnet.cli._common import Command

def fail(args):
    {body}

def options(p):
    pass

cli.COMMANDS["lint"] = Command(run=fail, options=options, help="h", description="d")
sys.exit(cli.main(["lint"]))
"""


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "tmp").mkdir()
    return subprocess.run([sys.executable, "-c", RUN.format(body=body)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_bug_is_one_line_naming_the_saved_traceback(tmp_path: Path) -> None:
    done = _run("return {}['missing key']", tmp_path)
    assert done.returncode == EXIT_BUG == 70
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("edge-resnet: internal error (a bug in edge-resnet ")
    assert "KeyError: 'missing key'" in lines[0] and lines[0].endswith("please report it")
    saved = Path(lines[0].split("the traceback is in ")[1].split(";")[0])
    assert saved.parent == tmp_path / "cache" / "edge-resnet" and saved.name.startswith("crash-")
    text = saved.read_text()
    assert "command: edge-resnet lint" in text and "Traceback (most recent call last)" in text
    assert "in fail" in text and "KeyError: 'missing key'" in text  # where it failed


def test_where_the_cache_cannot_be_written_the_traceback_goes_to_the_temp_folder(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    done = _run("raise ZeroDivisionError('x')", tmp_path)
    assert done.returncode == EXIT_BUG
    saved = Path(done.stderr.split("the traceback is in ")[1].split(";")[0])
    assert saved.parent == tmp_path / "tmp" and "ZeroDivisionError: x" in saved.read_text()


def test_the_system_saying_no_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = _run("open('/proc/no-such-file-here')", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "edge-resnet: error: [Errno 2] No such file or directory: '/proc/no-such-file-here'"]
    assert not (tmp_path / "cache").exists()


def test_a_users_mistake_stays_exit_1(tmp_path: Path) -> None:
    done = _run("from edge_resnet.errors import ConfigError; raise ConfigError('bad option; use another')", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["edge-resnet: error: bad option; use another"]
