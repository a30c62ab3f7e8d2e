"""`python -m minimoe …` is the same as the `minimoe` command."""

import sys

from minimoe.cli import main

sys.exit(main())
