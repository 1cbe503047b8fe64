"""The git CLI as the node's `GitRemote`: hardened, time-limited and killable.

Every git process runs with

- ``GIT_ALLOW_PROTOCOL=https:ssh:git`` and ``-c protocol.file.allow=never``: even a URL that
  slipped past ``gitpolicy`` (or a redirect, or a submodule) cannot reach ``file://`` or a
  transport helper such as ``ext::``;
- ``GIT_TERMINAL_PROMPT=0`` and ``ssh -o BatchMode=yes``: a remote that asks for a password
  fails at once instead of hanging on a prompt nobody sees;
- no hooks (``git init --template=`` and ``core.hooksPath=/dev/null``), no fsmonitor, no
  submodules, no LFS smudging, and ``core.symlinks=false``: a checkout never contains a
  symbolic link;
- ``--`` before every URL, and in its own process group, so that cancelling the caller or
  hitting the timeout kills git and the helpers it started (``git-remote-https``, ``ssh``).

The URL given is a `RemoteRef`, i.e. one that ``gitpolicy.check_repo_url`` accepted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import ByteReceiveStream, Process

from shipwreck_contracts.gitpolicy import RemoteRef
from shipwreck_node.ports import BranchNotFound, Checkout, GitError

HARDENING: Final = (
    "-c", "protocol.file.allow=never",
    "-c", "protocol.ext.allow=never",
    "-c", "core.symlinks=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "submodule.recurse=false",
    "-c", "fetch.recurseSubmodules=false",
    "-c", "init.defaultBranch=main",
    # Version 2 lets a server hand out any commit by id (rollbacks pin old commits).
    "-c", "protocol.version=2",
)  # fmt: skip
ALLOWED_PROTOCOLS: Final = "https:ssh:git"
_SHA: Final = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")
_MAX_STDERR: Final = 4096
_SYMLINK_MODE: Final = "120000"


def git_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git process: ``base`` without git's own variables, hardened."""
    source = os.environ if base is None else base
    # GIT_DIR, GIT_CONFIG_PARAMETERS, GIT_EXEC_PATH ... from the node's own environment
    # would change what git does; the operator's ssh command (deploy keys) is kept.
    env = {k: v for k, v in source.items() if not k.startswith("GIT_")}
    env.pop("SSH_ASKPASS", None)
    env.update(
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        GIT_TERMINAL_PROMPT="0",
        GIT_LFS_SKIP_SMUDGE="1",
        GCM_INTERACTIVE="never",
        GIT_SSH_COMMAND=source.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        # Messages in English, so that errors read the same on every node.
        LC_ALL="C",
    )
    return env


class GitCli:
    """`GitRemote` over the ``git`` executable."""

    def __init__(self, *, timeout: float, git: str = "git", setting: str = "") -> None:
        self.timeout = timeout
        self.git = git
        self.setting = setting or "SHIPWRECK_CLONE_TIMEOUT_SECONDS"

    async def resolve(self, remote: RemoteRef, branch: str) -> str:
        """The commit at ``refs/heads/<branch>`` of ``remote`` (``git ls-remote``)."""
        ref = f"refs/heads/{branch}"
        out = await self._run(["ls-remote", "--", remote.url, ref], doing=f"read {remote.url}")
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            # ls-remote matches patterns by their tail: refs/heads/x/main matches "main" too.
            if name == ref and _SHA.match(sha):
                return sha
        raise BranchNotFound(f"branch {branch!r} does not exist in {remote.url}")

    async def fetch(self, remote: RemoteRef, branch: str, commit: str, into: Path) -> Checkout:
        """Fetch exactly ``commit`` (depth 1) into the new directory ``into``, check it out."""
        if not _SHA.match(commit):
            raise GitError(f"{commit!r} is not a full commit id")
        if not await anyio.to_thread.run_sync(_make_empty_dir, into):
            raise GitError(f"{into} is not empty; a checkout starts from an empty directory")
        where = ["-C", str(into)]
        await self._run(["init", "--quiet", "--template=", str(into)], doing="prepare a checkout")
        fetch = [*where, "fetch", "--quiet", "--depth=1", "--no-tags", "--no-recurse-submodules"]
        doing = f"fetch {commit[:12]} from {remote.url}"
        try:
            await self._run([*fetch, "--", remote.url, commit], doing=doing)
        except GitError:
            # Servers speaking only protocol v0/v1 hand out branch tips, not arbitrary
            # commits: fetch the branch and make sure it is still at the commit resolved.
            await self._run([*fetch, "--", remote.url, f"refs/heads/{branch}"], doing=doing)
            head = (await self._run([*where, "rev-parse", "FETCH_HEAD"], doing=doing)).strip()
            if head != commit:
                raise GitError(
                    f"cannot fetch commit {commit} from {remote.url}: the server serves only "
                    f"branch tips, and {branch!r} is now at {head}"
                ) from None
        await self._run(
            [*where, "checkout", "--quiet", "--detach", commit, "--"], doing=f"check out {commit}"
        )
        tree = await self._run(
            [*where, "ls-tree", "-r", "-z", "--full-tree", "HEAD"], doing="list the checkout"
        )
        return Checkout(path=into, commit=commit, symlinks=_symlinks(tree))

    async def _run(self, args: Sequence[str], *, doing: str) -> str:
        """Run git; its stdout, or `GitError` with its last error lines."""
        command = [self.git, *HARDENING, *args]
        try:
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=git_environment(),
                start_new_session=True,
            )
        except OSError as e:
            raise GitError(f"cannot run {self.git}: {e}") from None
        try:
            with anyio.fail_after(self.timeout):
                stdout, stderr = await _communicate(process)
                code = await process.wait()
        except TimeoutError:
            await _kill(process)
            raise GitError(
                f"could not {doing}: git did not finish within {self.timeout:g} s ({self.setting})"
            ) from None
        except BaseException:
            # Cancelled (CancelWork, shutdown): git and its helpers must not live on.
            await _kill(process)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
        if code != 0:
            message = _last_lines(stderr.decode(errors="replace")) or f"git exited {code}"
            raise GitError(f"could not {doing}: {message}")
        return stdout.decode(errors="replace")


async def _communicate(process: Process) -> tuple[bytes, bytes]:
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    async def drain(stream: ByteReceiveStream | None, key: str) -> None:
        if stream is None:
            return
        async for chunk in stream:
            chunks[key].append(chunk)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, process.stdout, "out")
        tg.start_soon(drain, process.stderr, "err")
    return b"".join(chunks["out"]), b"".join(chunks["err"])[-_MAX_STDERR:]


def _make_empty_dir(path: Path) -> bool:
    """Create ``path``; False if it exists and is not empty."""
    if path.exists() and any(path.iterdir()):
        return False
    path.mkdir(parents=True, exist_ok=True)
    return True


async def _kill(process: Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    with anyio.CancelScope(shield=True):
        await process.wait()


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])


def _symlinks(ls_tree: str) -> frozenset[str]:
    # "<mode> <type> <object>\t<path>\0" per entry; -z keeps odd file names intact.
    links = set()
    for entry in ls_tree.split("\0"):
        meta, _, path = entry.partition("\t")
        if meta.split(" ", 1)[0] == _SYMLINK_MODE:
            links.add(path)
    return frozenset(links)
