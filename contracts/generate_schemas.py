"""Regenerate contracts/schemas/ from the message Structs (``just schemas`` runs this)."""

from __future__ import annotations

from pathlib import Path

from shipwreck_contracts.schemas import write_schemas

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def main() -> None:
    """Write every message's JSON Schema into ``contracts/schemas/``; print what changed."""
    changes = write_schemas(SCHEMAS_DIR)
    for change in changes:
        print(change)
    print(f"{len(changes)} change(s) in {SCHEMAS_DIR}")


if __name__ == "__main__":
    main()
