"""Mutations check before they publish: a refused or unknown target publishes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from shipwreck_api.commands import Actions
from shipwreck_api.errors import NotFound, Refused
from shipwreck_api.live import Live
from shipwreck_contracts import (
    ORCHESTRATOR_ORIGIN,
    CancelDeployment,
    DeploymentStatus,
    Message,
    ReplayFinished,
    RequestDeployment,
    RollbackApp,
    SetAppWatch,
    StopApp,
    Trigger,
)
from shipwreck_messaging import ORIGIN_HEADER, POSITION_HEADER
from tests.unit.test_api_story import T0, Log, deployment, sha, story

pytestmark = pytest.mark.anyio
S = DeploymentStatus
FIXED_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")


class ListBus:
    """Collects commands instead of publishing them."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, command: Message) -> None:
        self.sent.append(command)


def _public(host: str) -> Sequence[str]:
    return ["93.184.216.34"]  # a public address, without asking DNS


def _actions(*, fed: bool = True) -> tuple[Actions, ListBus]:
    live = Live()
    if fed:
        for item in story().relayed:
            live.receive(item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position})
    # The read model is whole: the orchestrator's replay (of nothing, or of the story) ended.
    live.receive(ReplayFinished(origin=ORCHESTRATOR_ORIGIN, last_position=0, at=T0), {})
    bus = ListBus()
    actions = Actions(live, bus, resolve=_public, clock=lambda: T0, new_id=lambda: FIXED_ID)
    return actions, bus


async def test_deploy_publishes_one_request_and_answers_requested() -> None:
    actions, bus = _actions(fed=False)
    record = await actions.deploy(
        repo_url=" https://git.example.com/team/new.git ",
        branch="dev",
        watch=False,
        actor="admin",
    )
    assert bus.sent == [
        RequestDeployment(
            deployment_id=FIXED_ID,
            repo_url="https://git.example.com/team/new.git",
            branch="dev",
            watch=False,
            trigger=Trigger.MANUAL,
            actor="admin",
            requested_at=T0,
        )
    ]
    assert (record.id, record.status, record.app, record.branch) == (
        FIXED_ID,
        S.REQUESTED,
        None,
        "dev",
    )
    assert actions.live.model.deployment(FIXED_ID) == record


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "scheme 'file://' is not allowed"),
        ("/srv/repo", "is not a remote URL"),
        ("ext::sh%20-c%20id", "transport helper"),
        ("--upload-pack=evil", "starts with '-'"),
        ("https://user:secret@git.example.com/a/b.git", "carries credentials"),
        ("http://127.0.0.1/team/app.git", "scheme 'http://' is not allowed"),
        ("https://127.0.0.1/team/app.git", "loopback"),
        ("git://10.1.2.3/app.git", "private"),
    ],
)
async def test_a_refused_url_publishes_nothing_and_says_why(url: str, why: str) -> None:
    actions, bus = _actions(fed=False)
    with pytest.raises(Refused, match=why):
        await actions.deploy(repo_url=url, branch="main", watch=True, actor="admin")
    assert bus.sent == []
    assert actions.live.model.deployments() == []


async def test_private_remotes_are_accepted_when_allowed() -> None:
    actions, bus = _actions(fed=False)
    actions.allow_private = True
    await actions.deploy(repo_url="git://127.0.0.1/app.git", branch="main", watch=True, actor="a")
    assert len(bus.sent) == 1


@pytest.mark.parametrize("branch", ["", "-x", "a..b", "feature branch", "x.lock"])
async def test_a_refused_branch_publishes_nothing(branch: str) -> None:
    actions, bus = _actions(fed=False)
    with pytest.raises(Refused, match="branch"):
        await actions.deploy(
            repo_url="https://git.example.com/a/b.git", branch=branch, watch=True, actor="a"
        )
    assert bus.sent == []


async def test_redeploy_requests_the_apps_repo_and_branch() -> None:
    actions, bus = _actions()
    record = await actions.redeploy(app="hello", actor="admin")
    [command] = bus.sent
    assert isinstance(command, RequestDeployment)
    assert (command.app, command.repo_url, command.branch, command.watch) == (
        "hello",
        "https://git.example.com/team/hello.git",
        "main",
        True,
    )
    assert (record.app, record.status) == ("hello", S.REQUESTED)


async def test_unknown_targets_are_named_and_publish_nothing() -> None:
    actions, bus = _actions()
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match="no app named 'nope'"):
        await actions.redeploy(app="nope", actor="admin")
    with pytest.raises(NotFound, match="no app named 'nope'"):
        await actions.stop_app(app="nope", actor="admin")
    with pytest.raises(NotFound, match="no app named 'nope'"):
        await actions.rollback(app="nope", deployment_id=missing, actor="admin")
    with pytest.raises(NotFound, match=f"no deployment with id {missing}"):
        await actions.rollback(app="hello", deployment_id=missing, actor="admin")
    with pytest.raises(NotFound, match=f"no deployment with id {missing}"):
        await actions.cancel(deployment_id=missing, actor="admin")
    assert bus.sent == []


async def test_cancel_publishes_for_a_deployment_in_progress_only() -> None:
    actions, bus = _actions()
    d, relayed = deployment(Log(start=1000), app="slow")
    for item in relayed[:4]:  # up to CLONING
        actions.live.receive(
            item.message, {ORIGIN_HEADER: item.origin, POSITION_HEADER: item.position}
        )
    record = await actions.cancel(deployment_id=d, actor="admin")
    assert record.status is S.CLONING
    assert bus.sent == [CancelDeployment(deployment_id=d, actor="admin", requested_at=T0)]
    done = actions.live.model.deployments(app="hello")[0]  # the newest: ERRORED
    with pytest.raises(Refused, match="already ERRORED"):
        await actions.cancel(deployment_id=done.id, actor="admin")
    assert len(bus.sent) == 1


async def test_cancel_refuses_a_running_deployment_and_says_how_to_stop_it() -> None:
    actions, bus = _actions()
    running = next(r for r in actions.live.model.deployments() if r.status is S.RUNNING)
    with pytest.raises(Refused) as refused:
        await actions.cancel(deployment_id=running.id, actor="admin")
    assert str(refused.value) == (
        f"deployment {running.id} is already RUNNING; only a deployment that has not "
        "finished can be cancelled; stopApp stops a running app"
    )
    assert bus.sent == []


async def test_rollback_requests_the_earlier_commit_under_a_new_id() -> None:
    actions, bus = _actions()
    first = actions.live.model.deployments(app="hello")[-1]  # the oldest: SUPERSEDED
    record = await actions.rollback(app="hello", deployment_id=first.id, actor="admin")
    assert bus.sent == [
        RollbackApp(
            app="hello",
            deployment_id=first.id,
            new_deployment_id=FIXED_ID,
            actor="admin",
            requested_at=T0,
        )
    ]
    assert (record.id, record.trigger, record.commit, record.status) == (
        FIXED_ID,
        Trigger.ROLLBACK,
        sha(1),
        S.REQUESTED,
    )


async def test_rollback_refuses_another_apps_deployment_and_one_without_a_commit() -> None:
    actions, bus = _actions()
    others = actions.live.model.deployments(app="other")
    with pytest.raises(Refused, match="is not a deployment of app hello"):
        await actions.rollback(app="hello", deployment_id=others[-1].id, actor="admin")
    cancelled = next(r for r in others if r.status is S.CANCELLED)
    with pytest.raises(Refused, match="never resolved a commit"):
        await actions.rollback(app="other", deployment_id=cancelled.id, actor="admin")
    assert bus.sent == []


async def test_stop_and_watch_publish_their_commands_and_answer_the_app_as_it_will_be() -> None:
    actions, bus = _actions()
    stopped = await actions.stop_app(app="hello", actor="admin")
    assert stopped.current is None
    assert stopped.url is None
    unwatched = await actions.set_watch(app="hello", watching=False, actor="admin")
    assert unwatched.watching is False
    assert bus.sent == [
        StopApp(app="hello", actor="admin", requested_at=T0),
        SetAppWatch(app="hello", watching=False, actor="admin", requested_at=T0),
    ]
