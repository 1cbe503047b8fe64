"""One deployment on one node: clone, build, test, start, check health, report.

Pure orchestration over the ports (`GitRemote`, `ContainerRuntime`, `HealthProbe`) and a
``send`` function for reports; no git, Docker or broker code lives here. Each step either
returns what the next one needs or raises `StageFailed` with a reason written for the
person who pushed the commit. Whatever happens, a deployment that does not end up serving
leaves no container behind: everything it created carries its deployment id label and is
removed by that label (also when the work is cancelled).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
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
from shipwreck_node.logsink import Clock, DeploymentLog, Send, utc_now
from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_ATTEMPT,
    LABEL_COMMIT,
    LABEL_DEPLOYMENT,
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
    Limits,
    ProbeResult,
    RunSpec,
    RuntimeFailure,
)
from shipwreck_node.settings import PUBLISH_HOST, NodeSettings
from shipwreck_node.templates import (
    NoTemplate,
    TemplateInputs,
    base_image,
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


def container_name(work: DeployWork, suffix: str = "") -> str:
    """``shipwreck-<app>-<first 12 hex digits of the deployment id>[-suffix]``."""
    name = f"shipwreck-{work.app}-{work.deployment_id.hex[:12]}"
    return f"{name}-{suffix}" if suffix else name


def image_tag(work: DeployWork) -> str:
    """``shipwreck/app-<app>:<deployment id>``: one image per deployment, for rollbacks."""
    return f"shipwreck/app-{work.app}:{work.deployment_id}"


def app_url(info: ContainerInfo) -> str:
    """Where the app answers on this node (until the reverse proxy routes it)."""
    return f"http://{PUBLISH_HOST}:{info.host_port}/" if info.host_port else ""


class Pipeline:
    """Runs `DeployWork` to a `WorkSucceeded` or a `WorkFailed`, reporting each stage."""

    def __init__(
        self,
        settings: NodeSettings,
        *,
        git: GitRemote,
        runtime: ContainerRuntime,
        probe: HealthProbe,
        send: Send,
        resolve: Resolver = resolve_host,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.git = git
        self.runtime = runtime
        self.probe = probe
        self.send = send
        self.resolve = resolve
        self.clock = clock

    async def deploy(
        self, work: DeployWork, deployment_log: DeploymentLog, on_started: OnStarted | None = None
    ) -> Outcome:
        """Deploy ``work``; report and return how it ended.

        Cancellation (CancelWork, shutdown) removes what was created and propagates; no
        report is sent then: the orchestrator records the cancellation itself.
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
                await self._discard(work)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, workdir, True)
        await self.send(outcome)
        return outcome

    # --- the stages ----------------------------------------------------------------------

    async def _deploy(self, run: _Run, on_started: OnStarted | None) -> WorkSucceeded:
        work = run.work
        remote = await self._check_remote(work)
        existing = await self._healthy_existing(work)
        if existing is not None:
            await run.log.line(LogStream.SYSTEM, "already running and healthy; nothing to do")
            if on_started is not None:
                on_started(work, existing)
            return self._succeeded(work, existing, existing.labels.get(LABEL_COMMIT, ""), [])
        await self._discard(work)

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
        container = await self._start(run, manifest)
        if on_started is not None:
            on_started(work, container)
        healthy = await self._wait_healthy(run, manifest, container)
        await self.runtime.keep_running(healthy.id)
        url = app_url(healthy)
        await run.log.line(LogStream.SYSTEM, f"running at {url}" if url else "running")
        return self._succeeded(work, healthy, run.commit, run.warnings)

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
            labels={LABEL_DEPLOYMENT: str(work.deployment_id), LABEL_ROLE: ROLE_APP},
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
        dockerfile = render_dockerfile(
            TemplateInputs(
                lang=config.lang,
                base_image=base.ref,
                run=config.run,
                port=config.port,
                dependency_files=frozenset(present),
                with_ca_bundle=ca_bundle is not None,
            )
        )
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
                    labels=self._labels(work, ROLE_APP, run.commit or ""),
                    on_output=run.log.write,
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

    async def _start(self, run: _Run, manifest: Manifest) -> ContainerInfo:
        work, config = run.work, manifest.config
        labels = self._labels(work, ROLE_APP, run.commit or "")
        if config.port is not None:
            labels[LABEL_PORT] = str(config.port)
        spec = RunSpec(
            image=image_tag(work),
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
                await self._discard(work)
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
        self, work: DeployWork, container: ContainerInfo, commit: str, warnings: list[str]
    ) -> WorkSucceeded:
        return WorkSucceeded(
            deployment_id=work.deployment_id,
            node_id=self.settings.node_id,
            attempt=work.attempt,
            commit=commit,
            image=image_tag(work),
            container_id=container.id,
            url=app_url(container),
            warnings=list(warnings),
            at=self.clock(),
        )

    async def _discard(self, work: DeployWork) -> None:
        """Remove every container of the deployment, and its image (by label and tag)."""
        query = ContainerQuery(labels={LABEL_DEPLOYMENT: str(work.deployment_id)})
        for container in await self.runtime.find(query):
            await self.runtime.remove(container.id)
        await self.runtime.remove_image(image_tag(work))

    # --- helpers -------------------------------------------------------------------------

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


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
