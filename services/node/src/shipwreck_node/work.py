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
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

import anyio

from shipwreck_contracts import (
    CancelWork,
    DeployWork,
    LogStream,
    NodeWork,
    StopWork,
    WorkFailed,
)
from shipwreck_node.logsink import Clock, DeploymentLog, Send, utc_now
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
from shipwreck_node.routing import Routes
from shipwreck_node.settings import NodeSettings


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
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.runtime = runtime
        self.send = send
        self.routes = routes
        self.clock = clock
        self.log = logger or logging.getLogger("shipwreck.node")
        self._deploying: dict[uuid.UUID, asyncio.Task[Outcome]] = {}
        self._followers: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._logs: dict[uuid.UUID, DeploymentLog] = {}
        # Cancelled or stopped here: a late or redelivered DeployWork must not revive them.
        self._ended: set[uuid.UUID] = set()
        self._chores: set[asyncio.Task[None]] = set()

    # --- dispatch ------------------------------------------------------------------------

    async def handle(self, work: NodeWork) -> None:
        """Start handling one work message; returns without waiting for the work."""
        if isinstance(work, DeployWork):
            self.deploy(work)
        elif isinstance(work, CancelWork):
            self.cancel(work)
        else:
            self.stop(work)

    def deploy(self, work: DeployWork) -> None:
        """Start deploying ``work`` unless it is already under way or was ended here."""
        deployment = work.deployment_id
        if deployment in self._ended:
            self.log.info("ignoring work for %s: it was cancelled or stopped", deployment)
            return
        task = self._deploying.get(deployment)
        if task is not None and not task.done():
            self.log.info("deployment %s is already in progress", deployment)
            return
        log = self._logs.get(deployment)
        if log is None or log.attempt != work.attempt:
            log = self._logs[deployment] = DeploymentLog(
                self.send, deployment, work.attempt, clock=self.clock
            )
        task = asyncio.create_task(
            self.pipeline.deploy(work, log, on_started=self._follow),
            name=f"deploy-{deployment}",
        )
        self._deploying[deployment] = task
        task.add_done_callback(lambda t: self._deployed(deployment, t))

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
        attempt = log.attempt if log is not None else 1
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
        ids = {d for d, task in self._deploying.items() if not task.done()}
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
        """Wait until no deployment, cancellation or stop is in progress."""
        while pending := [t for t in (*self._deploying.values(), *self._chores) if not t.done()]:
            await asyncio.wait(pending)

    async def recover(self) -> None:
        """After a (re)start: remove what an interrupted run of this node left behind, and
        route the apps that still run here again (the proxy may have restarted too).

        Test containers, app containers that no longer run and those that never passed
        their health check belong to work that died with the previous process; app
        containers that run healthy keep serving.
        """
        node = {LABEL_NODE: str(self.settings.node_id)}
        for container in await self.runtime.find(ContainerQuery(labels=node)):
            role = container.labels.get(LABEL_ROLE)
            if role == ROLE_TEST or not container.running or not container.kept_running:
                self.log.info("removing leftover container %s", container.name)
                await self.runtime.remove(container.id)
        await self.routes.restore()

    async def close(self) -> None:
        """Cancel everything in progress (each removes what it created) and wait for it."""
        tasks = [*self._deploying.values(), *self._followers.values(), *self._chores]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # --- internals -----------------------------------------------------------------------

    def _interrupt(self, deployment_id: uuid.UUID) -> asyncio.Task[Outcome] | None:
        task = self._deploying.get(deployment_id)
        if task is not None and not task.done():
            task.cancel()
            return task
        return None

    async def _end(
        self,
        deployment_id: uuid.UUID,
        attempt: int,
        task: asyncio.Task[Outcome] | None,
        reason: str,
        *,
        stop_timeout: float,
        hand_over: bool,
    ) -> None:
        if task is not None:
            # The pipeline removes what it created when it is cancelled; let it finish.
            await asyncio.wait([task])
        query = ContainerQuery(labels={LABEL_DEPLOYMENT: str(deployment_id)})
        containers = await self.runtime.find(query)
        unrouted = await self._unroute(containers, hand_over=hand_over)
        if unrouted and self.settings.drain_seconds > 0:
            # Requests the proxy sent it before the route changed are still being answered.
            await anyio.sleep(self.settings.drain_seconds)
        removed = 0
        for container in containers:
            await self.runtime.remove(container.id, stop_timeout=stop_timeout)
            removed += 1
        follower = self._followers.pop(deployment_id, None)
        if follower is not None:
            # Removing the container ends its log stream; this only makes sure.
            follower.cancel()
            await asyncio.wait([follower])
        log = self._logs.pop(deployment_id, None) or DeploymentLog(
            self.send, deployment_id, attempt, clock=self.clock
        )
        what = f"{removed} container{'s' if removed != 1 else ''} removed"
        await log.line(LogStream.SYSTEM, f"{reason} ({what})")
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

    def _follow(self, work: DeployWork, container: ContainerInfo) -> None:
        deployment = work.deployment_id
        current = self._followers.get(deployment)
        if current is not None and not current.done():
            return
        log = self._logs.get(deployment)
        if log is None:
            return
        task = asyncio.create_task(
            self._read_output(deployment, container, log), name=f"output-{deployment}"
        )
        self._followers[deployment] = task

    async def _read_output(
        self, deployment_id: uuid.UUID, container: ContainerInfo, log: DeploymentLog
    ) -> None:
        try:
            await self.runtime.follow(container.id, log.write)
            for stream in (LogStream.STDOUT, LogStream.STDERR):
                await log.flush(stream)
        except RuntimeFailure as e:
            self.log.warning("stopped following %s: %s", container.name, e)
        finally:
            # The log itself stays until the deployment is stopped: its last line (the
            # stop) is numbered after the app's output.
            if self._followers.get(deployment_id) is asyncio.current_task():
                del self._followers[deployment_id]

    def _chore(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._chores.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._chores.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("node work failed", exc_info=t.exception())

        task.add_done_callback(done)
