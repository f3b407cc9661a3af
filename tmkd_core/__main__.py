"""`python -m tmkd_core ...`: the command line (tmkd_core/cli.py)."""
import sys

from .cli import main

sys.exit(main())
