"""A real Git server for tests: bare repositories served by ``git daemon`` on 127.0.0.1.

Repositories are made with the git CLI from file trees (usually a fixture app from
``tests/support/apps`` with a few files changed), so the node clones exactly what a user
would push. The daemon runs with ``--verbose``: its "Ready to rumble" line says it listens,
its "Connection from" lines let a test prove that a refused URL never reached it, and its
"Request upload-pack for '/<repo>.git'" lines count the fetches and ref listings of each
repository (`GitServer.requests`).

A repository can be held (`GitServer.hold`): every fetch of it then stalls on the server,
after the refs were listed and before a single object is sent, until it is released. The
daemon's ``uploadpack.packObjectsHook`` (a protected setting, given on its command line
through ``GIT_CONFIG_*``) waits while the repository holds a ``shipwreck-hold`` file: a
clone that is really under way, and slow for as long as the test wants.

Use the ``git_server`` fixture (one server per test), or ``serve_git`` for a wider scope.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"
READY_TIMEOUT = 10.0
HOLD_FILE = "shipwreck-hold"
# Run for every fetch in the repository's directory, with the pack-objects command line as
# its arguments. A held fetch is logged once, then waits for the hold file to go; a release
# (or the end of the server) lets it send its pack to whoever is still listening.
_PACK_HOOK = f"""#!/bin/sh
if [ -e {HOLD_FILE} ]; then
    echo "$(basename "$PWD")" >> "$SHIPWRECK_TEST_HELD_LOG"
    while [ -e {HOLD_FILE} ]; do sleep 0.05; done
fi
exec "$@"
"""
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Shipwreck Tests",
    "GIT_AUTHOR_EMAIL": "tests@shipwreck.invalid",
    "GIT_COMMITTER_NAME": "Shipwreck Tests",
    "GIT_COMMITTER_EMAIL": "tests@shipwreck.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


@dataclass(frozen=True)
class Symlink:
    """A symbolic link to commit (git records it as mode 120000)."""

    target: str


FileContent = str | bytes | Symlink


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_files(app: str) -> dict[str, FileContent]:
    """The files of the fixture app ``tests/support/apps/<app>`` (relative path -> bytes)."""
    root = APPS / app
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git for a test fixture; its stdout."""
    env = {**os.environ, **_GIT_ENV}
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class GitServer:
    """Bare repositories under ``root/repos``, served at ``git://127.0.0.1:<port>/``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.repos = root / "repos"
        self.work = root / "work"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log: list[str] = []

    def url(self, repo: str) -> str:
        """The git:// URL of ``repo``."""
        return f"git://127.0.0.1:{self.port}/{repo}.git"

    @property
    def connections(self) -> list[str]:
        """The daemon's "Connection from ..." log lines so far."""
        return [line for line in self.log if "Connection from" in line]

    def requests(self, repo: str) -> int:
        """How many times ``repo`` was asked for so far: fetches, clones and ref listings
        alike (each is one upload-pack request, logged once by the daemon)."""
        wanted = f"Request upload-pack for '/{repo}.git'"
        return sum(1 for line in list(self.log) if line.endswith(wanted))

    @property
    def held_log(self) -> Path:
        """Where the pack-objects hook logs each fetch it holds (one repository a line)."""
        return self.root / "held.log"

    def hold(self, repo: str) -> None:
        """From now on, stall every fetch of ``repo`` until `release` (see the module)."""
        (self.repos / f"{repo}.git" / HOLD_FILE).touch()

    def release(self, repo: str) -> None:
        """Let the held fetches of ``repo`` go on, and the next ones through."""
        (self.repos / f"{repo}.git" / HOLD_FILE).unlink(missing_ok=True)

    def held(self, repo: str) -> int:
        """How many fetches of ``repo`` have been held so far."""
        if not self.held_log.exists():
            return 0
        lines = self.held_log.read_text().splitlines()
        return sum(1 for line in lines if line == f"{repo}.git")

    def publish(
        self,
        repo: str,
        files: Mapping[str, FileContent],
        *,
        branch: str = "main",
        message: str = "deploy me",
    ) -> str:
        """Commit exactly ``files`` as the new head of ``branch`` of ``repo``; the commit id.

        Commits accumulate: the previous head stays reachable as the parent.
        """
        bare = self.repos / f"{repo}.git"
        if not bare.exists():
            git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        tree = self.work / repo
        if not tree.exists():
            git("init", "--quiet", "--initial-branch=main", str(tree))
        git("checkout", "--quiet", "-B", branch, cwd=tree)
        for entry in tree.iterdir():
            if entry.name != ".git":
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for name, content in files.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Symlink):
                path.symlink_to(content.target)
            else:
                path.write_bytes(content.encode() if isinstance(content, str) else content)
        git("add", "--all", cwd=tree)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=tree)
        git("push", "--quiet", "--force", str(bare), f"HEAD:refs/heads/{branch}", cwd=tree)
        return git("rev-parse", "HEAD", cwd=tree).strip()

    def publish_app(
        self,
        repo: str,
        app: str,
        *,
        overrides: Mapping[str, FileContent] | None = None,
        remove: tuple[str, ...] = (),
        branch: str = "main",
    ) -> str:
        """Commit the fixture app ``app`` with some files changed, added or removed."""
        files = {k: v for k, v in app_files(app).items() if k not in remove}
        files.update(overrides or {})
        return self.publish(repo, files, branch=branch)


@contextlib.contextmanager
def serve_git(root: Path) -> Iterator[GitServer]:
    """Run ``git daemon`` for repositories under ``root`` until the block ends."""
    server = GitServer(root, free_port())
    hook = root / "pack-objects-hook"
    hook.write_text(_PACK_HOOK)
    hook.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env.update(
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="uploadpack.packObjectsHook",
        GIT_CONFIG_VALUE_0=str(hook),
        SHIPWRECK_TEST_HELD_LOG=str(server.held_log),
    )
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--verbose",
            "--reuseaddr",
            "--export-all",
            f"--base-path={server.repos}",
            "--listen=127.0.0.1",
            f"--port={server.port}",
            str(server.repos),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ready = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            server.log.append(line.rstrip())
            if "Ready to rumble" in line:
                ready.set()
        ready.set()  # the daemon died: stop waiting (the check below says so)

    reader = threading.Thread(target=read_log, name="git-daemon-log", daemon=True)
    reader.start()
    try:
        if not ready.wait(READY_TIMEOUT) or process.poll() is not None:
            raise RuntimeError(f"git daemon did not start: {server.log}")
        yield server
    finally:
        # Held fetches end with the server (their hooks would outlive the daemon).
        for held in server.repos.glob(f"*.git/{HOLD_FILE}"):
            held.unlink(missing_ok=True)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    """A git daemon on 127.0.0.1 serving repositories made by the test."""
    with serve_git(tmp_path / "git") as server:
        yield server
