"""contracts/schema.graphql is the api's schema, and it keeps every name DESIGN section 7 fixes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLSchema,
    Undefined,
    build_schema,
    is_non_null_type,
    print_ast,
)

from shipwreck_api.sdl import render_sdl
from shipwreck_contracts import DeploymentStatus

SDL_PATH = Path(__file__).resolve().parents[2] / "contracts" / "schema.graphql"
REGENERATE = (
    "run `just graphql-schema` (uv run python -m shipwreck_api.sdl contracts/schema.graphql)"
)

# DESIGN section 7, operation by operation: these signatures are the contract.
OPERATIONS = {
    "Query": {
        "deployment": "(id: ID!): Deployment",
        "deployments": "(app: String, first: Int = 50): [Deployment!]!",
        "app": "(name: String!): App",
        "apps": ": [App!]!",
        "nodes": ": [Node!]!",
    },
    "Mutation": {
        "deploy": "(input: DeployInput!): Deployment!",
        "redeploy": "(app: String!): Deployment!",
        "cancelDeployment": "(id: ID!): Deployment!",
        "rollback": "(app: String!, deploymentId: ID!): Deployment!",
        "stopApp": "(app: String!): App!",
    },
    "Subscription": {
        "deploymentUpdates": "(id: ID!): Deployment!",
        "deploymentLogs": "(id: ID!): LogLine!",
    },
}

FIELDS = {
    "Deployment": {
        "id",
        "app",
        "repoUrl",
        "branch",
        "commit",
        "status",
        "trigger",
        "node",
        "url",
        "error",
        "requestedAt",
        "history",
        "events",
    },
    "App": {"name", "repoUrl", "branch", "watching", "url", "current", "deployments"},
    "Node": {
        "id",
        "hostname",
        "status",
        "cpuCount",
        "memTotalMb",
        "memFreeMb",
        "loadAvg",
        "lastSeenAt",
        "deployments",
    },
    "LogLine": {"deploymentId", "stream", "sequence", "at", "text"},
}


@pytest.fixture(scope="module")
def committed() -> GraphQLSchema:
    return build_schema(SDL_PATH.read_text())


def _default(value: GraphQLArgument | GraphQLInputField) -> str | None:
    # The default exactly as the SDL spells it.
    node = value.ast_node
    if node is None or node.default_value is None:
        return None
    return print_ast(node.default_value)


def _signature(field: GraphQLField, only: Sequence[str] | None = None) -> str:
    args = []
    for name, arg in field.args.items():
        if only is not None and name not in only:
            continue
        default = _default(arg)
        args.append(f"{name}: {arg.type}" + (f" = {default}" if default else ""))
    return (f"({', '.join(args)})" if args else "") + f": {field.type}"


def _design_arguments(signature: str) -> list[str]:
    return re.findall(r"(\w+):", signature.partition(")")[0]) if signature[0] == "(" else []


def _object(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    found = schema.get_type(name)
    assert isinstance(found, GraphQLObjectType), f"{name} is missing from {SDL_PATH.name}"
    return found


def test_committed_sdl_matches_the_code() -> None:
    assert SDL_PATH.exists(), f"{SDL_PATH} is missing: {REGENERATE}"
    assert SDL_PATH.read_text() == render_sdl(), (
        f"{SDL_PATH} is stale: it differs from shipwreck_api.schema; {REGENERATE}"
    )


@pytest.mark.parametrize(
    ("type_name", "field_name"),
    [(t, f) for t, fields in OPERATIONS.items() for f in fields],
)
def test_operations_keep_their_design_signatures(
    committed: GraphQLSchema, type_name: str, field_name: str
) -> None:
    operation = _object(committed, type_name)
    assert field_name in operation.fields, f"{type_name}.{field_name} is missing"
    field = operation.fields[field_name]
    design = OPERATIONS[type_name][field_name]
    names = _design_arguments(design)
    # The design's arguments, in its order, with its types and defaults...
    assert list(field.args)[: len(names)] == names
    assert _signature(field, only=names) == design
    # ...and anything added since is optional, so every client of the design still works.
    for name, arg in field.args.items():
        if name not in names:
            assert not is_non_null_type(arg.type) or arg.default_value is not Undefined, (
                f"{type_name}.{field_name} added a required argument {name}"
            )


def test_an_added_required_argument_is_caught() -> None:
    changed = build_schema(
        render_sdl().replace("deploymentLogs(id: ID!", "deploymentLogs(id: ID!, tail: Int!")
    )
    logs = _object(changed, "Subscription").fields["deploymentLogs"]
    assert logs.args["tail"].default_value is Undefined
    assert is_non_null_type(logs.args["tail"].type)


def _missing(schema: GraphQLSchema, type_name: str) -> set[str]:
    return FIELDS[type_name] - set(_object(schema, type_name).fields)


@pytest.mark.parametrize("type_name", sorted(FIELDS))
def test_types_keep_their_design_fields(committed: GraphQLSchema, type_name: str) -> None:
    missing = _missing(committed, type_name)
    assert not missing, f"{type_name} lost {sorted(missing)}"


def test_deployment_history_and_events_have_their_design_fields(committed: GraphQLSchema) -> None:
    deployment = _object(committed, "Deployment")
    history = _object(committed, str(deployment.fields["history"].type).strip("[]!"))
    events = _object(committed, str(deployment.fields["events"].type).strip("[]!"))
    assert {"status", "at", "message"} <= set(history.fields)
    assert {"sequence", "type", "at", "data"} <= set(events.fields)
    assert str(events.fields["data"].type) == "String!", "event data is a JSON string"


def test_deploy_input_defaults_to_main_and_watching(committed: GraphQLSchema) -> None:
    deploy_input = committed.get_type("DeployInput")
    assert isinstance(deploy_input, GraphQLInputObjectType)
    assert str(deploy_input.fields["repoUrl"].type) == "String!"
    assert _default(deploy_input.fields["branch"]) == '"main"'
    assert _default(deploy_input.fields["watch"]) == "true"


def test_status_enum_has_the_twelve_lifecycle_statuses(committed: GraphQLSchema) -> None:
    deployment = _object(committed, "Deployment")
    status = committed.get_type(str(deployment.fields["status"].type).rstrip("!"))
    assert isinstance(status, GraphQLEnumType)
    assert list(status.values) == [s.value for s in DeploymentStatus]
    assert len(status.values) == 12


def test_a_renamed_design_field_is_caught() -> None:
    # What an engineer who renames a field in schema.py leaves behind, once regenerated.
    renamed = build_schema(render_sdl().replace("  repoUrl: String!", "  repositoryUrl: String!"))
    assert _missing(renamed, "Deployment") == {"repoUrl"}
    assert _missing(renamed, "App") == {"repoUrl"}
