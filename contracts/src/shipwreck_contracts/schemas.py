"""JSON Schemas of the integration messages, generated from the Structs.

One self-contained schema file per message, named after its tag
(``deployment.requested.v1.json``), written to ``contracts/schemas/`` by
``contracts/generate_schemas.py`` (``just schemas``) and compared with the code by a test.
Non-Python consumers read these files; reviewers see every contract change as a diff.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec

from .base import Message, tag_of
from .catalog import ALL_MESSAGES

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
REGENERATE_COMMAND: Final = "just schemas"
GENERATED_NOTICE: Final = (
    "Generated from shipwreck_contracts by contracts/generate_schemas.py; "
    f"do not edit, run `{REGENERATE_COMMAND}`."
)


def schema_filename(message: type[Message]) -> str:
    """Return the file name of a message's schema: its tag plus ``.json``."""
    return f"{tag_of(message)}.json"


def message_schema(message: type[Message]) -> dict[str, Any]:
    """Return the JSON Schema of one message class, with its own ``$defs``."""
    # One call per message keeps each file self-contained: the components returned are only
    # those reachable from this message.
    (root,), components = msgspec.json.schema_components([message])
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$comment": GENERATED_NOTICE,
        **root,
        "$defs": _clean_descriptions(components),
    }


def render_schemas(messages: Iterable[type[Message]] = ALL_MESSAGES) -> dict[str, str]:
    """Return the text of every schema file, by file name.

    The text is stable: sorted keys, two-space indentation, a trailing newline.
    """
    rendered: dict[str, str] = {}
    for message in messages:
        filename = schema_filename(message)
        if filename in rendered:
            raise ValueError(f"two messages share the tag of {filename!r}")
        text = json.dumps(message_schema(message), indent=2, sort_keys=True, ensure_ascii=False)
        rendered[filename] = text + "\n"
    return rendered


def write_schemas(
    directory: str | Path, messages: Iterable[type[Message]] = ALL_MESSAGES
) -> list[str]:
    """Make ``directory`` hold exactly the rendered schemas; return what changed.

    Files whose text is already right are left alone; ``*.json`` files no message renders
    any more are deleted. The result names each written or deleted file.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas(messages)
    changed: list[str] = []
    for filename, text in rendered.items():
        path = target / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            changed.append(f"wrote {filename}")
    for path in sorted(target.glob("*.json")):
        if path.name not in rendered:
            path.unlink()
            changed.append(f"deleted {path.name}")
    return changed


def schema_drift(
    directory: str | Path, messages: Iterable[type[Message]] = ALL_MESSAGES
) -> list[str]:
    """Compare the schema files in ``directory`` with the code; return one line per problem.

    An empty list means the files are up to date. Each problem names the file and the
    command that fixes it.
    """
    target = Path(directory)
    rendered = render_schemas(messages)
    on_disk = {path.name for path in target.glob("*.json")} if target.is_dir() else set()
    problems: list[str] = []
    for filename, text in sorted(rendered.items()):
        path = target / filename
        if filename not in on_disk:
            problems.append(f"{path} is missing; run `{REGENERATE_COMMAND}`")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(
                f"{path} is stale: it differs from the message's Struct; run `{REGENERATE_COMMAND}`"
            )
    for filename in sorted(on_disk - rendered.keys()):
        problems.append(
            f"{target / filename} belongs to no message; delete it or run `{REGENERATE_COMMAND}`"
        )
    return problems


def _clean_descriptions(node: Any) -> Any:
    # msgspec copies docstrings verbatim. Python 3.13 dedents docstrings at compile time and
    # 3.11 does not, so without cleandoc the files would change with the interpreter.
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node
