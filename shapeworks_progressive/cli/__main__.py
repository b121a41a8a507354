"""``python -m shapeworks_progressive.cli``: the same as the ``shapeworks-progressive`` command."""

import sys

from . import main

sys.exit(main())
