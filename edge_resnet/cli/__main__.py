"""``python -m edge_resnet.cli``: the ``edge-resnet`` command."""

import sys

from edge_resnet.cli import main

sys.exit(main())
