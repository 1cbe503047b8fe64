"""The committed JSON Schemas in contracts/schemas/ match the message Structs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shipwreck_contracts
from shipwreck_contracts import ALL_MESSAGES, Message, tag_of
from shipwreck_contracts.schemas import (
    message_schema,
    render_schemas,
    schema_drift,
    schema_filename,
    write_schemas,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"


class RequestDeployment(
    shipwreck_contracts.RequestDeployment,
    tag="deployment.request.v1",
    frozen=True,
    kw_only=True,
):
    # Same name, tag and docstring as the real message, one field more: exactly what an
    # engineer who edits the Struct and forgets to regenerate leaves behind.
    __doc__ = shipwreck_contracts.RequestDeployment.__doc__

    priority: int = 0


def _with_changed_request() -> tuple[type[Message], ...]:
    return tuple(
        RequestDeployment if cls is shipwreck_contracts.RequestDeployment else cls
        for cls in ALL_MESSAGES
    )


def test_committed_schemas_match_the_code() -> None:
    problems = schema_drift(SCHEMAS_DIR)
    assert problems == [], "\n".join(problems)


def test_drift_is_reported_when_a_struct_changes(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    problems = schema_drift(tmp_path, _with_changed_request())
    assert len(problems) == 1
    assert "deployment.request.v1.json is stale" in problems[0]
    assert "just schemas" in problems[0]


def test_a_changed_struct_renders_a_different_schema() -> None:
    changed = render_schemas([RequestDeployment])["deployment.request.v1.json"]
    original = render_schemas([shipwreck_contracts.RequestDeployment])["deployment.request.v1.json"]
    assert changed != original
    assert "priority" in changed


def test_drift_is_reported_for_a_missing_file(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "node.heartbeat.v1.json").unlink()
    problems = schema_drift(tmp_path)
    assert len(problems) == 1
    assert "node.heartbeat.v1.json is missing" in problems[0]
    assert "just schemas" in problems[0]


def test_drift_is_reported_for_a_file_no_message_renders(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "deployment.teleported.v1.json").write_text("{}\n")
    problems = schema_drift(tmp_path)
    assert len(problems) == 1
    assert "deployment.teleported.v1.json belongs to no message" in problems[0]


def test_drift_is_reported_for_a_hand_edited_file(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    path = tmp_path / "repo.changed.v1.json"
    path.write_text(path.read_text().replace('"commit"', '"commit_sha"'))
    assert schema_drift(tmp_path) == [
        f"{path} is stale: it differs from the message's Struct; run `just schemas`"
    ]


def test_write_schemas_fixes_every_kind_of_drift(tmp_path: Path) -> None:
    write_schemas(tmp_path, _with_changed_request())
    (tmp_path / "node.lost.v1.json").unlink()
    (tmp_path / "old.thing.v1.json").write_text("{}\n")
    changes = write_schemas(tmp_path)
    assert sorted(changes) == [
        "deleted old.thing.v1.json",
        "wrote deployment.request.v1.json",
        "wrote node.lost.v1.json",
    ]
    assert schema_drift(tmp_path) == []


def test_write_schemas_leaves_up_to_date_files_alone(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert write_schemas(tmp_path) == []


def test_there_is_one_schema_file_per_message() -> None:
    assert sorted(render_schemas()) == sorted(f"{tag_of(cls)}.json" for cls in ALL_MESSAGES)


def test_schema_text_is_sorted_indented_and_ends_with_a_newline() -> None:
    for text in render_schemas().values():
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=tag_of)
def test_schema_requires_the_message_tag(cls: type[Message]) -> None:
    schema = message_schema(cls)
    definition = schema["$defs"][cls.__name__]
    assert schema["$ref"] == f"#/$defs/{cls.__name__}"
    assert definition["properties"]["type"] == {"enum": [tag_of(cls)]}
    assert "type" in definition["required"]


def test_schema_filename_is_the_tag() -> None:
    assert schema_filename(shipwreck_contracts.NodeLost) == "node.lost.v1.json"


def test_two_messages_with_one_tag_cannot_be_rendered() -> None:
    with pytest.raises(ValueError, match=r"deployment\.request\.v1\.json"):
        render_schemas([shipwreck_contracts.RequestDeployment, RequestDeployment])
