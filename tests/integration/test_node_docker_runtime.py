"""The node's Docker adapter on a real Docker Engine: what it promises beyond the SDK."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import anyio
import docker
import docker.errors
import pytest

from shipwreck_node.dockerruntime import DockerRuntime
from shipwreck_node.ports import ContainerQuery

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

BASE_PYTHON = os.environ.get("SHIPWRECK_TEST_BASE_IMAGE_PYTHON", "shipwreck/base-python:bookworm")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


async def test_removals_side_by_side_each_return_once_the_container_is_gone(
    engine: docker.DockerClient,
) -> None:
    # Docker refuses a second removal of a container while one is under way (409): the
    # container is still there, and still runs, when the refusal comes back.
    runtime = DockerRuntime.from_env()
    container = engine.containers.run(
        BASE_PYTHON,
        ["sleep", "600"],
        name=f"shipwreck-test-remove-{uuid.uuid4().hex[:8]}",
        detach=True,
        init=True,
        labels={"org.shipwreck.test": "remove"},
    )
    container_id = container.id or ""
    left: list[bool] = []

    async def remove() -> None:
        await runtime.remove(container_id)
        left.append(await runtime.inspect(container_id) is not None)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(remove)
    finally:
        with contextlib.suppress(docker.errors.APIError):  # gone, or going
            container.remove(force=True)
    assert left == [False, False, False]


async def test_a_container_removed_while_the_look_up_runs_is_left_out(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nodes end deployments side by side: a container listed by one look-up may be gone
    # before that look-up reads it. Here the removal comes right after the listing.
    runtime = DockerRuntime.from_env()
    label = f"lookup-{uuid.uuid4().hex[:8]}"
    doomed, kept = (
        engine.containers.run(
            BASE_PYTHON,
            ["sleep", "600"],
            name=f"shipwreck-test-{label}-{n}",
            detach=True,
            init=True,
            labels={"org.shipwreck.test": label},
        )
        for n in range(2)
    )
    listing = docker.APIClient.containers

    def listing_then_removing(api: docker.APIClient, *args: object, **kwargs: object) -> object:
        listed = listing(api, *args, **kwargs)  # type: ignore[arg-type]
        with contextlib.suppress(docker.errors.NotFound):
            engine.api.remove_container(doomed.id, force=True)
        return listed

    monkeypatch.setattr(docker.APIClient, "containers", listing_then_removing)
    try:
        found = await runtime.find(ContainerQuery(labels={"org.shipwreck.test": label}))
    finally:
        monkeypatch.undo()
        for container in (doomed, kept):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    assert [c.id for c in found] == [kept.id]
