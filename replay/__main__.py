"""Entry point for `python -m replay <command>` (see replay.cli)."""

import sys

from replay.cli import main

sys.exit(main())
