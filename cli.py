"""The ``edge-resnet`` command from a checkout: ``python -m cli ...`` runs what ``edge-resnet ...`` runs.

The command-line layer itself is ``edge_resnet.cli`` (installed inside the one package the wheel
ships); this file is the repository's entry point to it.
"""

import sys

from edge_resnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
