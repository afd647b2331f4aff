"""python -m sjc: the same as the sjc command."""
import sys

from .cli import main

sys.exit(main())
