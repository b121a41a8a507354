"""``python -m shapeworks_progressive``: the same as the ``shapeworks-progressive`` command."""

import sys

from .cli import main

sys.exit(main())
