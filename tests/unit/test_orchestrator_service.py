"""The orchestrator's decisions, on a real (SQLite) store, message by message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eventsourcing.persistence import Tracking

from shipwreck_contracts import (
    CancelDeployment,
    DeploymentRunning,
    DeploymentStatus,
    DeploymentSuperseded,
    NodeScore,
    PlacementDecided,
    PlacementFailed,
    RequestDeployment,
    RollbackApp,
    Stage,
    StageReported,
    StopApp,
    Trigger,
    WorkFailed,
    WorkSucceeded,
)
from shipwreck_eventstore import WRITER_AGGREGATE_CACHE, StoreConfig
from shipwreck_orchestrator.domain import App, Deployment, app_id
from shipwreck_orchestrator.service import Orchestrator, OrchestratorService, _expirer
from shipwreck_orchestrator.settings import OrchestratorSettings
from shipwreck_orchestrator.translate import translate

S = DeploymentStatus
NODE = uuid.uuid4()
SHA = "a" * 40
PUBLIC = ["140.82.112.3"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> Iterator[OrchestratorService]:
    app = Orchestrator(StoreConfig(state_dir=str(tmp_path)))
    yield OrchestratorService(app, OrchestratorSettings(), clock=clock, resolve=lambda host: PUBLIC)
    app.close()


def _request(
    url: str = "https://github.com/ethanshry/scapegoat", **kw: object
) -> RequestDeployment:
    fields: dict[str, object] = {
        "deployment_id": uuid.uuid4(),
        "repo_url": url,
        "actor": "admin",
        "requested_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
    }
    fields.update(kw)
    return RequestDeployment(**fields)  # type: ignore[arg-type]


def _deployment(service: OrchestratorService, deployment_id: uuid.UUID) -> Deployment:
    found = service.app.repository.get(deployment_id)
    assert isinstance(found, Deployment)
    return found


def _run_to(
    service: OrchestratorService,
    cmd: RequestDeployment,
    clock: Clock,
    node: uuid.UUID = NODE,
    commit: str = SHA,
) -> None:
    service.request_deployment(cmd, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=cmd.deployment_id,
            app="scapegoat",
            node_id=node,
            scores=[NodeScore(node_id=node, score=1.0)],
            decided_at=clock.now,
        ),
        None,
    )
    for stage in (Stage.CLONING, Stage.BUILDING, Stage.STARTING):
        service.stage_reported(
            StageReported(
                deployment_id=cmd.deployment_id,
                node_id=node,
                stage=stage,
                commit=commit,
                at=clock.now,
            ),
            None,
        )
    service.work_succeeded(
        WorkSucceeded(
            deployment_id=cmd.deployment_id,
            node_id=node,
            commit=commit,
            image="img",
            container_id="c1",
            url="http://127.0.0.1:1234/",
            at=clock.now,
        ),
        None,
    )


def _roll_back(service: OrchestratorService, to: uuid.UUID, clock: Clock) -> uuid.UUID:
    """Roll app scapegoat back to deployment ``to``; the rollback deployment's id."""
    back = uuid.uuid4()
    service.rollback(
        RollbackApp(
            app="scapegoat",
            deployment_id=to,
            new_deployment_id=back,
            actor="admin",
            requested_at=clock.now,
        ),
        None,
    )
    return back


def test_an_accepted_request_is_initialized_under_the_repository_name(
    service: OrchestratorService,
) -> None:
    cmd = _request()
    assert service.request_deployment(cmd, None)
    d = _deployment(service, cmd.deployment_id)
    assert (d.status, d.app, d.attempt) == (S.INITIALIZED, "scapegoat", 1)
    assert d.id in service.in_progress
    topics = [type(e).__qualname__ for e in service.app.events.get(d.id)]
    assert topics == [
        "Deployment.Requested",
        "Deployment.Initialized",
        "Deployment.PlacementRequested",
    ]


def test_a_redelivered_request_changes_nothing(service: OrchestratorService) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    service.request_deployment(cmd, None)
    assert len(list(service.app.events.get(cmd.deployment_id))) == 3


@pytest.mark.parametrize("url", ["file:///etc/passwd", "https://127.0.0.1/x", "--upload-pack=x"])
def test_a_refused_url_ends_errored_at_requested_with_the_reason(
    service: OrchestratorService, url: str
) -> None:
    cmd = _request(url)
    service.request_deployment(cmd, None)
    d = _deployment(service, cmd.deployment_id)
    assert d.status is S.ERRORED
    assert d.error
    assert "allowed" in d.error or "refused" in d.error
    assert d.id not in service.in_progress


def test_the_full_happy_path_reaches_running_and_activates_the_app(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    _run_to(service, cmd, clock)
    d = _deployment(service, cmd.deployment_id)
    assert (d.status, d.commit, d.url) == (S.RUNNING, SHA, "http://127.0.0.1:1234/")
    app = service.app.repository.get(app_id("scapegoat"))
    assert isinstance(app, App)
    assert app.current == cmd.deployment_id
    assert d.id not in service.in_progress


def test_a_second_running_deployment_supersedes_the_first(
    service: OrchestratorService, clock: Clock
) -> None:
    first, second = _request(), _request()
    _run_to(service, first, clock)
    _run_to(service, second, clock)
    assert _deployment(service, first.deployment_id).status is S.SUPERSEDED
    assert _deployment(service, second.deployment_id).status is S.RUNNING
    last = list(service.app.events.get(first.deployment_id))[-1]
    messages = translate(last)
    assert [type(getattr(m, "message", m)).__name__ for m in messages] == [
        "DeploymentSuperseded",
        "StopWork",
    ]


def test_a_takeover_announces_the_superseded_deployment_before_the_new_running_one(
    service: OrchestratorService, clock: Clock
) -> None:
    # Readers apply the announcements one at a time: a new RUNNING announced before the old
    # one's SUPERSEDED would show them two RUNNING deployments of the app in between.
    first, second = _request(), _request()
    _run_to(service, first, clock)
    _run_to(service, second, clock)
    running: set[uuid.UUID] = set()
    most = 0
    for notification in service.app.process_recorder.select_notifications(1, 1000):
        for outgoing in translate(service.app.mapper.to_domain_event(notification)):
            message = getattr(outgoing, "message", outgoing)
            if isinstance(message, DeploymentRunning):
                running.add(message.deployment_id)
            elif isinstance(message, DeploymentSuperseded):
                running.discard(message.deployment_id)
            most = max(most, len(running))
    assert running == {second.deployment_id}
    assert most == 1


def test_stale_reports_from_another_node_are_ignored(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=cmd.deployment_id, app="scapegoat", node_id=NODE, decided_at=clock.now
        ),
        None,
    )
    other = uuid.uuid4()
    assert (
        not service.stage_reported(
            StageReported(
                deployment_id=cmd.deployment_id, node_id=other, stage=Stage.CLONING, at=clock.now
            ),
            None,
        )
        or _deployment(service, cmd.deployment_id).status is S.SCHEDULED
    )
    assert _deployment(service, cmd.deployment_id).status is S.SCHEDULED


def test_a_node_failure_ends_errored_at_its_stage(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=cmd.deployment_id, app="scapegoat", node_id=NODE, decided_at=clock.now
        ),
        None,
    )
    service.stage_reported(
        StageReported(
            deployment_id=cmd.deployment_id, node_id=NODE, stage=Stage.CLONING, at=clock.now
        ),
        None,
    )
    service.work_failed(
        WorkFailed(
            deployment_id=cmd.deployment_id,
            node_id=NODE,
            stage=Stage.CLONING,
            reason="no Shipwreck.toml in repo@abc",
            at=clock.now,
        ),
        None,
    )
    d = _deployment(service, cmd.deployment_id)
    assert (d.status, d.error) == (S.ERRORED, "no Shipwreck.toml in repo@abc")
    errored = list(service.app.events.get(d.id))[-1]
    assert errored.stage is S.CLONING


def test_no_node_fits_ends_errored(service: OrchestratorService, clock: Clock) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    service.placement_failed(
        PlacementFailed(
            deployment_id=cmd.deployment_id,
            app="scapegoat",
            reason="no live node",
            decided_at=clock.now,
        ),
        None,
    )
    d = _deployment(service, cmd.deployment_id)
    assert d.status is S.ERRORED
    assert d.error == "no node can run it: no live node"


def test_cancel_ends_cancelled_and_tells_the_node(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=cmd.deployment_id, app="scapegoat", node_id=NODE, decided_at=clock.now
        ),
        None,
    )
    service.cancel(
        CancelDeployment(deployment_id=cmd.deployment_id, actor="admin", requested_at=clock.now),
        None,
    )
    assert _deployment(service, cmd.deployment_id).status is S.CANCELLED
    last = list(service.app.events.get(cmd.deployment_id))[-1]
    kinds = [type(getattr(m, "message", m)).__name__ for m in translate(last)]
    assert kinds == ["DeploymentCancelled", "CancelWork"]


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached-as-served"])
def test_stages_time_out_so_nothing_stays_in_progress(
    tmp_path: Path, clock: Clock, cached: bool
) -> None:
    # The service keeps its aggregates cached, and the sweep looks at the cached objects
    # themselves: what it finds must be what a read from the store finds.
    config = StoreConfig(state_dir=str(tmp_path), aggregate_cache=WRITER_AGGREGATE_CACHE * cached)
    app = Orchestrator(config)
    service = OrchestratorService(
        app, OrchestratorSettings(), clock=clock, resolve=lambda h: PUBLIC
    )
    cmd, later = _request(), _request()
    service.request_deployment(cmd, None)
    clock.now += timedelta(seconds=30)
    service.request_deployment(later, None)
    assert service.sweep() == []
    clock.now += timedelta(seconds=31)
    assert service.sweep() == [cmd.deployment_id]
    d = _deployment(service, cmd.deployment_id)
    assert d.status is S.ERRORED
    assert d.error
    assert "timed out" in d.error
    assert _deployment(service, later.deployment_id).status is S.INITIALIZED
    assert service.in_progress == {later.deployment_id}
    app.close()


def test_a_deployment_that_moved_on_after_the_sweep_looked_is_not_timed_out(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    seen = _deployment(service, cmd.deployment_id)
    clock.now += timedelta(seconds=61)
    # The sweep saw it INITIALIZED for too long; before its change is made, the placement
    # is recorded, which starts the next stage's clock.
    service.placement_decided(
        PlacementDecided(
            deployment_id=cmd.deployment_id, app="scapegoat", node_id=NODE, decided_at=clock.now
        ),
        None,
    )
    expire = _expirer(seen.status, seen.status_since, "timed out", clock.now)
    assert service._on_deployment(cmd.deployment_id, None, expire) is False
    assert _deployment(service, cmd.deployment_id).status is S.SCHEDULED
    assert service.in_progress == {cmd.deployment_id}
    assert service.sweep() == []


def test_in_progress_deployments_are_recovered_from_the_store(tmp_path: Path, clock: Clock) -> None:
    app = Orchestrator(StoreConfig(state_dir=str(tmp_path)))
    first = OrchestratorService(app, OrchestratorSettings(), clock=clock, resolve=lambda h: PUBLIC)
    done, pending = _request(), _request()
    _run_to(first, done, clock)
    first.request_deployment(pending, None)
    restarted = OrchestratorService(app, OrchestratorSettings(), clock=clock)
    assert restarted.recover_in_progress() == 1
    assert restarted.in_progress == {pending.deployment_id}
    app.close()


def test_stop_app_stops_its_current_deployment(service: OrchestratorService, clock: Clock) -> None:
    cmd = _request()
    _run_to(service, cmd, clock)
    service.stop_app(StopApp(app="scapegoat", actor="admin", requested_at=clock.now), None)
    assert _deployment(service, cmd.deployment_id).status is S.STOPPED


def test_a_redeploy_by_app_name_reuses_the_app(service: OrchestratorService, clock: Clock) -> None:
    first = _request()
    _run_to(service, first, clock)
    redeploy = _request(app="scapegoat")
    service.request_deployment(redeploy, None)
    assert _deployment(service, redeploy.deployment_id).app == "scapegoat"
    elsewhere = _request("https://github.com/other/repo", app="scapegoat")
    service.request_deployment(elsewhere, None)
    d = _deployment(service, elsewhere.deployment_id)
    assert d.status is S.ERRORED
    assert d.error
    assert d.error.startswith("app 'scapegoat' deploys https://github.com/ethanshry/scapegoat")


def test_another_repository_with_the_same_name_gets_a_distinct_app(
    service: OrchestratorService,
) -> None:
    a = _request("https://github.com/one/site")
    b = _request("https://github.com/two/site")
    service.request_deployment(a, None)
    service.request_deployment(b, None)
    assert _deployment(service, a.deployment_id).app == "site"
    assert _deployment(service, b.deployment_id).app == "site-2"


def test_tracked_messages_apply_once(service: OrchestratorService) -> None:
    cmd = _request()
    tracking = Tracking("api", 1)
    assert service.request_deployment(cmd, tracking) is True
    assert service.request_deployment(cmd, tracking) is False


def test_several_apps_can_deploy_one_branch_under_their_own_names(
    service: OrchestratorService,
) -> None:
    default, staging = _request(), _request(app="scapegoat-staging")
    service.request_deployment(default, None)
    service.request_deployment(staging, None)
    assert _deployment(service, staging.deployment_id).app == "scapegoat-staging"
    again = _request()
    service.request_deployment(again, None)
    assert _deployment(service, again.deployment_id).app == "scapegoat"


def test_a_new_commit_deploys_every_watching_app_once(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import RepoChanged, SetAppWatch, Trigger

    service.request_deployment(_request(), None)
    service.request_deployment(_request(app="scapegoat-b"), None)
    service.request_deployment(_request(app="scapegoat-c", watch=False), None)
    change = RepoChanged(
        repo_url="https://github.com/ethanshry/scapegoat",
        branch="main",
        commit="b" * 40,
        trigger=Trigger.WATCH,
        detected_at=clock.now,
    )
    service.repo_changed(change, None)
    service.repo_changed(change, None)  # the same commit again (poll and webhook): no-op
    watch = [d for d in service.in_progress if _deployment(service, d).trigger is Trigger.WATCH]
    assert sorted(_deployment(service, d).app or "" for d in watch) == ["scapegoat", "scapegoat-b"]
    assert all(_deployment(service, d).commit == "b" * 40 for d in watch)
    service.set_watch(
        SetAppWatch(app="scapegoat-b", watching=False, actor="admin", requested_at=clock.now), None
    )
    service.repo_changed(
        RepoChanged(
            repo_url="https://github.com/ethanshry/scapegoat",
            branch="main",
            commit="d" * 40,
            trigger=Trigger.WATCH,
            detected_at=clock.now,
        ),
        None,
    )
    latest = [d for d in service.in_progress if _deployment(service, d).commit == "d" * 40]
    assert [_deployment(service, d).app for d in latest] == ["scapegoat"]


def test_rollback_runs_an_earlier_build_again(service: OrchestratorService, clock: Clock) -> None:
    from shipwreck_contracts import DeployWork, Trigger

    first, second = _request(), _request()
    _run_to(service, first, clock)
    _run_to(service, second, clock)
    back = _roll_back(service, first.deployment_id, clock)
    d = _deployment(service, back)
    assert (d.status, d.trigger, d.commit, d.image) == (S.INITIALIZED, Trigger.ROLLBACK, SHA, "img")
    service.placement_decided(
        PlacementDecided(deployment_id=back, app="scapegoat", node_id=NODE, decided_at=clock.now),
        None,
    )
    scheduled = list(service.app.events.get(back))[-1]
    work = [getattr(m, "message", m) for m in translate(scheduled)]
    assert [w.image for w in work if isinstance(w, DeployWork)] == ["img"]


def test_a_rollback_names_the_commit_the_app_ran_until_then(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import DeploymentInitialized

    first, second = _request(), _request()
    _run_to(service, first, clock)
    _run_to(service, second, clock, commit="e" * 40)  # deployed by hand, a newer commit
    back = _roll_back(service, first.deployment_id, clock)
    (initialized,) = [
        m
        for e in service.app.events.get(back)
        for m in translate(e)
        if isinstance(m, DeploymentInitialized)
    ]
    assert (initialized.commit, initialized.rolled_back_from) == (SHA, "e" * 40)


def test_only_a_rollbacks_start_is_copied_to_the_watcher(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_eventstore.relay import outgoing
    from shipwreck_messaging.routes import ROLLBACK_INITIALIZED, WATCHER_APPS

    first, second = _request(), _request()
    _run_to(service, first, clock)
    _run_to(service, second, clock)
    back = _roll_back(service, first.deployment_id, clock)

    def copies(deployment_id: uuid.UUID) -> list[object]:
        return [
            routed.message
            for e in service.app.events.get(deployment_id)
            for routed in outgoing(translate(e))
            if routed.routing_key == ROLLBACK_INITIALIZED
        ]

    assert copies(first.deployment_id) == []
    (copy,) = copies(back)
    assert getattr(copy, "trigger", None) is Trigger.ROLLBACK
    assert ROLLBACK_INITIALIZED in WATCHER_APPS.tags


def test_a_new_commit_skips_the_apps_rolled_back_away_from_it(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import RepoChanged, Trigger

    service.request_deployment(_request(), None)
    service.request_deployment(_request(app="scapegoat-b"), None)
    service.repo_changed(
        RepoChanged(
            repo_url="https://github.com/ethanshry/scapegoat",
            branch="main",
            commit="f" * 40,
            trigger=Trigger.WATCH,
            detected_at=clock.now,
            held=["scapegoat"],
        ),
        None,
    )
    fresh = [d for d in service.in_progress if _deployment(service, d).commit == "f" * 40]
    assert [_deployment(service, d).app for d in fresh] == ["scapegoat-b"]


def test_rollback_to_a_deployment_that_never_ran_is_refused(
    service: OrchestratorService, clock: Clock
) -> None:

    pending = _request()
    service.request_deployment(pending, None)
    back = _roll_back(service, pending.deployment_id, clock)
    d = _deployment(service, back)
    assert d.status is S.ERRORED
    assert d.error
    assert "only a deployment that reached RUNNING can be rolled back to" in d.error


def test_a_commit_the_app_already_serves_is_not_deployed_again(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import RepoChanged, Trigger

    cmd = _request()
    _run_to(service, cmd, clock)  # serves SHA
    service.repo_changed(
        RepoChanged(
            repo_url=cmd.repo_url,
            branch="main",
            commit=SHA,
            trigger=Trigger.WEBHOOK,
            detected_at=clock.now,
        ),
        None,
    )
    assert service.in_progress == set()


def test_a_lost_node_gets_its_work_placed_again_avoiding_it(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import NodeLost, RequestPlacement

    running, building = _request(), _request("https://github.com/acme/other")
    _run_to(service, running, clock)
    service.request_deployment(building, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=building.deployment_id, app="other", node_id=NODE, decided_at=clock.now
        ),
        None,
    )
    elsewhere = _request("https://github.com/acme/third")
    service.request_deployment(elsewhere, None)
    service.placement_decided(
        PlacementDecided(
            deployment_id=elsewhere.deployment_id,
            app="third",
            node_id=uuid.uuid4(),
            decided_at=clock.now,
        ),
        None,
    )
    moved = service.node_lost(NodeLost(node_id=NODE, last_seen_at=clock.now, at=clock.now), None)
    # Only what was on the lost node moves (and is named).
    assert sorted(moved) == sorted([running.deployment_id, building.deployment_id])
    assert _deployment(service, elsewhere.deployment_id).status is S.SCHEDULED
    for deployment_id in moved:
        d = _deployment(service, deployment_id)
        assert (d.status, d.attempt, d.node_id) == (S.INITIALIZED, 2, None)
        last = list(service.app.events.get(deployment_id))[-1]
        placement = [m for m in translate(last) if isinstance(m, RequestPlacement)]
        assert [(p.attempt, p.avoid_node_ids) for p in placement] == [(2, [NODE])]
    # A late report of the abandoned attempt changes nothing (fencing).
    service.stage_reported(
        StageReported(
            deployment_id=building.deployment_id,
            node_id=NODE,
            attempt=1,
            stage=Stage.CLONING,
            at=clock.now,
        ),
        None,
    )
    assert _deployment(service, building.deployment_id).status is S.INITIALIZED


def test_a_cancel_that_arrives_after_the_deployment_finished_is_refused_and_recorded(
    service: OrchestratorService, clock: Clock
) -> None:
    from shipwreck_contracts import DeploymentCancelRefused

    cmd = _request()
    _run_to(service, cmd, clock)  # the cancel was accepted while it was starting: too late
    late = CancelDeployment(deployment_id=cmd.deployment_id, actor="alice", requested_at=clock.now)
    assert service.cancel(late, None) is True
    assert _deployment(service, cmd.deployment_id).status is S.RUNNING
    last = list(service.app.events.get(cmd.deployment_id))[-1]
    (refused,) = [getattr(m, "message", m) for m in translate(last)]
    assert isinstance(refused, DeploymentCancelRefused)
    assert (refused.status, refused.actor, refused.reason) == (
        S.RUNNING,
        "alice",
        "cancel by alice refused: the deployment was already RUNNING when it arrived",
    )


def test_cancelling_a_cancelled_deployment_records_nothing(
    service: OrchestratorService, clock: Clock
) -> None:
    cmd = _request()
    service.request_deployment(cmd, None)
    cancel = CancelDeployment(
        deployment_id=cmd.deployment_id, actor="admin", requested_at=clock.now
    )
    service.cancel(cancel, None)
    version = _deployment(service, cmd.deployment_id).version
    again = CancelDeployment(deployment_id=cmd.deployment_id, actor="bob", requested_at=clock.now)
    service.cancel(again, None)
    assert _deployment(service, cmd.deployment_id).version == version
