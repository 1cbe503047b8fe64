"""One deployment on one node: clone, build, test, start, check health, route, report.

Pure orchestration over the ports (`GitRemote`, `ContainerRuntime`, `HealthProbe`,
`Router`) and a ``send`` function for reports; no git, Docker, Caddy or broker code lives
here. Each step either returns what the next one needs or raises `StageFailed` with a
reason written for the person who pushed the commit. Whatever happens, a deployment that
does not end up serving leaves no container behind: everything it created carries its
deployment id label and is removed by that label (also when the work is cancelled).

Zero downtime: the new container starts beside the one serving the app, and takes the
app's route (one proxy change) only once it is healthy; then the success is reported, and
the orchestrator has the old deployment stopped. A deployment that fails or is cancelled
at any point before its report leaves the route with the container that had it. The
deployments of one app take its route and report it one at a time, so that their success
reports leave in the order the route changed hands.

A rollback (`DeployWork.image` set) runs that image again when the node still has it, with
the manifest it was built from (kept as a label on the image): no clone, no build, no test.
A RUNNING deployment placed again after its node was lost names its own image the same
way, and runs it without a build where the image is (nodes sharing one Docker engine).
After each success, the images of the app's older deployments go, except the newest
``keep_images`` (for rollbacks) and those a container still uses.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn

import anyio
import anyio.to_thread

from shipwreck_contracts import (
    DeployWork,
    LogStream,
    Manifest,
    Stage,
    StageReported,
    WorkFailed,
    WorkLost,
    WorkSucceeded,
    describe_errors,
    parse_manifest,
)
from shipwreck_contracts.gitpolicy import (
    RefusedRemote,
    RemoteRef,
    Resolver,
    check_branch,
    check_repo_url,
    resolve_host,
)
from shipwreck_node.checkout import (
    MAX_DEPENDENCY_FILE_BYTES,
    UnsafeRepoFile,
    find_manifest,
    read_repo_file,
)
from shipwreck_node.images import deps_tag, image_tag, stale_images
from shipwreck_node.logsink import Clock, DeploymentLog, Send, utc_now
from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_ATTEMPT,
    LABEL_COMMIT,
    LABEL_DEPLOYMENT,
    LABEL_DOMAIN,
    LABEL_MANIFEST,
    LABEL_MANIFEST_FILE,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_ROLE,
    ROLE_APP,
    ROLE_TEST,
    BranchNotFound,
    Checkout,
    ContainerInfo,
    ContainerQuery,
    ContainerRuntime,
    GitError,
    GitRemote,
    HealthProbe,
    ImageInfo,
    Limits,
    ProbeResult,
    ProxyError,
    RunSpec,
    RuntimeFailure,
)
from shipwreck_node.routing import Routes, upstream_of
from shipwreck_node.settings import PUBLISH_HOST, NodeSettings
from shipwreck_node.templates import (
    DEPS_STAGE,
    NoTemplate,
    TemplateInputs,
    base_image,
    build_args,
    dependency_files,
    render_dockerfile,
    write_build_context,
)

Outcome = WorkSucceeded | WorkFailed
"""How a deployment's work ends on a node (a cancelled one does not end: it stops)."""

OnStarted = Callable[[DeployWork, ContainerInfo], None]
"""Told about the app's container as soon as it runs, so that its output is followed."""

REASON_TAIL_LINES: Final = 12
MAX_REASON_CHARS: Final = 4000
PROBE_TIMEOUT: Final = 2.0
FIRST_PROBE_INTERVAL: Final = 0.1
MAX_PROBE_INTERVAL: Final = 1.0

# Lines the classic builder adds around a step's output, and where it says a step failed.
_BUILDER_NOISE: Final = re.compile(
    r"^(Step \d+/\d+ : | ---> |Removing intermediate container |Successfully (built|tagged) )"
)
_PROGRESS_BAR: Final = "\u2501"  # pip draws its download bars with this character
_NON_ZERO: Final = re.compile(r"returned a non-zero code: (\d+)")

log = logging.getLogger(__name__)


class StageFailed(Exception):
    """A deployment cannot go on; ``reason`` says why, for people."""

    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclass
class _Run:
    """What one run of the pipeline has learnt so far (for its failure report)."""

    work: DeployWork
    log: DeploymentLog
    workdir: Path
    stage: Stage = Stage.CLONING
    commit: str | None = None
    warnings: list[str] = field(default_factory=list)
    manifest_file: tuple[str, bytes] | None = None
    """The manifest's file name and bytes, as read from the checkout."""
    routed: ContainerInfo | None = None
    """The container that took (or was taking) the app's route: whoever undoes this run
    must hand the route back if it still points there."""


def container_name(work: DeployWork, suffix: str = "") -> str:
    """``shipwreck-<app>-<deployment id, 32 hex digits>[-a<attempt>][-suffix]``.

    The whole id: deployments of one app run side by side during a redeploy, and their
    names must never collide. A later attempt (the deployment was placed again after its
    node was lost) has its own name: nodes sharing one Docker engine may both run one.
    """
    name = f"shipwreck-{work.app}-{work.deployment_id.hex}"
    if work.attempt > 1:
        name += f"-a{work.attempt}"
    return f"{name}-{suffix}" if suffix else name


class Pipeline:
    """Runs `DeployWork` to a `WorkSucceeded` or a `WorkFailed`, reporting each stage."""

    def __init__(
        self,
        settings: NodeSettings,
        *,
        git: GitRemote,
        runtime: ContainerRuntime,
        probe: HealthProbe,
        routes: Routes,
        send: Send,
        resolve: Resolver = resolve_host,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.git = git
        self.runtime = runtime
        self.probe = probe
        self.routes = routes
        self.send = send
        self.resolve = resolve
        self.clock = clock
        # Per app: a rollback's "is the image still there? tag it" and the pruning of old
        # images must not interleave, or the image could go between the two.
        self._image_locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        # Per app: taking the route and reporting it, one deployment at a time.
        self._takeovers: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)

    async def deploy(
        self, work: DeployWork, deployment_log: DeploymentLog, on_started: OnStarted | None = None
    ) -> Outcome:
        """Deploy ``work``; report and return how it ended.

        Cancellation (CancelWork, shutdown) removes what was created and propagates; no
        report is sent then: the orchestrator records the cancellation itself. A success is
        reported as the route is taken (see `_take_over`), a failure once cleaned up.
        """
        workdir = self.settings.node_work_dir.resolve() / f"{work.deployment_id}-{work.attempt}"
        run = _Run(work=work, log=deployment_log, workdir=workdir)
        outcome: Outcome
        try:
            outcome = await self._deploy(run, on_started)
        except StageFailed as e:
            outcome = await self._fail(run, e.stage, e.reason)
        except Exception as e:
            # A bug or an engine failure must still end the deployment, not leave it stuck.
            log.exception("deployment %s failed unexpectedly", work.deployment_id)
            outcome = await self._fail(
                run, run.stage, f"node error while {run.stage.value.lower()}: {e}"
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._clean_up(run)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, workdir, True)
        if isinstance(outcome, WorkFailed):
            await self.send(outcome)
        else:
            await self.prune_images(work.app)
        return outcome

    async def revive(
        self, work: DeployWork, deployment_log: DeploymentLog, on_started: OnStarted | None = None
    ) -> WorkLost | None:
        """Run a RUNNING deployment's container again from its image (``work.image``): it
        was removed by hand, or died while the node was away. No clone, no build.

        Nothing is reported when it serves again: the deployment is RUNNING all along. When
        it cannot (the image is gone, the app no longer starts), what this made is removed
        and `WorkLost` is reported, so that the orchestrator places it again. It takes the
        app's route only from nothing: a route that leads to another live container of the
        app (a newer deployment that took over meanwhile) stays where it is.
        """
        workdir = self.settings.node_work_dir.resolve() / f"{work.deployment_id}-{work.attempt}"
        run = _Run(work=work, log=deployment_log, workdir=workdir, stage=Stage.STARTING)
        run.commit = work.commit
        try:
            await self._revive(run, on_started)
            return None
        except StageFailed as e:
            reason = e.reason
        except Exception as e:
            log.exception("deployment %s could not be revived", work.deployment_id)
            reason = f"node error while starting it again: {e}"
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_containers(work)
            raise
        with anyio.CancelScope(shield=True):
            try:
                await self._remove_containers(work)
            except RuntimeFailure as e:
                log.error("cannot clean up deployment %s: %s", work.deployment_id, e)
        await run.log.line(LogStream.SYSTEM, f"cannot run it here any more: {reason}")
        lost = WorkLost(
            deployment_id=work.deployment_id,
            node_id=self.settings.node_id,
            attempt=work.attempt,
            reason=reason,
            at=self.clock(),
        )
        await self.send(lost)
        return lost

    async def _revive(self, run: _Run, on_started: OnStarted | None) -> None:
        work = run.work
        existing = await self._healthy_existing(work)
        if existing is not None:
            if on_started is not None:
                on_started(work, existing)
            with contextlib.suppress(ProxyError):  # it serves; see below
                await self.routes.claim(existing)
            return
        await self._remove_containers(work)  # dead ones: the new one takes their name
        ref = work.image or image_tag(work)
        info = await self.runtime.image(ref)
        problem = _unusable(info, work)
        if info is None or problem is not None:
            raise StageFailed(
                Stage.STARTING, f"its container is gone and its image {ref} {problem}"
            )
        parsed = parse_manifest(
            info.labels[LABEL_MANIFEST].encode(),
            info.labels.get(LABEL_MANIFEST_FILE) or "Shipwreck.toml",
        )
        if isinstance(parsed, list):
            raise StageFailed(
                Stage.STARTING,
                f"its image {ref} carries a manifest that no longer reads: "
                + describe_errors(parsed),
            )
        run.commit = run.commit or info.labels.get(LABEL_COMMIT) or None
        run.log.add_secrets(parsed.env.values())
        await run.log.line(LogStream.SYSTEM, f"its container is gone; starting {ref} again")
        container = await self._start(run, parsed, ref)
        if on_started is not None:
            on_started(work, container)
        healthy = await self._wait_healthy(run, parsed, container)
        await self.runtime.keep_running(healthy.id)
        routed = False
        if parsed.config.port is not None:
            try:
                routed = await self.routes.claim(healthy)
            except ProxyError as e:
                # It serves; giving it up over a proxy hiccup would be worse. The next
                # assignment (or restart) of the node claims the route again.
                await run.log.line(LogStream.SYSTEM, f"warning: cannot route it: {e}")
        where = f" at {self.routes.url(work.app)}" if routed else ""
        await run.log.line(LogStream.SYSTEM, f"running again{where}")

    async def prune_images(self, app: str) -> list[str]:
        """Remove the app's images beyond the newest ``keep_images`` that no container uses
        (with the dependency-stage tags of their deployments); the tags removed.

        Only images this node built are considered. Failures are logged, not raised: the
        deployment they follow has succeeded.
        """
        removed: list[str] = []
        try:
            async with self._image_locks[app]:
                labels = {LABEL_APP: app, LABEL_NODE: str(self.settings.node_id)}
                images = await self.runtime.find_images(labels)
                users = await self.runtime.find(ContainerQuery(labels={LABEL_APP: app}))
                in_use = {c.image_id for c in users} | {c.image for c in users}
                for image in stale_images(images, in_use, self.settings.keep_images):
                    removed.extend(await self._remove_image(app, image))
        except RuntimeFailure as e:
            log.warning("cannot prune the old images of %s: %s", app, e)
        if removed:
            log.info("removed old images of %s: %s", app, ", ".join(removed))
        return removed

    async def _remove_image(self, app: str, image: ImageInfo) -> list[str]:
        removed: list[str] = []
        for tag in image.tags:
            repository, _, deployment = tag.rpartition(":")
            if repository != f"shipwreck/app-{app}":
                continue  # someone else's name for it: theirs to remove
            await self.runtime.remove_image(tag)
            # Removing the dependency stage's tag with it lets that image go too, once no
            # kept deployment has the same dependencies.
            await self.runtime.remove_image(deps_tag(app, deployment))
            removed.append(tag)
        return removed

    # --- the stages ----------------------------------------------------------------------

    async def _deploy(self, run: _Run, on_started: OnStarted | None) -> WorkSucceeded:
        work = run.work
        existing = await self._healthy_existing(work)
        if existing is not None:
            return await self._already_running(run, existing, on_started)
        # What an earlier run of this work left (a redelivery) goes, but not its image: a
        # build tags its own anyway, and a deployment placed again after its node was lost
        # runs the image again if this node has it (it does when the nodes share a Docker
        # engine; removing the tag would delete the very image it could run).
        await self._remove_containers(work)

        reused = await self._reuse_image(run)
        if reused is not None:
            image, manifest = reused
            run.stage = Stage.STARTING
            note = _again(work) or f"rollback to {work.image}"
            await self._report(work, Stage.STARTING, run.commit, note)
        else:
            image = image_tag(work)
            remote = await self._check_remote(work)
            run.commit = await self._resolve(run, remote)
            await self._report(work, Stage.CLONING, run.commit, f"{work.repo_url}@{work.branch}")
            checkout = await self._clone(run, remote)
            manifest = await self._read_manifest(run, checkout)

            run.stage = Stage.BUILDING
            await self._report(work, Stage.BUILDING, run.commit)
            await self._build(run, checkout, manifest)

            if manifest.config.test is not None:
                run.stage = Stage.TESTING
                await self._report(work, Stage.TESTING, run.commit)
                await self._test(run, manifest, manifest.config.test)

            run.stage = Stage.STARTING
            await self._report(work, Stage.STARTING, run.commit)
        container = await self._start(run, manifest, image)
        if on_started is not None:
            on_started(work, container)
        healthy = await self._wait_healthy(run, manifest, container)
        await self.runtime.keep_running(healthy.id)

        async def switch() -> str:
            url = await self._take_route(run, manifest, healthy)
            await run.log.line(LogStream.SYSTEM, f"running at {url}" if url else "running")
            return url

        return await self._take_over(run, switch, healthy, run.commit or "", run.warnings, image)

    async def _take_over(
        self,
        run: _Run,
        switch: Callable[[], Awaitable[str]],
        container: ContainerInfo,
        commit: str,
        warnings: list[str],
        image: str,
    ) -> WorkSucceeded:
        """Take the app's route (``switch``, which returns the app's URL) and report the
        success, while no other deployment of the app does either; the report sent.

        The orchestrator makes current the deployment whose success it hears last. Were
        the reports of two deployments to cross on their way out, the current one would be
        a deployment whose route was taken since, and stopping the other (superseded by
        it) would leave the app with no route at all.
        """
        takeover = self._takeovers[run.work.app]
        if takeover.locked():
            await run.log.line(
                LogStream.SYSTEM,
                f"waiting for another deployment of {run.work.app} to finish taking its route",
            )
        async with takeover:
            url = await switch()
            succeeded = self._succeeded(run.work, container, commit, warnings, image, url)
            await self.send(succeeded)
        return succeeded

    async def _already_running(
        self, run: _Run, existing: ContainerInfo, on_started: OnStarted | None
    ) -> WorkSucceeded:
        """A redelivered deployment whose container runs healthy: report it again."""
        work = run.work
        await run.log.line(LogStream.SYSTEM, "already running and healthy; nothing to do")
        if on_started is not None:
            on_started(work, existing)

        async def switch() -> str:
            if existing.host_port is None:
                return ""
            try:
                # Its first run may have ended before the switch (the node stopped).
                await self.routes.take(existing)
            except ProxyError as e:
                # The container serves; removing it over a proxy hiccup would be worse. The
                # node routes it again when it restarts.
                await run.log.line(LogStream.SYSTEM, f"warning: cannot check its route: {e}")
            return self.routes.url(work.app)

        commit = existing.labels.get(LABEL_COMMIT, "")
        image = existing.image or image_tag(work)
        return await self._take_over(run, switch, existing, commit, [], image)

    async def _reuse_image(self, run: _Run) -> tuple[str, Manifest] | None:
        """For a rollback, or a RUNNING deployment placed again (``work.image`` is then its
        own image): the image to run (tagged for this deployment) and its manifest, or None
        when it must be built again (the image is gone, or cannot be used)."""
        work = run.work
        if work.image is None:
            return None
        async with self._image_locks[work.app]:
            reused = await self._tag_for_rollback(run, work.image)
        if isinstance(reused, str):
            target = work.commit or work.branch
            await run.log.line(
                LogStream.SYSTEM, f"the image {work.image} {reused}; building {target} again"
            )
            return None
        again = _again(work)
        await run.log.line(
            LogStream.SYSTEM,
            f"{again or f'rolling back to {work.image}'} (commit {run.commit}): no build",
        )
        return reused

    async def _tag_for_rollback(self, run: _Run, ref: str) -> tuple[str, Manifest] | str:
        """Tag the image ``ref`` for this deployment: its new tag and manifest, or why not."""
        work = run.work
        info = await self.runtime.image(ref)
        problem = _unusable(info, work)
        if info is None or problem is not None:
            return problem or "is no longer on this node"
        filename = info.labels.get(LABEL_MANIFEST_FILE) or "Shipwreck.toml"
        parsed = parse_manifest(info.labels[LABEL_MANIFEST].encode(), filename)
        if isinstance(parsed, list):
            return f"carries a manifest that no longer reads: {describe_errors(parsed)}"
        commit = work.commit or info.labels.get(LABEL_COMMIT) or ""
        if not commit:
            return "does not say which commit it was built from"
        try:
            # A tag of its own: the rollback is a deployment like any other, and the tag
            # marks the image as just used (image retention goes by that).
            await self.runtime.tag(ref, image_tag(work))
        except RuntimeFailure as e:
            return f"cannot be tagged ({e})"
        run.commit = commit
        run.log.add_secrets(parsed.env.values())
        run.warnings.extend(parsed.warnings)
        return image_tag(work), parsed

    async def _check_remote(self, work: DeployWork) -> RemoteRef:
        # Before any git process: a refused URL must not cause a single connection.
        try:
            check_branch(work.branch)
            return await anyio.to_thread.run_sync(
                lambda: check_repo_url(
                    work.repo_url,
                    allow_private=self.settings.git_allow_private,
                    resolve=self.resolve,
                )
            )
        except RefusedRemote as e:
            raise StageFailed(Stage.CLONING, str(e)) from None

    async def _healthy_existing(self, work: DeployWork) -> ContainerInfo | None:
        """The deployment's app container if it already runs and answers (a redelivery)."""
        query = ContainerQuery(
            labels={**self._own(work), LABEL_ROLE: ROLE_APP},
            running_only=True,
        )
        for container in await self.runtime.find(query):
            port = _int(container.labels.get(LABEL_PORT))
            result = await self._probe_once(container, port, None)
            if port is None or result.ok:
                return container
        return None

    async def _resolve(self, run: _Run, remote: RemoteRef) -> str:
        work = run.work
        if work.commit is not None:
            return work.commit
        await run.log.line(LogStream.SYSTEM, f"resolving {work.branch} of {work.repo_url}")
        try:
            return await self.git.resolve(remote, work.branch)
        except BranchNotFound as e:
            raise StageFailed(
                Stage.CLONING, f"{e}; push it first, or deploy an existing branch"
            ) from None
        except GitError as e:
            raise StageFailed(Stage.CLONING, f"cannot reach the repository: {e}") from None

    async def _clone(self, run: _Run, remote: RemoteRef) -> Checkout:
        commit = run.commit or ""
        await run.log.line(LogStream.SYSTEM, f"cloning {run.work.repo_url} at {commit}")
        await anyio.to_thread.run_sync(shutil.rmtree, run.workdir, True)
        try:
            return await self.git.fetch(remote, run.work.branch, commit, run.workdir / "src")
        except GitError as e:
            raise StageFailed(Stage.CLONING, f"cannot clone the repository: {e}") from None

    async def _read_manifest(self, run: _Run, checkout: Checkout) -> Manifest:
        work = run.work
        try:
            found = await anyio.to_thread.run_sync(find_manifest, checkout)
        except UnsafeRepoFile as e:
            raise StageFailed(Stage.CLONING, str(e)) from None
        if found is None:
            raise StageFailed(
                Stage.CLONING,
                f"no Shipwreck.toml in {work.repo_url}@{checkout.commit} (looked for "
                "Shipwreck.toml, shipwreck.toml and Config.toml at the repository root)",
            )
        filename, data = found
        run.manifest_file = found
        parsed = parse_manifest(data, filename)
        if isinstance(parsed, list):
            raise StageFailed(Stage.CLONING, describe_errors(parsed))
        run.log.add_secrets(parsed.env.values())
        run.warnings.extend(parsed.warnings)
        if parsed.app.name != work.app:
            run.warnings.append(
                f"{filename}: app.name is {parsed.app.name!r} but this deployment belongs to "
                f"the app {work.app!r}; the app keeps its name"
            )
        for warning in run.warnings:
            await run.log.line(LogStream.SYSTEM, f"warning: {warning}")
        return parsed

    async def _build(self, run: _Run, checkout: Checkout, manifest: Manifest) -> None:
        work, config = run.work, manifest.config
        try:
            base = base_image(config.lang, self.settings)
            candidates = dependency_files(config.lang)
        except NoTemplate as e:
            raise StageFailed(Stage.BUILDING, str(e)) from None
        await self._ensure_base_image(base.ref, base.setting)
        present: set[str] = set()
        for name in candidates:
            try:
                data = await anyio.to_thread.run_sync(
                    read_repo_file, checkout, name, MAX_DEPENDENCY_FILE_BYTES
                )
            except UnsafeRepoFile as e:
                raise StageFailed(Stage.BUILDING, str(e)) from None
            if data is not None:
                present.add(name)
        ca_bundle = self._ca_bundle()
        labels = self._labels(work, ROLE_APP, run.commit or "")
        if run.manifest_file is not None:
            filename, data = run.manifest_file
            labels[LABEL_MANIFEST_FILE] = filename
            labels[LABEL_MANIFEST] = data.decode(errors="replace")
        inputs = TemplateInputs(
            lang=config.lang,
            base_image=base.ref,
            run=config.run,
            port=config.port,
            dependency_files=frozenset(present),
            with_ca_bundle=ca_bundle is not None,
            labels=labels,
        )
        dockerfile = render_dockerfile(inputs)
        context = run.workdir / "context.tar"
        await anyio.to_thread.run_sync(
            lambda: write_build_context(checkout, dockerfile, context, ca_bundle=ca_bundle)
        )
        installs = ", ".join(sorted(present)) or "no dependency file"
        await run.log.line(
            LogStream.SYSTEM, f"building {image_tag(work)} from {base.ref} ({installs})"
        )
        timeout = self.settings.build_timeout_seconds
        try:
            with anyio.fail_after(timeout):
                await self.runtime.build(
                    context,
                    tag=image_tag(work),
                    build_args=build_args(inputs),
                    on_output=run.log.write,
                    stage_tags={DEPS_STAGE: deps_tag(work.app, str(work.deployment_id))},
                )
        except TimeoutError:
            raise StageFailed(
                Stage.BUILDING,
                f"the image build did not finish within {timeout:g} s "
                "(SHIPWRECK_BUILD_TIMEOUT_SECONDS)" + self._tail(run, LogStream.BUILD),
            ) from None
        except RuntimeFailure as e:
            await run.log.flush(LogStream.BUILD)
            raise StageFailed(
                Stage.BUILDING, _build_failure(str(e), run.log.tail(LogStream.BUILD))
            ) from None
        finally:
            await anyio.to_thread.run_sync(lambda: context.unlink(missing_ok=True))

    async def _ensure_base_image(self, ref: str, setting: str) -> None:
        if await self.runtime.image_present(ref):
            return
        problem = "is not on this node"
        if self.settings.pull_base_images:
            try:
                await self.runtime.pull(ref)
                return
            except RuntimeFailure as e:
                problem = f"is not on this node and cannot be pulled ({e})"
        else:
            problem += " (SHIPWRECK_PULL_BASE_IMAGES=false)"
        raise StageFailed(
            Stage.BUILDING,
            f"the base image {ref} ({setting}) {problem}; build the local base images with "
            f"`just images` and set {setting} to one of them (e.g. shipwreck/base-python:"
            "bookworm, shipwreck/base-node:bookworm), or make its registry reachable",
        )

    def _ca_bundle(self) -> Path | None:
        if not self.settings.build_ca_bundle:
            return None
        bundle = Path(self.settings.build_ca_bundle)
        if not bundle.is_file():
            raise StageFailed(
                Stage.BUILDING,
                f"SHIPWRECK_BUILD_CA_BUNDLE={bundle} is not a readable file on this node",
            )
        return bundle

    async def _test(self, run: _Run, manifest: Manifest, command: str) -> None:
        work = run.work
        await run.log.line(LogStream.SYSTEM, f"testing: {command}")
        spec = RunSpec(
            image=image_tag(work),
            name=container_name(work, "test"),
            command=["sh", "-c", command],
            env=self._env(manifest),
            labels=self._labels(work, ROLE_TEST, run.commit or ""),
            limits=self._limits(work),
        )

        async def on_output(_: LogStream, chunk: str) -> None:
            await run.log.write(LogStream.TEST, chunk)

        timeout = self.settings.test_timeout_seconds
        try:
            with anyio.fail_after(timeout):
                code = await self.runtime.run_to_exit(spec, on_output=on_output)
        except TimeoutError:
            raise StageFailed(
                Stage.TESTING,
                f"test command `{command}` did not finish within {timeout:g} s "
                "(SHIPWRECK_TEST_TIMEOUT_SECONDS)" + self._tail(run, LogStream.TEST),
            ) from None
        await run.log.flush(LogStream.TEST)
        if code != 0:
            raise StageFailed(
                Stage.TESTING,
                f"test command `{command}` exited {code}" + self._tail(run, LogStream.TEST),
            )

    async def _start(self, run: _Run, manifest: Manifest, image: str) -> ContainerInfo:
        work, config = run.work, manifest.config
        labels = self._labels(work, ROLE_APP, run.commit or "")
        if config.port is not None:
            labels[LABEL_PORT] = str(config.port)
        if config.domain is not None:
            labels[LABEL_DOMAIN] = config.domain
        spec = RunSpec(
            image=image,
            name=container_name(work),
            command=None,
            env=self._env(manifest),
            labels=labels,
            limits=self._limits(work),
            port=config.port,
        )
        container = await self.runtime.start(spec)
        await run.log.line(LogStream.SYSTEM, f"started container {container.name}")
        return container

    async def _wait_healthy(
        self, run: _Run, manifest: Manifest, container: ContainerInfo
    ) -> ContainerInfo:
        config = manifest.config
        if config.port is None:
            # Nothing to probe: a worker is healthy if it is still up after a grace period.
            grace = self.settings.worker_grace_seconds
            code = await self.runtime.wait_exit(container.id, grace)
            if code is not None:
                await self._crashed(run, container.id, code)
            return await self.runtime.inspect(container.id) or container

        timeout = self.settings.health_timeout_seconds
        deadline = anyio.current_time() + timeout
        interval = FIRST_PROBE_INTERVAL
        last = ProbeResult(ok=False, detail="not probed yet")
        while True:
            state = await self.runtime.inspect(container.id)
            if state is None or not state.running:
                await self._crashed(run, container.id, state.exit_code if state else None)
            last = await self._probe_once(state, config.port, config.healthcheck)
            if last.ok:
                return state
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            await anyio.sleep(min(interval, remaining))
            interval = min(interval * 2, MAX_PROBE_INTERVAL)
        if config.healthcheck is not None and last.answered:
            reason = (
                f"health check GET {config.healthcheck} did not answer 2xx or 3xx within "
                f"{timeout:g} s (SHIPWRECK_HEALTH_TIMEOUT_SECONDS); last answer: {last.detail}"
            )
        else:
            reason = (
                f"app did not listen on port {config.port} within {timeout:g} s "
                f"(SHIPWRECK_HEALTH_TIMEOUT_SECONDS; last try: {last.detail}); make it listen "
                f"on 0.0.0.0:{config.port}, not only on 127.0.0.1 inside its container"
            )
        output = await self._output_tail(run, container.id)
        raise StageFailed(Stage.STARTING, f"{reason}\napp output:\n{output}" if output else reason)

    async def _take_route(self, run: _Run, manifest: Manifest, container: ContainerInfo) -> str:
        """Switch the app's route to the healthy container (one proxy change); its URL.

        A worker (no config.port) has nothing to route and no URL.
        """
        work = run.work
        upstream = upstream_of(container)
        if manifest.config.port is None or upstream is None:
            return ""
        hosts = self.routes.hosts(work.app, manifest.config.domain)
        # Set before the change: if it is interrupted half-way, the undo still checks.
        run.routed = container
        try:
            await self.routes.router.route(work.app, hosts, upstream)
        except ProxyError as e:
            raise StageFailed(
                Stage.STARTING,
                f"the app is healthy, but the node's reverse proxy did not take its route: {e}",
            ) from None
        await run.log.line(LogStream.SYSTEM, f"routed {', '.join(hosts)} to {container.name}")
        return self.routes.url(work.app)

    async def _crashed(self, run: _Run, container_id: str, code: int | None) -> NoReturn:
        output = await self._output_tail(run, container_id)
        status = f"exited {code}" if code is not None else "was removed"
        reason = f"app crashed at start: {status}"
        raise StageFailed(Stage.STARTING, f"{reason}: {output}" if output else reason)

    async def _output_tail(self, run: _Run, container_id: str) -> str:
        """The container's last lines (both streams, in order), redacted."""
        lines = await self.runtime.tail(container_id, REASON_TAIL_LINES)
        return "\n".join(run.log.redact(line) for line in lines if line.strip())

    async def _probe_once(
        self, container: ContainerInfo, port: int | None, healthcheck: str | None
    ) -> ProbeResult:
        if port is None:
            return ProbeResult(ok=container.running, detail="no port to probe")
        if healthcheck is not None and container.host_port is not None:
            url = f"http://{PUBLISH_HOST}:{container.host_port}{healthcheck}"
            return await self.probe.http(url, PROBE_TIMEOUT)
        # The container's own address, not the published port: Docker's userland proxy
        # accepts connections on the published port even when nothing listens behind it.
        if container.address:
            return await self.probe.tcp(container.address, port, PROBE_TIMEOUT)
        if container.host_port is not None:
            return await self.probe.tcp(PUBLISH_HOST, container.host_port, PROBE_TIMEOUT)
        return ProbeResult(ok=False, detail="the container has no address")

    # --- endings -------------------------------------------------------------------------

    async def _fail(self, run: _Run, stage: Stage, reason: str) -> WorkFailed:
        work = run.work
        with anyio.CancelScope(shield=True):
            try:
                await self._clean_up(run)
            except RuntimeFailure as e:
                # The report matters more: the next deployment or the node's restart
                # removes the leftovers by label.
                log.error("cannot clean up deployment %s: %s", work.deployment_id, e)
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 6] + " [...]"
        await run.log.line(LogStream.SYSTEM, f"failed while {stage.value.lower()}: {reason}")
        return WorkFailed(
            deployment_id=work.deployment_id,
            node_id=self.settings.node_id,
            attempt=work.attempt,
            stage=stage,
            reason=reason,
            commit=run.commit,
            at=self.clock(),
        )

    def _succeeded(
        self,
        work: DeployWork,
        container: ContainerInfo,
        commit: str,
        warnings: list[str],
        image: str,
        url: str,
    ) -> WorkSucceeded:
        return WorkSucceeded(
            deployment_id=work.deployment_id,
            node_id=self.settings.node_id,
            attempt=work.attempt,
            commit=commit,
            image=image,
            container_id=container.id,
            url=url,
            warnings=list(warnings),
            at=self.clock(),
        )

    async def _clean_up(self, run: _Run) -> None:
        """Undo a run that will not serve: the route first (back to the container that
        had it), then every container and image of the deployment."""
        if run.routed is not None:
            try:
                await self.routes.release(run.routed, hand_over=True)
            except ProxyError as e:
                log.error("cannot hand the route of %s back: %s", run.work.app, e)
        await self._discard(run.work)

    async def _discard(self, work: DeployWork) -> None:
        """Remove every container of the deployment, and its image (by label and tag)."""
        await self._remove_containers(work)
        # A rollback's tag goes, not the image it points at (its first tag keeps it).
        await self.runtime.remove_image(image_tag(work))
        await self.runtime.remove_image(deps_tag(work.app, str(work.deployment_id)))

    async def _remove_containers(self, work: DeployWork) -> None:
        """Remove every container of the deployment on this node (by label)."""
        for container in await self.runtime.find(ContainerQuery(labels=self._own(work))):
            await self.runtime.remove(container.id)

    # --- helpers -------------------------------------------------------------------------

    def _own(self, work: DeployWork) -> dict[str, str]:
        """The labels of the deployment's containers on this node. The node's too: another
        node on the same Docker engine may run the deployment now (it was placed again)."""
        return {LABEL_DEPLOYMENT: str(work.deployment_id), LABEL_NODE: str(self.settings.node_id)}

    async def _report(
        self, work: DeployWork, stage: Stage, commit: str | None, message: str = ""
    ) -> None:
        await self.send(
            StageReported(
                deployment_id=work.deployment_id,
                node_id=self.settings.node_id,
                attempt=work.attempt,
                stage=stage,
                commit=commit,
                message=message,
                at=self.clock(),
            )
        )

    def _labels(self, work: DeployWork, role: str, commit: str) -> dict[str, str]:
        return {
            LABEL_APP: work.app,
            LABEL_DEPLOYMENT: str(work.deployment_id),
            LABEL_ATTEMPT: str(work.attempt),
            LABEL_NODE: str(self.settings.node_id),
            LABEL_COMMIT: commit,
            LABEL_ROLE: role,
        }

    def _limits(self, work: DeployWork) -> Limits:
        wanted = work.requirements
        memory_cap = self.settings.app_memory_limit_mb
        cpus_cap = self.settings.app_cpus_limit
        return Limits(
            # 0 MB would mean "unlimited" to Docker: the cap applies instead.
            memory_mb=min(wanted.memory_mb or memory_cap, memory_cap),
            cpus=min(wanted.cpus, cpus_cap),
            pids=self.settings.app_pids_limit,
        )

    def _env(self, manifest: Manifest) -> dict[str, str]:
        env = dict(manifest.env)
        if manifest.config.port is not None:
            # Platforms conventionally tell an app its port in PORT; the manifest may override.
            env.setdefault("PORT", str(manifest.config.port))
        return env

    def _tail(self, run: _Run, stream: LogStream) -> str:
        lines = run.log.tail(stream, REASON_TAIL_LINES)
        return ("\n" + "\n".join(lines)) if lines else ""


def _build_failure(error: str, output: list[str]) -> str:
    """Why a build failed, in the words of the user's files, with the failing step's output.

    Docker's own error repeats the template's command line (of no use to the user), and
    its output interleaves the builder's step lines with what the step printed.
    """
    code = _NON_ZERO.search(error)
    status = f"exit code {code.group(1)}" if code else error
    if "pip install" in error:
        head = f"installing the Python dependencies from requirements.txt failed ({status})"
    elif "npm ci" in error or "npm install" in error:
        head = f"installing the Node dependencies from package.json failed ({status})"
    else:
        head = f"the image build failed: {error}"
    starts = [i for i, line in enumerate(output) if line.startswith(" ---> Running in ")]
    step = output[starts[-1] + 1 :] if starts else output
    shown = [line for line in step if not _BUILDER_NOISE.match(line) and _PROGRESS_BAR not in line]
    return "\n".join([head, *shown[-REASON_TAIL_LINES:]])


def _again(work: DeployWork) -> str | None:
    """What a run of the deployment's own image is, when ``work`` names it (the deployment
    ran before, on a node since lost): not a rollback."""
    if work.image is None or work.image != image_tag(work):
        return None
    return f"running its image {work.image} again"


def _unusable(info: ImageInfo | None, work: DeployWork) -> str | None:
    """Why a rollback cannot run this image as it is (None: it can)."""
    if info is None:
        return "is no longer on this node"
    if info.labels.get(LABEL_APP) != work.app:
        return f"is not an image of the app {work.app!r}"
    if LABEL_MANIFEST not in info.labels:
        return "does not carry the manifest it was built from"
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
