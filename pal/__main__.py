"""``python -m pal`` is the ``pal`` command."""

import sys

from pal.cli import main

sys.exit(main())
