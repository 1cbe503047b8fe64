"""Asking a remote for a branch head, the cheap way: one ref listing, never a clone."""

from __future__ import annotations

from typing import Protocol

from dulwich.client import get_transport_and_path
from dulwich.refs import Ref

from shipwreck_contracts.gitpolicy import check_branch, check_repo_url


class RemoteError(RuntimeError):
    """The remote could not be asked (unreachable, refused, not a repository)."""


class HeadLister(Protocol):
    """Tells the commit a branch points at on a remote."""

    def head(self, repo_url: str, branch: str) -> str | None:
        """The full commit id of ``branch``, or None when the branch does not exist."""
        ...


class DulwichLister:
    """``ls-remote`` in-process with dulwich: no git process per check.

    At thousands of watched branches a git process per check costs far more CPU than the
    check itself; dulwich speaks the protocol directly (v0/v1 on git://, smart HTTP).
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
        try:
            client, path = get_transport_and_path(repo_url)
            if hasattr(client, "_timeout"):
                client._timeout = self.timeout
            result = client.get_refs(
                path.encode() if isinstance(path, str) else path,
                protocol_version=0,
                ref_prefix=[ref],
            )
        except Exception as e:  # dulwich raises many types; all mean "could not ask"
            raise RemoteError(f"cannot list {repo_url}: {type(e).__name__}: {e}") from e
        sha = result.refs.get(ref)
        return sha.decode() if sha else None
