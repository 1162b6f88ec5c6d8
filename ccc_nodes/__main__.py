"""``python -m ccc_nodes ARGS`` is ``ccc ARGS`` (e.g. under ``torchrun ... -m ccc_nodes colorize``)."""

import sys

from ccc_nodes.interfaces.cli import main

sys.exit(main())
