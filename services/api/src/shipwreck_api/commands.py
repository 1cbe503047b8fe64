"""What the mutations do: check the request, publish one command, show its expected result.

The api decides nothing about deployments (the orchestrator is the sole writer); it refuses
what is certainly wrong (a refused repository URL, an unknown app) before anything is
published, publishes the command with ``mandatory=True`` so that an unroutable command is
an error rather than a silent loss, and answers with the deployment as the read model will
show it once the orchestrator has recorded the request.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import anyio.to_thread
from aiormq.exceptions import AMQPError
from faststream.rabbit import RabbitBroker

from shipwreck_api.errors import NotFound, Refused, Unavailable
from shipwreck_api.live import Live, RebuildOutcome
from shipwreck_api.readmodel import AppRecord, DeploymentRecord, fold_deployment
from shipwreck_contracts import (
    CancelDeployment,
    DeploymentRequested,
    DeploymentStatus,
    Message,
    RequestDeployment,
    RollbackApp,
    SetAppWatch,
    StopApp,
    Trigger,
    tag_of,
)
from shipwreck_contracts.gitpolicy import (
    RefusedRemote,
    Resolver,
    check_branch,
    check_repo_url,
    resolve_host,
)
from shipwreck_messaging import PublishFailed, publish
from shipwreck_messaging.publishing import DISCONNECTED

log = logging.getLogger(__name__)


class CommandBus(Protocol):
    """Where commands go (RabbitMQ in the api; a list in some tests)."""

    async def send(self, command: Message) -> None:
        """Hand ``command`` over for delivery, or raise."""
        ...


class RabbitCommandBus:
    """Publishes commands on the events exchange, persistent, confirmed and mandatory.

    While RabbitMQ is unreachable (restarting, say) a command waits up to ``patience``
    seconds for the connection to come back before the mutation fails as UNAVAILABLE.
    Publishing again after a dropped connection cannot do harm: a deploy or rollback carries
    the id of the deployment it creates (recorded once), and cancel, stop and watch applied
    twice change nothing the second time.
    """

    def __init__(self, broker: RabbitBroker, *, patience: float = 10.0) -> None:
        self.broker = broker
        self.patience = patience

    async def send(self, command: Message) -> None:
        """Publish ``command``; raise :class:`Unavailable` if RabbitMQ did not take it."""
        try:
            await publish(self.broker, command, mandatory=True, patience=self.patience)
        except PublishFailed as e:
            raise Unavailable(f"the command was not delivered: {e}") from None
        except (AMQPError, *DISCONNECTED) as e:
            raise Unavailable(
                f"RabbitMQ is unreachable ({type(e).__name__}: {e}); nothing was requested: "
                "try again once it is back"
            ) from None


def _now() -> datetime:
    return datetime.now(UTC)


def expected_request(
    deployment_id: uuid.UUID,
    *,
    repo_url: str,
    branch: str,
    watch: bool,
    trigger: Trigger,
    actor: str,
    app: str | None,
    commit: str | None,
    at: datetime,
) -> DeploymentRecord:
    """The deployment as the read model will show it once its request is recorded."""
    requested = DeploymentRequested(
        deployment_id=deployment_id,
        app=app,
        repo_url=repo_url,
        branch=branch,
        watch=watch,
        trigger=trigger,
        actor=actor,
        commit=commit,
        at=at,
    )
    # Folded by the same code as real events, so the answer cannot drift from what the read
    # model will show; no event has been recorded yet, hence no events (sequence 0).
    record = fold_deployment(deployment_id, [(("", 0, tag_of(requested)), requested)])
    assert record is not None  # a DeploymentRequested always folds to a record
    return replace(record, events=(), sequence=0)


@dataclass
class Actions:
    """The mutations' logic, over the read model and a command bus."""

    live: Live
    bus: CommandBus
    allow_private: bool = False
    resolve: Resolver = resolve_host
    clock: Callable[[], datetime] = _now
    new_id: Callable[[], uuid.UUID] = field(default=uuid.uuid4)
    request_replay: Callable[[], Awaitable[None]] | None = None
    """Publishes one replay request to this process's queue (None: this api cannot)."""
    rebuild_timeout: float = 60.0

    async def deploy(
        self, *, repo_url: str, branch: str, watch: bool, actor: str
    ) -> DeploymentRecord:
        """Request a deployment of ``repo_url``/``branch`` (a new app or a known one)."""
        check = functools.partial(
            check_repo_url, repo_url, allow_private=self.allow_private, resolve=self.resolve
        )
        try:
            check_branch(branch)
            # The policy resolves the host name (DNS): blocking, so off the event loop.
            remote = await anyio.to_thread.run_sync(check)
        except RefusedRemote as e:
            raise Refused(str(e)) from None
        command = RequestDeployment(
            deployment_id=self.new_id(),
            repo_url=remote.url,
            branch=branch,
            watch=watch,
            trigger=Trigger.MANUAL,
            actor=actor,
            requested_at=self.clock(),
        )
        return await self._request(command)

    async def redeploy(self, *, app: str, actor: str) -> DeploymentRecord:
        """Deploy the head of a known app's branch again."""
        known = await self._app(app)
        command = RequestDeployment(
            deployment_id=self.new_id(),
            repo_url=known.repo_url,
            branch=known.branch,
            watch=known.watching,
            trigger=Trigger.MANUAL,
            actor=actor,
            app=known.name,
            requested_at=self.clock(),
        )
        return await self._request(command)

    async def cancel(self, *, deployment_id: uuid.UUID, actor: str) -> DeploymentRecord:
        """Ask for a deployment in progress to be cancelled; returns it as it is now."""
        record = await self.deployment(deployment_id)
        # A RUNNING deployment has finished deploying: the orchestrator would ignore the
        # cancel, and the client would never learn why nothing happened.
        if record.status.is_terminal or record.status is DeploymentStatus.RUNNING:
            hint = "; stopApp stops a running app" if not record.status.is_terminal else ""
            raise Refused(
                f"deployment {deployment_id} is already {record.status.value}; "
                f"only a deployment that has not finished can be cancelled{hint}"
            )
        await self.bus.send(
            CancelDeployment(deployment_id=deployment_id, actor=actor, requested_at=self.clock())
        )
        log.info("%s asked to cancel deployment %s", actor, deployment_id)
        return record

    async def rollback(self, *, app: str, deployment_id: uuid.UUID, actor: str) -> DeploymentRecord:
        """Deploy again the commit an earlier deployment of ``app`` ran."""
        known = await self._app(app)
        target = await self.deployment(deployment_id)
        if target.app != known.name:
            raise Refused(f"deployment {deployment_id} is not a deployment of app {app}")
        if target.commit is None:
            raise Refused(
                f"deployment {deployment_id} never resolved a commit; nothing to roll back to"
            )
        now = self.clock()
        new_id = self.new_id()
        await self.bus.send(
            RollbackApp(
                app=known.name,
                deployment_id=deployment_id,
                new_deployment_id=new_id,
                actor=actor,
                requested_at=now,
            )
        )
        record = expected_request(
            new_id,
            repo_url=target.repo_url,
            branch=target.branch,
            watch=known.watching,
            trigger=Trigger.ROLLBACK,
            actor=actor,
            app=known.name,
            commit=target.commit,
            at=now,
        )
        self.live.expect(record)
        log.info("%s asked to roll %s back to %s as %s", actor, app, deployment_id, new_id)
        return record

    async def stop_app(self, *, app: str, actor: str) -> AppRecord:
        """Stop the app; returns it as it will be once stopped (nothing current)."""
        known = await self._app(app)
        await self.bus.send(StopApp(app=known.name, actor=actor, requested_at=self.clock()))
        log.info("%s asked to stop app %s", actor, app)
        return replace(known, current=None)

    async def set_watch(self, *, app: str, watching: bool, actor: str) -> AppRecord:
        """Turn redeploy-on-new-commit on or off; returns the app as it will be."""
        known = await self._app(app)
        await self.bus.send(
            SetAppWatch(app=known.name, watching=watching, actor=actor, requested_at=self.clock())
        )
        log.info("%s asked to %s app %s", actor, "watch" if watching else "unwatch", app)
        return replace(known, watching=watching)

    async def rebuild(self, *, actor: str) -> RebuildOutcome:
        """Drop the read model and rebuild it from a replay of the orchestrator's log."""
        if self.request_replay is None:
            raise Unavailable("this api process has no queue to receive a replay on")
        log.info("%s asked to rebuild the read model", actor)
        try:
            return await self.live.rebuild(self.request_replay, wait=self.rebuild_timeout)
        except PublishFailed as e:
            raise Unavailable(f"the replay request was not delivered: {e}") from None
        except (AMQPError, ConnectionError, OSError) as e:
            raise Unavailable(f"the replay request was not delivered: RabbitMQ: {e}") from None

    # -- helpers --------------------------------------------------------------------------------

    async def deployment(self, deployment_id: uuid.UUID) -> DeploymentRecord:
        """A known deployment, or :class:`NotFound` naming the id (once the read model is
        whole: a command decided on a model still rebuilding could be wrong)."""
        record = (await self.live.ready()).deployment(deployment_id)
        if record is None:
            raise NotFound(f"no deployment with id {deployment_id}")
        return record

    async def _app(self, name: str) -> AppRecord:
        record = (await self.live.ready()).app(name)
        if record is None:
            raise NotFound(f"no app named {name!r}")
        return record

    async def _request(self, command: RequestDeployment) -> DeploymentRecord:
        await self.bus.send(command)
        record = expected_request(
            command.deployment_id,
            repo_url=command.repo_url,
            branch=command.branch,
            watch=command.watch,
            trigger=command.trigger,
            actor=command.actor,
            app=command.app,
            commit=command.commit,
            at=command.requested_at,
        )
        self.live.expect(record)
        log.info(
            "%s requested deployment %s of %s (%s)",
            command.actor,
            command.deployment_id,
            command.repo_url,
            command.branch,
        )
        return record
