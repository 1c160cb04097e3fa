"""Command line: ``python -m sparseqp demo`` (more subcommands in sparseqp.cli)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
