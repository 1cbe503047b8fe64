"""Which Git remotes and branches Shipwreck will touch, decided before any connection.

Accepted: ``https://``, ``ssh://``, ``git://`` and scp-like ``user@host:path`` remotes.
Refused: ``file://``, local paths, transport helpers (``ext::``, ``fd::``), option injection
(``--upload-pack=...``), credentials in the URL, and hosts that are or resolve to loopback,
private, link-local, multicast or unspecified addresses, unless private remotes are allowed
(``SHIPWRECK_GIT_ALLOW_PRIVATE=true``). Resolution is a DNS look-up through the injected
``resolve`` function; no connection to the remote is made here or on refusal.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

ALLOWED_SCHEMES: Final = ("https", "ssh", "git")
ALLOWED_DESCRIPTION: Final = (
    "https://host/path, ssh://[user@]host/path, git://host/path or user@host:path"
)
_SCP_LIKE: Final = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>.+)$")
_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)

Resolver = Callable[[str], Sequence[str]]
"""Maps a host name to the IP addresses it resolves to (empty when it does not resolve)."""


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to, by DNS (no connection is made)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class RemoteRef:
    """A remote that passed the policy: the URL to give git, and its host."""

    url: str
    host: str


class RefusedRemote(ValueError):
    """A repository URL or branch that Shipwreck will not use; the message says why."""


def check_repo_url(
    url: str, *, allow_private: bool = False, resolve: Resolver = resolve_host
) -> RemoteRef:
    """Accept ``url`` as a Git remote or raise :class:`RefusedRemote` naming the problem."""
    text = url.strip()
    if not text:
        raise RefusedRemote(f"the repository URL is empty; allowed: {ALLOWED_DESCRIPTION}")
    if text.startswith("-"):
        raise RefusedRemote(
            f"the repository URL {text!r} starts with '-' (it would be read as a git option); "
            f"allowed: {ALLOWED_DESCRIPTION}"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in text):
        raise RefusedRemote(
            "the repository URL contains whitespace or control characters; "
            f"allowed: {ALLOWED_DESCRIPTION}"
        )
    if "::" in text.split("/", 1)[0]:
        raise RefusedRemote(
            f"{text!r} uses a git transport helper ('<helper>::'), which runs commands; "
            f"allowed: {ALLOWED_DESCRIPTION}"
        )
    host: str
    if "://" in text:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise RefusedRemote(
                f"the repository URL scheme {scheme + '://'!r} is not allowed; "
                f"allowed: {ALLOWED_DESCRIPTION}"
            )
        if parts.password is not None or (scheme != "ssh" and parts.username is not None):
            raise RefusedRemote(
                "the repository URL carries credentials; Shipwreck never stores secrets in "
                "clear: use a public URL or an ssh:// remote with a deploy key"
            )
        try:
            host = parts.hostname or ""
            _ = parts.port
        except ValueError as e:
            raise RefusedRemote(f"the repository URL {text!r} is malformed: {e}") from None
        if not parts.path.strip("/"):
            raise RefusedRemote(f"the repository URL {text!r} names no repository path")
    else:
        match = _SCP_LIKE.match(text)
        if match is None:
            raise RefusedRemote(
                f"{text!r} is not a remote URL (local paths and file:// are refused); "
                f"allowed: {ALLOWED_DESCRIPTION}"
            )
        host = match["host"]
    host = host.strip("[]").lower()
    if not host:
        raise RefusedRemote(f"the repository URL {text!r} names no host")
    _check_host(host, allow_private=allow_private, resolve=resolve)
    return RemoteRef(url=text, host=host)


def _check_host(host: str, *, allow_private: bool, resolve: Resolver) -> None:
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = []
    if not addresses:
        if not _HOSTNAME.match(host):
            raise RefusedRemote(f"{host!r} is not a valid host name")
        if allow_private:
            return  # nothing to refuse: skip the look-up
        addresses = list(resolve(host))
        if not addresses:
            raise RefusedRemote(f"the repository host {host!r} does not resolve")
    if allow_private:
        return
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        kind = _non_public_kind(ip)
        if kind is not None:
            shown = host if host == address else f"{host} ({address})"
            article = "an" if kind[0] in "aeiou" else "a"
            raise RefusedRemote(
                f"the repository host {shown} is {article} {kind} address; such remotes are "
                "refused unless SHIPWRECK_GIT_ALLOW_PRIVATE=true"
            )


def _non_public_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private"
    return None


_BRANCH_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_branch(branch: str) -> str:
    """Accept ``branch`` (git check-ref-format rules) or raise :class:`RefusedRemote`."""
    allowed = (
        "a git branch name: no leading '-', no '..', no spaces, control characters "
        "or any of ~ ^ : ? * [ \\, not ending in '/' or '.lock'"
    )
    problem = None
    if not branch:
        problem = "is empty"
    elif branch.startswith("-"):
        problem = "starts with '-' (it would be read as a git option)"
    elif ".." in branch:
        problem = "contains '..'"
    elif _BRANCH_FORBIDDEN.search(branch):
        problem = "contains a space, control character or one of ~ ^ : ? * [ \\"
    elif branch.endswith(("/", ".lock", ".")) or branch.startswith("/") or "//" in branch:
        problem = "has an empty path component or ends in '/', '.' or '.lock'"
    elif "@{" in branch or branch == "@":
        problem = "contains '@{' or is '@'"
    elif any(part.startswith(".") for part in branch.split("/")):
        problem = "has a component starting with '.'"
    elif len(branch) > 255:
        problem = "is longer than 255 characters"
    if problem is not None:
        raise RefusedRemote(f"branch {branch[:80]!r} {problem}; allowed: {allowed}")
    return branch


def app_name_from_url(url: str) -> str:
    """A DNS-label app name from the repo's last path segment (``my_App.git`` -> ``my-app``)."""
    path = url.rstrip("/").split(":")[-1] if "://" not in url else urlsplit(url).path
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last.endswith(".git"):
        last = last[:-4]
    label = re.sub(r"[^a-z0-9-]+", "-", last.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:63].strip("-")
    return label or "app"
