"""``python -m memvisor``: the same as the ``memvisor`` command."""

import sys

from memvisor.cli import main

sys.exit(main())
