"""``python -m edge_resnet.bench.worker SPEC.json RESULT.json``: one benchmark row in its own process.

Each backend runs in a fresh interpreter so that its peak memory (VmHWM) is its own, not the sum
of every library and model loaded before it, and so that one backend's thread pools and arenas
cannot slow the next. The parent (``edge_resnet.bench.benchmark``) writes the spec and reads the
result; a backend that cannot run here is a result with ``skipped`` set, not a failure.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from edge_resnet.bench.measure import measure
from edge_resnet.errors import EdgeResNetError


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        result = measure(spec)
    except EdgeResNetError as e:
        result = {"skipped": str(e)}
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
