"""`python -m bridge` does exactly what the `moveworks-bridge` console script does."""

import sys

from bridge.process.cli import main

sys.exit(main())
