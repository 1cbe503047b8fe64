"""Cancel a deployment while it clones, builds or starts, through the GraphQL API: it ends
CANCELLED, and nothing of it is left on its node: no git process, no build step, no
container, no image. Every service is its own process, on real RabbitMQ, PostgreSQL,
Docker and a git daemon on loopback; the module's tests share one platform.

What holds each deployment in its stage is what it deploys, never the platform:

- CLONING: the git daemon stalls the fetch of the repository (`GitServer.hold`);
- BUILDING: the app's npm ``preinstall`` script never ends;
- STARTING: the app listens, but answers its health check with 503.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest

from shipwreck_node.ports import LABEL_DEPLOYMENT
from tests.e2e.test_deploy_git_url import Api, node_settings, start_api, wait_for_nodes
from tests.support.gitdaemon import GitServer, app_files, serve_git
from tests.support.node_infra import remove_node_leftovers
from tests.support.platform import Platform, isolated_platform

pytestmark = [pytest.mark.infra, pytest.mark.docker, pytest.mark.slow]

T = TypeVar("T")
PATIENCE = 180.0  # seconds a stage may take to get under way on a loaded machine
SLOW_PACKAGE = '{"name": "slow", "version": "1.0.0", "scripts": {"preinstall": "sleep 600"}}\n'
STATUS = "status history { status message }"
LOGS = "logs { stream text }"


@dataclass
class Rig:
    api: Api
    git: GitServer
    platform: Platform
    engine: docker.DockerClient


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    engine = docker.from_env()
    root = tmp_path_factory.mktemp("cancel")
    with isolated_platform(root) as platform, serve_git(root / "git") as git:
        with platform.concurrently():
            platform.start("scheduler", "shipwreck_scheduler", "scheduler ready")
            platform.start("orchestrator", "shipwreck_orchestrator", "orchestrator ready")
            platform.start(
                "node",
                "shipwreck_node",
                "node ready",
                **node_settings(platform, "cancel-1"),
                # Only the cancel may end a deployment here, however slow the machine.
                SHIPWRECK_HEALTH_TIMEOUT_SECONDS="600",
            )
            api = start_api(platform)
        wait_for_nodes(api, 1)
        try:
            yield Rig(api, git, platform, engine)
        finally:
            api.client.close()
            platform.stop_all()
            for node_id in platform.node_ids:
                remove_node_leftovers(engine, node_id)
            engine.close()


def eventually(probe: Callable[[], T | None], what: str, within: float = PATIENCE) -> T:
    """Poll ``probe`` until it returns something; that."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {within:g} s")


def deployment(api: Api, deployment_id: str, fields: str) -> dict[str, Any]:
    data = api.gql(f"query($id: ID!) {{ deployment(id: $id) {{ {fields} }} }}", id=deployment_id)
    found: dict[str, Any] = data["deployment"]
    return found


def lines(api: Api, deployment_id: str, stream: str) -> list[str]:
    logs = deployment(api, deployment_id, LOGS)["logs"]
    return [str(line["text"]) for line in logs if line["stream"] == stream]


def build_step_container(api: Api, deployment_id: str) -> str | None:
    """The container the builder runs the npm install step in, once it runs."""
    build = lines(api, deployment_id, "BUILD")
    steps = [i for i, line in enumerate(build) if "npm install" in line and "RUN" in line]
    running = [line for line in build[steps[0] :] if "Running in" in line] if steps else []
    return running[0].split()[-1] if running else None


def processes_mentioning(text: str) -> list[str]:
    """Command lines of this machine's processes that contain ``text`` (a repository URL:
    only the node's git would name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # it ended meanwhile
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(cmdline.strip())
    return found


def containers_of(engine: docker.DockerClient, deployment_id: str) -> list[str]:
    label = f"{LABEL_DEPLOYMENT}={deployment_id}"
    return [c.name or "" for c in engine.containers.list(all=True, filters={"label": label})]


def images_of(engine: docker.DockerClient, app: str, deployment_id: str) -> list[str]:
    """Images labelled with the deployment, or tagged for it (its app and dependency stage)."""
    label = f"{LABEL_DEPLOYMENT}={deployment_id}"
    found = [str(image.id) for image in engine.images.list(filters={"label": label})]
    for tag in (f"shipwreck/app-{app}:{deployment_id}", f"shipwreck/deps-{app}:{deployment_id}"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            found.append(f"{tag} ({engine.images.get(tag).id})")
    return found


@pytest.mark.parametrize("stage", ["CLONING", "BUILDING", "STARTING"])
def test_a_deployment_cancelled_while_under_way_leaves_nothing_of_it(rig: Rig, stage: str) -> None:
    api, git, engine = rig.api, rig.git, rig.engine
    repo = f"cancel-{stage.lower()}-{uuid.uuid4().hex[:6]}"
    url = git.url(repo)
    if stage == "CLONING":
        git.publish_app(repo, "python-version")
        git.hold(repo)
    elif stage == "BUILDING":
        git.publish_app(repo, "node-hello", overrides={"package.json": SLOW_PACKAGE})
    else:
        source = app_files("python-version")["app.py"]
        assert isinstance(source, bytes)
        unhealthy = source.replace(
            b"self.send_response(200)",
            b"self.send_response(503 if self.path == '/health' else 200)",
        )
        assert unhealthy != source
        git.publish_app(repo, "python-version", overrides={"app.py": unhealthy})
    deployment_id = api.deploy(url)

    # Under way: the stage is reported, and what it runs can be seen on the machine.
    def under_way() -> str | None:
        if deployment(api, deployment_id, "status")["status"] != stage:
            return None
        if stage == "CLONING":
            fetching = processes_mentioning(url)
            return " | ".join(fetching) if git.held(repo) and fetching else None
        if stage == "BUILDING":
            return build_step_container(api, deployment_id)
        running = engine.containers.list(filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"})
        return running[0].name if running else None

    busy = eventually(under_way, f"{stage} under way")
    if stage == "BUILDING":
        assert engine.containers.get(busy).status == "running"

    cancelled = api.gql(
        "mutation($id: ID!) { cancelDeployment(id: $id) { id status } }", id=deployment_id
    )["cancelDeployment"]
    assert cancelled == {"id": deployment_id, "status": stage}

    def ended() -> dict[str, Any] | None:
        d = deployment(api, deployment_id, f"app {STATUS}")
        return d if d["status"] == "CANCELLED" else None

    d = eventually(ended, "CANCELLED", within=60)
    assert [h["status"] for h in d["history"]][-2:] == [stage, "CANCELLED"]
    assert d["history"][-1]["message"].startswith("cancelled by ")
    assert d["history"][-1]["message"].endswith(f" while {stage}")

    # The node's word that it dropped the work (its count is of what was left once the
    # work itself had cleaned up: the checks below look at the machine instead).
    def dropped() -> str | None:
        system = lines(api, deployment_id, "SYSTEM")
        return next((line for line in system if line.startswith("cancelled: ")), None)

    assert eventually(dropped, "word from the node", within=60).startswith(
        "cancelled: cancelled by "
    )

    assert containers_of(engine, deployment_id) == []
    assert images_of(engine, d["app"], deployment_id) == []
    assert processes_mentioning(url) == []
    if stage == "CLONING":
        git.release(repo)
    if stage == "BUILDING":
        # The daemon abandons the build when the node hangs up, and removes its step.
        with contextlib.suppress(docker.errors.NotFound):  # already gone
            engine.api.wait(busy, condition="removed", timeout=60)
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(busy)
    # Nothing of it came back to life: the last word stays the cancel's.
    final = deployment(api, deployment_id, STATUS)
    assert final["status"] == "CANCELLED"
    assert final["history"] == d["history"]
