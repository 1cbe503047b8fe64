"""``shipwreck`` / ``python -m shipwreck_cli``."""

from __future__ import annotations

import sys

from shipwreck_cli.cli import main as run


def main() -> None:
    """The console script: run and exit with the command's code."""
    sys.exit(run())


if __name__ == "__main__":
    main()
