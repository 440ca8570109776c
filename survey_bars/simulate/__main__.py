"""``python -m survey_bars.simulate``: the simulator's command line on its own."""

import sys

from .cli import _main

sys.exit(_main())
