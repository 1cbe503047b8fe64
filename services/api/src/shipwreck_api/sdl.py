"""``python -m shipwreck_api.sdl [PATH]``: print the GraphQL SDL, or write it to PATH.

The committed copy is ``contracts/schema.graphql`` (``just graphql-schema`` rewrites it);
a contract test fails when it differs from what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shipwreck_api.schema import schema


def render_sdl() -> str:
    """The schema's SDL, as committed (one trailing newline)."""
    return str(schema).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the SDL to the path given, or print it."""
    args = sys.argv[1:] if argv is None else argv
    text = render_sdl()
    if not args:
        sys.stdout.write(text)
        return 0
    path = Path(args[0])
    if path.exists() and path.read_text() == text:
        print(f"{path} is up to date")
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
