"""`python -m flyte_jupyter.runtime`: run a bundle's entry point (see execute.py)."""

import sys

from .execute import main

sys.exit(main())
