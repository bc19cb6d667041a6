"""`python -m flyte_jupyter` is the `flyte-jupyter` command."""

import sys

from .cli import main

sys.exit(main())
