"""The node's work in flight: one asyncio task per deployment, and the apps' output.

The work queue is consumed one message at a time, so a handler must never wait for a
deployment: it starts a task and returns, and the next message (a CancelWork for that very
deployment, say) is handled at once. Cancelling the task kills what it runs (git, the build,
the test container) and removes what it created.

Once an app container runs, its stdout and stderr are followed until it stops, as
``LogLine`` messages numbered after the build's lines.

Stopping a deployment (StopWork: superseded, or its app stopped) first takes the app's
route away from it, only if the route still points there, then gives the requests it is
serving ``drain_seconds`` to finish, then stops its container.

A `NodeAssignment` (the node started, or came back after it was declared lost) is
reconciled with what runs here (``reconcile.reconcile``): what is missing is started again,
strays are removed, the apps kept are followed again. Work of an older attempt than the one
at hand is never started: a DeployWork for a newer attempt replaces it, and one for an
attempt abandoned here is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import anyio

from shipwreck_contracts import (
    CancelWork,
    DeployWork,
    LogStream,
    NodeAssignment,
    NodeWork,
    StopWork,
    WorkFailed,
    WorkLost,
)
from shipwreck_node.logcursor import Cursor, LogCursors
from shipwreck_node.logsink import Clock, DeploymentLog, Reserve, Send, utc_now
from shipwreck_node.pipeline import Outcome, Pipeline
from shipwreck_node.ports import (
    LABEL_DEPLOYMENT,
    LABEL_NODE,
    LABEL_ROLE,
    ROLE_APP,
    ROLE_TEST,
    ContainerInfo,
    ContainerQuery,
    ContainerRuntime,
    ProxyError,
    RuntimeFailure,
)
from shipwreck_node.reconcile import (
    Abandon,
    Action,
    Actual,
    Keep,
    Remove,
    Resume,
    Revive,
    deploy_work,
    reconcile,
)
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings

T = TypeVar("T")


class WorkRunner:
    """Dispatches `NodeWork` and keeps track of what runs on this node."""

    def __init__(
        self,
        settings: NodeSettings,
        pipeline: Pipeline,
        runtime: ContainerRuntime,
        send: Send,
        *,
        routes: Routes,
        clock: Clock = utc_now,
        logger: logging.Logger | None = None,
        cursors: LogCursors | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.runtime = runtime
        self.send = send
        self.routes = routes
        self.clock = clock
        self.log = logger or logging.getLogger("shipwreck.node")
        self.cursors = cursors or LogCursors(settings.log_cursor_dir)
        self._deploying: dict[uuid.UUID, asyncio.Task[Outcome]] = {}
        self._reviving: dict[uuid.UUID, asyncio.Task[WorkLost | None]] = {}
        # The attempt of the work in hand for each deployment (deploying or reviving).
        self._attempts: dict[uuid.UUID, int] = {}
        # (deployment, attempt) whose work ended in this process: its report is on its way,
        # and an assignment written before the orchestrator read it must not run it again.
        self._finished: set[tuple[uuid.UUID, int]] = set()
        self._followers: dict[uuid.UUID, asyncio.Task[None]] = {}
        # When a deployment's output stopped being followed (its container stopped).
        self._followed_until: dict[uuid.UUID, datetime] = {}
        self._logs: dict[uuid.UUID, DeploymentLog] = {}
        # Cancelled or stopped here: a late or redelivered DeployWork must not revive them.
        self._ended: set[uuid.UUID] = set()
        # Abandoned here (no longer assigned): work of that attempt or an older one is stale.
        self._abandoned: dict[uuid.UUID, int] = {}
        self._chores: set[asyncio.Task[None]] = set()

    # --- dispatch ------------------------------------------------------------------------

    async def handle(self, work: NodeWork) -> None:
        """Start handling one work message; returns without waiting for the work."""
        if isinstance(work, DeployWork):
            self.deploy(work)
        elif isinstance(work, CancelWork):
            self.cancel(work)
        elif isinstance(work, StopWork):
            self.stop(work)
        else:
            await self.reconcile(work)

    def deploy(self, work: DeployWork) -> None:
        """Start deploying ``work`` unless it is already under way or was ended here.

        Work of an older attempt in hand is cancelled first (its node was lost meanwhile,
        and the deployment came back here): the newer attempt replaces it.
        """
        may, previous = self._take_over(work)
        if not may:
            return
        deployment = work.deployment_id
        log = self._log_for(deployment, work.attempt)
        task = asyncio.create_task(
            _after(previous, lambda: self.pipeline.deploy(work, log, on_started=self._follow)),
            name=f"deploy-{deployment}",
        )
        self._deploying[deployment] = task
        self._attempts[deployment] = work.attempt
        task.add_done_callback(lambda t: self._deployed(deployment, t))

    def revive(self, work: DeployWork) -> None:
        """Start a RUNNING deployment's container again from ``work.image`` (see
        `Pipeline.revive`), unless work for it is under way or it was ended here."""
        may, previous = self._take_over(work)
        if not may:
            return
        deployment = work.deployment_id
        log = self._log_for(deployment, work.attempt)
        task = asyncio.create_task(
            _after(previous, lambda: self.pipeline.revive(work, log, on_started=self._follow)),
            name=f"revive-{deployment}",
        )
        self._reviving[deployment] = task
        self._attempts[deployment] = work.attempt
        task.add_done_callback(lambda t: self._revived(deployment, work.attempt, t))

    async def reconcile(self, assignment: NodeAssignment) -> list[Action]:
        """Bring what runs here in line with the node's assignment; the actions taken.

        Decided before this returns (so the next work message finds the decision made),
        carried out in the background like any other work.
        """
        node = self.settings.node_id
        if assignment.node_id != node:
            self.log.warning("ignoring the assignment of node %s", assignment.node_id)
            return []
        containers = await self.runtime.find(ContainerQuery(labels={LABEL_NODE: str(node)}))
        actual = Actual(
            containers=containers,
            in_flight={d: self._attempts[d] for d in self._in_flight()},
            finished=frozenset(self._finished),
        )
        actions = reconcile(assignment.deployments, actual)
        self.log.info(
            "assignment (%s): %d deployments; %s",
            assignment.reason or "no reason given",
            len(assignment.deployments),
            ", ".join(_describe(a) for a in actions) or "nothing to do",
        )
        for action in actions:
            self._apply(action)
        listed = {a.deployment_id for a in assignment.deployments}
        for deployment_id in self.cursors.known() - listed - set(self._in_flight()):
            self._chore(self.cursors.drop(deployment_id))
        return actions

    def cancel(self, work: CancelWork) -> None:
        """Abandon a deployment in progress: kill its work, remove its containers.

        Should it have taken its app's route already (the cancel crossed its success
        report), the route goes back to the container that served before it.
        """
        self._ended.add(work.deployment_id)
        task = self._interrupt(work.deployment_id)
        reason = f"cancelled: {work.reason}" if work.reason else "cancelled"
        self._chore(
            self._end(
                work.deployment_id, work.attempt, task, reason, stop_timeout=0, hand_over=True
            )
        )

    def stop(self, work: StopWork) -> None:
        """Stop and remove a deployment's container (superseded, or its app stopped)."""
        self._ended.add(work.deployment_id)
        task = self._interrupt(work.deployment_id)
        reason = f"stopped: {work.reason}" if work.reason else "stopped"
        log = self._logs.get(work.deployment_id)
        cursor = self.cursors.latest(work.deployment_id)
        attempt = log.attempt if log is not None else cursor.attempt if cursor else 1
        self._chore(
            self._end(
                work.deployment_id,
                attempt,
                task,
                reason,
                stop_timeout=self.settings.stop_timeout_seconds,
                hand_over=False,
            )
        )

    # --- what runs here ------------------------------------------------------------------

    async def running(self) -> list[uuid.UUID]:
        """Deployments in progress on this node, and those whose app container runs."""
        ids = set(self._in_flight())
        query = ContainerQuery(
            labels={LABEL_NODE: str(self.settings.node_id), LABEL_ROLE: ROLE_APP},
            running_only=True,
        )
        try:
            containers = await self.runtime.find(query)
        except RuntimeFailure as e:
            self.log.warning("cannot list this node's containers: %s", e)
            containers = []
        ids.update(c.deployment_id for c in containers if c.deployment_id is not None)
        return sorted(ids)

    async def wait(self, deployment_id: uuid.UUID) -> Outcome | None:
        """Wait for the deployment's work in progress (if any) to end; how it ended."""
        task = self._deploying.get(deployment_id)
        if task is None:
            return None
        await asyncio.wait([task])
        return None if task.cancelled() else task.result()

    async def wait_idle(self) -> None:
        """Wait until no deployment, revival, cancellation or stop is in progress."""
        while pending := [
            t
            for t in (*self._deploying.values(), *self._reviving.values(), *self._chores)
            if not t.done()
        ]:
            await asyncio.wait(pending)

    async def recover(self) -> None:
        """After a (re)start: remove what an interrupted run of this node left behind, and
        route the apps that still run here again (the proxy may have restarted too).

        Test containers, app containers that no longer run and those that never passed
        their health check belong to work that died with the previous process; app
        containers that run healthy keep serving.
        """
        await anyio.to_thread.run_sync(self.cursors.load)
        node = {LABEL_NODE: str(self.settings.node_id)}
        for container in await self.runtime.find(ContainerQuery(labels=node)):
            role = container.labels.get(LABEL_ROLE)
            if role == ROLE_TEST or not container.running or not container.kept_running:
                self.log.info("removing leftover container %s", container.name)
                await self.runtime.remove(container.id)
        await self.routes.restore()

    async def close(self) -> None:
        """Cancel everything in progress (each removes what it created) and wait for it;
        then note how far each log got, for the next start of the node."""
        # Before the followers stop: output written after this is followed again next
        # time (it may show twice; none of it is lost).
        until = self.clock()
        following = {d for d, task in self._followers.items() if not task.done()}
        tasks = [
            *self._deploying.values(),
            *self._reviving.values(),
            *self._followers.values(),
            *self._chores,
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for deployment_id, log in self._logs.items():
            followed = until if deployment_id in following else None
            cursor = Cursor(
                attempt=log.attempt,
                sequence=log.sequence,
                followed_until=followed or self._followed_until.get(deployment_id, until),
            )
            try:
                await self.cursors.save(deployment_id, cursor)
            except OSError as e:
                self.log.warning("cannot note how far the log of %s got: %s", deployment_id, e)

    # --- internals -----------------------------------------------------------------------

    def _in_flight(self) -> list[uuid.UUID]:
        """Deployments whose work (a deployment or a revival) is under way here."""
        tasks: list[tuple[uuid.UUID, asyncio.Task[Any]]] = [
            *self._deploying.items(),
            *self._reviving.items(),
        ]
        return sorted({d for d, task in tasks if not task.done()})

    def _take_over(self, work: DeployWork) -> tuple[bool, asyncio.Task[Any] | None]:
        """Whether ``work`` may start, and the work of an older attempt it replaces (now
        cancelled: to be waited for before it starts)."""
        deployment = work.deployment_id
        if deployment in self._ended:
            self.log.info("ignoring work for %s: it was cancelled or stopped", deployment)
            return False, None
        if work.attempt <= self._abandoned.get(deployment, 0):
            self.log.info("ignoring attempt %d of %s: abandoned", work.attempt, deployment)
            return False, None
        if deployment not in self._in_flight():
            return True, None
        if self._attempts[deployment] >= work.attempt:
            self.log.info("deployment %s is already in progress", deployment)
            return False, None
        self.log.info("attempt %d of %s replaces the work in hand", work.attempt, deployment)
        return True, self._interrupt(deployment)

    def _log_for(self, deployment_id: uuid.UUID, attempt: int) -> DeploymentLog:
        """The deployment attempt's log, numbered on from where it got (even before a
        restart of the node)."""
        log = self._logs.get(deployment_id)
        if log is None or log.attempt != attempt:
            cursor = self.cursors.get(deployment_id, attempt)
            log = self._logs[deployment_id] = DeploymentLog(
                self.send,
                deployment_id,
                attempt,
                clock=self.clock,
                after=cursor.sequence if cursor is not None else 0,
                reserve=self._reserver(deployment_id, attempt),
            )
        return log

    def _reserver(self, deployment_id: uuid.UUID, attempt: int) -> Reserve:
        async def reserve(sequence: int) -> None:
            cursor = Cursor(attempt=attempt, sequence=sequence, followed_until=self.clock())
            try:
                await self.cursors.save(deployment_id, cursor)
            except OSError as e:
                # Lines matter more than their numbering across a restart.
                self.log.warning("cannot note how far the log of %s got: %s", deployment_id, e)

        return reserve

    def _apply(self, action: Action) -> None:
        node = self.settings.node_id
        match action:
            case Keep(assigned=assigned, container=container):
                self._chore(self._keep(assigned.deployment_id, assigned.attempt, container))
            case Revive(assigned=assigned):
                self.revive(deploy_work(assigned, node))
            case Resume(assigned=assigned):
                self.deploy(deploy_work(assigned, node))
            case Abandon(deployment_id=deployment_id, attempt=attempt):
                self._abandoned[deployment_id] = max(attempt, self._abandoned.get(deployment_id, 0))
                task = self._interrupt(deployment_id)
                reason = "abandoned: no longer assigned to this node"
                self._chore(
                    self._end(deployment_id, attempt, task, reason, stop_timeout=0, hand_over=True)
                )
            case Remove(container=container):
                self._chore(self._remove_stray(container))

    async def _keep(self, deployment_id: uuid.UUID, attempt: int, container: ContainerInfo) -> None:
        """A container kept by an assignment: its route, and its output followed again."""
        try:
            await self.routes.claim(container)
        except ProxyError as e:
            self.log.error("cannot route %s: %s", container.name, e)
        current = self._followers.get(deployment_id)
        if current is not None and not current.done():
            return
        # From where following stopped: in this process, or (from the cursor) in the one
        # before; with neither, nothing says what was sent: only what comes from now on.
        cursor = self.cursors.get(deployment_id, attempt)
        since = self._followed_until.get(deployment_id) or (
            cursor.followed_until if cursor is not None else None
        )
        log = self._log_for(deployment_id, attempt)
        self._start_following(deployment_id, container, log, since=since or self.clock())

    async def _remove_stray(self, container: ContainerInfo) -> None:
        """Remove a container no assignment accounts for (its route first, if it has it)."""
        await self._unroute([container], hand_over=True)
        await self.runtime.remove(container.id, stop_timeout=self.settings.stop_timeout_seconds)
        self.log.info("removed %s: not assigned to this node", container.name)

    def _interrupt(self, deployment_id: uuid.UUID) -> asyncio.Task[Any] | None:
        for tasks in (self._deploying, self._reviving):
            task = tasks.get(deployment_id)
            if task is not None and not task.done():
                task.cancel()
                return task
        return None

    async def _end(
        self,
        deployment_id: uuid.UUID,
        attempt: int,
        task: asyncio.Task[Any] | None,
        reason: str,
        *,
        stop_timeout: float,
        hand_over: bool,
    ) -> None:
        if task is not None:
            # The pipeline removes what it created when it is cancelled; let it finish.
            await asyncio.wait([task])
        labels = {LABEL_DEPLOYMENT: str(deployment_id), LABEL_NODE: str(self.settings.node_id)}
        containers = await self.runtime.find(ContainerQuery(labels=labels))
        unrouted = await self._unroute(containers, hand_over=hand_over)
        if unrouted and self.settings.drain_seconds > 0:
            # Requests the proxy sent it before the route changed are still being answered.
            await anyio.sleep(self.settings.drain_seconds)
        removed = 0
        for container in containers:
            await self.runtime.remove(container.id, stop_timeout=stop_timeout)
            removed += 1
        self._followed_until.pop(deployment_id, None)
        follower = self._followers.pop(deployment_id, None)
        if follower is not None:
            # Removing the container ends its log stream; this only makes sure.
            follower.cancel()
            await asyncio.wait([follower])
        log = self._log_for(deployment_id, attempt)
        del self._logs[deployment_id]
        what = f"{removed} container{'s' if removed != 1 else ''} removed"
        await log.line(LogStream.SYSTEM, f"{reason} ({what})")
        await self.cursors.drop(deployment_id)
        self.log.info("deployment %s %s (%s)", deployment_id, reason, what)

    async def _unroute(self, containers: list[ContainerInfo], *, hand_over: bool) -> bool:
        """Take the route from the deployment's serving containers (if it points at one);
        whether any of them was serving, so that it gets time to drain."""
        serving = [c for c in containers if c.running and c.labels.get(LABEL_ROLE) == ROLE_APP]
        for container in serving:
            try:
                await self.routes.release(container, hand_over=hand_over, ended=self._ended)
            except ProxyError as e:
                # The container goes anyway; a route left pointing at it answers 502 until
                # the next deployment or restart of the node replaces or drops it.
                self.log.error("cannot take the route from %s: %s", container.name, e)
        return any(c.host_port is not None for c in serving)

    def _deployed(self, deployment_id: uuid.UUID, task: asyncio.Task[Outcome]) -> None:
        if self._deploying.get(deployment_id) is task:
            del self._deploying[deployment_id]
        if task.cancelled():
            return
        if task.exception() is None:
            self._finished.add((deployment_id, task.result().attempt))
        error = task.exception()
        if error is not None:
            self.log.error(
                "deployment %s: work ended without a report",
                deployment_id,
                exc_info=error,
            )
            return
        outcome = task.result()
        self.log.info(
            "deployment %s: %s", deployment_id, type(outcome).__name__.removeprefix("Work")
        )
        if isinstance(outcome, WorkFailed):
            self._logs.pop(deployment_id, None)  # nothing of it runs: no more lines
            self._chore(self.cursors.drop(deployment_id))

    def _revived(
        self, deployment_id: uuid.UUID, attempt: int, task: asyncio.Task[WorkLost | None]
    ) -> None:
        if self._reviving.get(deployment_id) is task:
            del self._reviving[deployment_id]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.log.error("deployment %s: revival failed", deployment_id, exc_info=error)
            return
        self._finished.add((deployment_id, attempt))
        if task.result() is not None:
            self._logs.pop(deployment_id, None)  # nothing of it runs here any more
            self._chore(self.cursors.drop(deployment_id))

    def _follow(self, work: DeployWork, container: ContainerInfo) -> None:
        deployment = work.deployment_id
        current = self._followers.get(deployment)
        if current is not None and not current.done():
            return
        log = self._logs.get(deployment)
        if log is None:
            return
        self._start_following(deployment, container, log)

    def _start_following(
        self,
        deployment_id: uuid.UUID,
        container: ContainerInfo,
        log: DeploymentLog,
        *,
        since: datetime | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._read_output(deployment_id, container, log, since),
            name=f"output-{deployment_id}",
        )
        self._followers[deployment_id] = task

    async def _read_output(
        self,
        deployment_id: uuid.UUID,
        container: ContainerInfo,
        log: DeploymentLog,
        since: datetime | None,
    ) -> None:
        try:
            await self.runtime.follow(container.id, log.write, since=since)
            for stream in (LogStream.STDOUT, LogStream.STDERR):
                await log.flush(stream)
        except RuntimeFailure as e:
            self.log.warning("stopped following %s: %s", container.name, e)
        finally:
            # The log itself stays until the deployment is stopped: its last line (the
            # stop) is numbered after the app's output.
            if self._followers.get(deployment_id) is asyncio.current_task():
                del self._followers[deployment_id]
                self._followed_until[deployment_id] = self.clock()

    def _chore(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._chores.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._chores.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("node work failed", exc_info=t.exception())

        task.add_done_callback(done)


async def _after(previous: asyncio.Task[Any] | None, start: Callable[[], Awaitable[T]]) -> T:
    """Run ``start()`` once ``previous`` (cancelled: an older attempt) has cleaned up."""
    if previous is not None:
        await asyncio.wait([previous])
    return await start()


def _describe(action: Action) -> str:
    match action:
        case Keep(assigned=a) | Revive(assigned=a) | Resume(assigned=a):
            return f"{type(action).__name__.lower()} {a.app} ({a.deployment_id})"
        case Abandon(deployment_id=deployment_id):
            return f"abandon {deployment_id}"
        case Remove(container=container):
            return f"remove {container.name}"
