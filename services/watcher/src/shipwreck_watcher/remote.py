"""Asking a remote for a branch head, the cheap way: one ref listing, never a clone."""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from dulwich.client import (
    GitClient,
    SSHGitClient,
    SubprocessSSHVendor,
    SubprocessWrapper,
    TCPGitClient,
    get_transport_and_path,
)
from dulwich.protocol import TCP_GIT_PORT
from dulwich.protocol import Protocol as GitProtocol
from dulwich.refs import Ref

from shipwreck_contracts.gitpolicy import check_branch, check_repo_url

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

TIMEOUT_SETTING = "SHIPWRECK_LS_REMOTE_TIMEOUT_SECONDS"


class RemoteError(RuntimeError):
    """The remote could not be asked (unreachable, refused, silent, not a repository)."""


class HeadLister(Protocol):
    """Tells the commit a branch points at on a remote."""

    def head(self, repo_url: str, branch: str) -> str | None:
        """The full commit id of ``branch``, or None when the branch does not exist."""
        ...


class DulwichLister:
    """``ls-remote`` in-process with dulwich: no git process per check.

    At thousands of watched branches a git process per check costs far more CPU than the
    check itself; dulwich speaks the protocol directly (v0/v1 on git://, smart HTTP).

    ``timeout`` bounds every wait on the remote, whatever its scheme: connecting and each
    read of its answer (https:// through dulwich's HTTP timeout; git:// on a socket with a
    timeout; ssh:// by killing the ``ssh`` process when its answer is that late). A check
    past it fails with a :class:`RemoteError` naming the remote and the limit, so a remote
    that accepts and never answers frees its concurrency slot.
    """

    def __init__(self, *, allow_private: bool, timeout: float) -> None:
        self.allow_private = allow_private
        self.timeout = timeout

    def head(self, repo_url: str, branch: str) -> str | None:
        """The commit of ``refs/heads/<branch>`` on ``repo_url``."""
        # The URL policy runs before any connection, every time (DNS may have changed).
        check_repo_url(repo_url, allow_private=self.allow_private)
        check_branch(branch)
        ref = Ref(f"refs/heads/{branch}".encode())
        with ExitStack() as opened:
            try:
                client, path = self._client(repo_url, opened)
                result = client.get_refs(
                    path.encode() if isinstance(path, str) else path,
                    protocol_version=0,
                    ref_prefix=[ref],
                )
            except Exception as e:  # dulwich raises many types; all mean "could not ask"
                if _timed_out(e):
                    raise RemoteError(
                        f"cannot list {repo_url}: no answer within {self.timeout:g} s "
                        f"({TIMEOUT_SETTING})"
                    ) from e
                raise RemoteError(f"cannot list {repo_url}: {type(e).__name__}: {e}") from e
        sha = result.refs.get(ref)
        return sha.decode() if sha else None

    def _client(self, repo_url: str, opened: ExitStack) -> tuple[GitClient, str]:
        """A client for ``repo_url`` whose waits are bounded; ``opened`` closes whatever it
        leaves open (dulwich closes nothing when the first read fails)."""
        parts = urlsplit(repo_url)
        if parts.scheme.lower() == "git":
            assert parts.hostname is not None  # the URL policy requires a host
            tcp = TimedTCPGitClient(parts.hostname, parts.port, timeout=self.timeout)
            opened.callback(tcp.close)
            return tcp, parts.path
        client, path = get_transport_and_path(repo_url)
        if isinstance(client, SSHGitClient):  # ssh:// and user@host:path
            vendor = TimedSSHVendor(self.timeout)
            opened.callback(vendor.close)
            client.ssh_vendor = vendor
        elif hasattr(client, "_timeout"):  # https://: dulwich's HTTP client takes one
            client._timeout = self.timeout
        return client, path


class TimedTCPGitClient(TCPGitClient):
    """A git:// client whose socket has a timeout, so connecting and every read and write
    give up after ``timeout`` seconds (:class:`TCPGitClient` opens its socket with none).

    ``_connect`` is the transport hook :class:`dulwich.client.TraditionalGitClient` leaves
    to its subclasses: this one sends the same request, on a socket of its own. It speaks
    to ``git daemon`` directly, never through a ``core.gitProxy`` command.
    """

    def __init__(self, host: str, port: int | None = None, *, timeout: float) -> None:
        super().__init__(host, port)
        self.address = (host, port or TCP_GIT_PORT)
        self.timeout = timeout
        self._opened: list[GitProtocol] = []

    def _connect(
        self,
        cmd: bytes,
        path: str | bytes,
        protocol_version: int | None = None,
    ) -> tuple[GitProtocol, Callable[[], bool], IO[bytes] | None]:
        if isinstance(path, str):
            path = path.encode(self._remote_path_encoding)
        if path.startswith(b"/~"):  # git://host/~user/repo is relative to user's home
            path = path[1:]
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb", -1)
        wfile = sock.makefile("wb", 0)

        def close() -> None:
            rfile.close()
            wfile.close()
            sock.close()

        proto = GitProtocol(rfile.read, wfile.write, close, report_activity=self._report_activity)
        self._opened.append(proto)
        # Version 2 is asked for behind two NULs (older daemons read only "host=" there);
        # pushes always speak version 0.
        self.protocol_version = (protocol_version or 0) if cmd == b"upload-pack" else 0
        version = b"\0\0version=2\0" if self.protocol_version == 2 else b""
        proto.send_cmd(b"git-" + cmd, path, b"host=" + self.address[0].encode("ascii") + version)
        return proto, lambda: bool(select.select([sock], [], [], 0)[0]), None

    def close(self) -> None:
        """Close every connection this client opened (closing one twice is harmless)."""
        for proto in self._opened:
            proto.close()
        self._opened.clear()


class TimedSSHVendor(SubprocessSSHVendor):
    """Runs ``ssh`` like :class:`SubprocessSSHVendor`, but waits at most ``timeout`` seconds
    at a time for its output: past that the ``ssh`` process is killed and the read fails
    with :class:`TimeoutError`. This covers connecting, authenticating and a remote git
    that never answers alike, with no ssh option to add to the operator's ssh command."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._opened: list[tuple[SubprocessWrapper, Callable[[int], bytes]]] = []

    def run_command(
        self,
        host: str,
        command: bytes,
        username: str | None = None,
        port: int | None = None,
        password: str | None = None,
        key_filename: str | None = None,
        ssh_command: str | None = None,
        protocol_version: int | None = None,
    ) -> SubprocessWrapper:
        """Start ``ssh`` running ``command`` on ``host``; its output is read with a limit."""
        con = super().run_command(
            host,
            command,
            username=username,
            port=port,
            password=password,
            key_filename=key_filename,
            ssh_command=ssh_command,
            protocol_version=protocol_version,
        )
        # dulwich reads the pipe through ``con.read`` with no limit: read it through one
        # that has. The first reader is kept, unused: it owns the pipe and would close it
        # under the new one when collected.
        untimed = con.read
        con.read = io.BufferedReader(_TimedPipe(con.proc, self.timeout)).read
        self._opened.append((con, untimed))
        return con

    def close(self) -> None:
        """Kill any ``ssh`` still running and reap it (a finished one is only reaped)."""
        for con, _ in self._opened:
            if con.proc.poll() is None:
                con.proc.kill()
            con.close()
        self._opened.clear()


class _TimedPipe(io.RawIOBase):
    """The stdout of ``proc``, where a read that waits longer than ``timeout`` kills it."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.timeout = timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            self.proc.kill()
            raise TimeoutError(f"no answer within {self.timeout:g} s")
        return os.readv(self.fd, [buffer])


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` comes of a wait that hit its timeout (dulwich wraps the
    :class:`TimeoutError` of a socket or pipe in its own errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, TimeoutError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
