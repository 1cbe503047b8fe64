"""The node's git adapter against a real ``git daemon`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from shipwreck_contracts.gitpolicy import RemoteRef, check_repo_url
from shipwreck_node.gitcli import GitCli
from shipwreck_node.ports import BranchNotFound, GitError
from tests.support.gitdaemon import GitServer, Symlink, free_port, git, git_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

__all__ = ["git_server"]


def remote(url: str) -> RemoteRef:
    return check_repo_url(url, allow_private=True)


@pytest.fixture
def cli() -> GitCli:
    return GitCli(timeout=30)


async def test_resolve_gives_the_head_of_the_branch(git_server: GitServer, cli: GitCli) -> None:
    git_server.publish("app", {"a.txt": "one"})
    head = git_server.publish("app", {"a.txt": "two"})
    git_server.publish("app", {"a.txt": "other"}, branch="dev")
    assert await cli.resolve(remote(git_server.url("app")), "main") == head


async def test_resolve_matches_the_whole_branch_name(git_server: GitServer, cli: GitCli) -> None:
    git_server.publish("app", {"a.txt": "nested"}, branch="feature/main")
    with pytest.raises(BranchNotFound, match="'main' does not exist"):
        await cli.resolve(remote(git_server.url("app")), "main")


async def test_fetch_checks_out_exactly_the_commit_asked_for(
    git_server: GitServer, cli: GitCli, tmp_path: Path
) -> None:
    old = git_server.publish("app", {"a.txt": "one", "dir/b.txt": "b"})
    git_server.publish("app", {"a.txt": "two"})
    into = tmp_path / "checkout"
    checkout = await cli.fetch(remote(git_server.url("app")), "main", old, into)
    assert checkout.commit == old
    assert (into / "a.txt").read_text() == "one"
    assert (into / "dir" / "b.txt").read_text() == "b"
    assert git("rev-parse", "HEAD", cwd=into).strip() == old
    # Shallow: one commit of history, and no hook directory that could run anything.
    assert git("rev-list", "--count", "HEAD", cwd=into).strip() == "1"
    assert not (into / ".git" / "hooks").exists()


async def test_symlinks_are_reported_and_never_created(
    git_server: GitServer, cli: GitCli, tmp_path: Path
) -> None:
    commit = git_server.publish(
        "app", {"Shipwreck.toml": Symlink("/etc/passwd"), "lib/x": Symlink("../../outside")}
    )
    into = tmp_path / "checkout"
    checkout = await cli.fetch(remote(git_server.url("app")), "main", commit, into)
    assert checkout.symlinks == {"Shipwreck.toml", "lib/x"}
    manifest = into / "Shipwreck.toml"
    assert not manifest.is_symlink()
    assert manifest.read_text() == "/etc/passwd"  # the link's target, as plain text


async def test_fetch_refuses_a_directory_that_is_not_empty(
    git_server: GitServer, cli: GitCli, tmp_path: Path
) -> None:
    commit = git_server.publish("app", {"a.txt": "one"})
    into = tmp_path / "checkout"
    into.mkdir()
    (into / "stale").write_text("x")
    with pytest.raises(GitError, match="not empty"):
        await cli.fetch(remote(git_server.url("app")), "main", commit, into)


async def test_a_port_where_nothing_listens_fails_fast(cli: GitCli) -> None:
    url = f"git://127.0.0.1:{free_port()}/app.git"
    with anyio.fail_after(10), pytest.raises(GitError, match=r"could not read .*refused"):
        await cli.resolve(remote(url), "main")


async def test_file_urls_are_refused_by_git_itself(tmp_path: Path, cli: GitCli) -> None:
    # Defence in depth: even a URL that bypassed the policy cannot use the file transport.
    bare = tmp_path / "local.git"
    git("init", "--quiet", "--bare", str(bare))
    with pytest.raises(GitError, match="transport 'file' not allowed"):
        await cli.resolve(RemoteRef(url=f"file://{bare}", host=""), "main")


@dataclass
class SilentServer:
    """Accepts git connections and never answers; tells when the client hung up."""

    port: int
    accepted: anyio.Event
    closed: anyio.Event


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio's typed attribute
    server = SilentServer(port, anyio.Event(), anyio.Event())

    async def handle(stream: SocketStream) -> None:
        server.accepted.set()
        async with stream:
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                server.closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield server
        tg.cancel_scope.cancel()


async def test_a_hanging_remote_hits_the_timeout_and_git_is_killed(
    silent_server: SilentServer,
) -> None:
    cli = GitCli(timeout=1)
    url = f"git://127.0.0.1:{silent_server.port}/app.git"
    with pytest.raises(GitError, match=r"did not finish within 1 s \(SHIPWRECK_CLONE_TIMEOUT"):
        await cli.resolve(remote(url), "main")
    # The connection is closed because the git process is gone.
    with anyio.fail_after(5):
        await silent_server.closed.wait()


async def test_cancelling_a_clone_kills_git(silent_server: SilentServer, tmp_path: Path) -> None:
    cli = GitCli(timeout=300)
    url = f"git://127.0.0.1:{silent_server.port}/app.git"

    async def clone(tg: TaskGroup) -> None:
        await cli.fetch(remote(url), "main", "a" * 40, tmp_path / "checkout")

    async with anyio.create_task_group() as tg:
        tg.start_soon(clone, tg)
        with anyio.fail_after(10):
            await silent_server.accepted.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        await silent_server.closed.wait()
    leftovers = await anyio.run_process(
        ["pgrep", "-f", f"127.0.0.1:{silent_server.port}"], check=False
    )
    assert leftovers.stdout == b""
