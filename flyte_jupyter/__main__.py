"""`python -m flyte_jupyter` is the `flyte-jupyter` command."""

import sys

if __name__ == "__main__":  # not when a spawned compressing process imports it
    from .cli import main

    sys.exit(main())
