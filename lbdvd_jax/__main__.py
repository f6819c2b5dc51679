"""`python -m lbdvd_jax` runs the `lbdvd` command."""

import sys

from lbdvd_jax.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
