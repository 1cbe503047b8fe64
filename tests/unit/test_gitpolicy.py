"""Which Git remotes and branches the platform touches, decided before any connection.

Every refusal must say why in words a user can act on, and must not cost a connection:
the tests replace the DNS look-up with a spy, and make every socket connection fail the
test, so "refused" here really means "nothing left this machine".
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import pytest

from shipwreck_contracts.gitpolicy import (
    RefusedRemote,
    check_branch,
    check_repo_url,
    resolve_host,
)

PUBLIC = "140.82.112.3"
NAMES = {
    "loopback.example.com": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "split.example.com": [PUBLIC, "10.1.2.3"],
    "github.com": [PUBLIC],
    "gitlab.example.org": [PUBLIC],
}


class ResolverSpy:
    """A DNS stand-in that records every look-up."""

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        self.looked_up.append(host)
        return NAMES.get(host, [])


@pytest.fixture
def resolver() -> ResolverSpy:
    return ResolverSpy()


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any TCP/UDP connection attempt during a test fails it."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"a connection to {address!r} was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert attempts == []


SYNTAX = "allowed: https://host/path"
LOCAL = "local paths and file:// are refused"
HELPER = "transport helper"
OPTION = "it would be read as a git option"
NOT_ALLOWED = "unless SHIPWRECK_GIT_ALLOW_PRIVATE=true"

# (URL, a fragment the refusal must contain). Refused on syntax or on a literal address:
# the resolver is never asked.
REFUSED_WITHOUT_LOOKUP = [
    ("file:///etc/passwd", "scheme 'file://' is not allowed"),
    ("FILE:///srv/git/app.git", "scheme 'file://' is not allowed"),
    ("/srv/git/app.git", LOCAL),
    ("../other/repo.git", LOCAL),
    ("./repo", LOCAL),
    ("repo.git", LOCAL),
    ("--upload-pack=/tmp/evil.sh", OPTION),
    ("-oProxyCommand=curl", OPTION),
    ("--upload-pack=touch /tmp/pwned", OPTION),
    ("ext::sh -c touch% /tmp/pwned", "whitespace"),
    ("ext::/bin/sh", HELPER),
    ("fd::3", HELPER),
    ("fd::0,1/repo", HELPER),
    ("https://169.254.169.254/latest/meta-data", "link-local address"),
    ("git://10.0.0.1/app.git", "10.0.0.1 is a private address"),
    ("https://192.168.1.1/app.git", "192.168.1.1 is a private address"),
    ("ssh://172.16.0.1/app.git", "172.16.0.1 is a private address"),
    ("git://127.0.0.1/app.git", "127.0.0.1 is a loopback address"),
    ("git://127.0.0.1:9418/app.git", NOT_ALLOWED),
    ("git@127.0.0.1:app.git", "loopback address"),
    ("https://[::1]/app.git", "::1 is a loopback address"),
    ("https://[::ffff:127.0.0.1]/app.git", "loopback address"),
    ("https://[fe80::1]/app.git", "link-local address"),
    ("https://0.0.0.0/app.git", "unspecified address"),
    ("https://224.0.0.1/app.git", "multicast address"),
    ("https://100.64.0.1/app.git", "private address"),
    ("https://user:secret@github.com/acme/app.git", "carries credentials"),
    ("https://ghp_token@github.com/acme/app.git", "carries credentials"),
    ("http://github.com/acme/app.git", "scheme 'http://' is not allowed"),
    ("ftp://github.com/acme/app.git", "scheme 'ftp://' is not allowed"),
    ("https://github.com", "names no repository path"),
    ("https://git hub.com/acme/app.git", "whitespace"),
    ("https://github.com/acme/app.git\n--upload-pack=x", "control characters"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("url", "fragment"), REFUSED_WITHOUT_LOOKUP)
def test_refused_on_sight_without_any_lookup(
    url: str, fragment: str, resolver: ResolverSpy
) -> None:
    with pytest.raises(RefusedRemote) as refused:
        check_repo_url(url, resolve=resolver)
    assert fragment in str(refused.value)
    assert resolver.looked_up == []


def test_there_are_at_least_twenty_ways_to_be_refused() -> None:
    assert len(REFUSED_WITHOUT_LOOKUP) >= 20


def test_every_refusal_says_what_is_allowed_or_how_to_allow_it(resolver: ResolverSpy) -> None:
    for url, _ in REFUSED_WITHOUT_LOOKUP:
        with pytest.raises(RefusedRemote) as refused:
            check_repo_url(url, resolve=resolver)
        message = str(refused.value)
        assert any(
            hint in message
            for hint in (SYNTAX, NOT_ALLOWED, "deploy key", "names no repository path")
        ), message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://loopback.example.com/app.git", "loopback.example.com (127.0.0.1) is a loopback"),
        ("https://metadata.example.com/app.git", "(169.254.169.254) is a link-local"),
        ("https://split.example.com/app.git", "(10.1.2.3) is a private address"),
        ("https://nowhere.invalid/app.git", "'nowhere.invalid' does not resolve"),
        ("git@loopback.example.com:acme/app.git", "is a loopback address"),
    ],
)
def test_names_are_judged_by_every_address_they_resolve_to(
    url: str, fragment: str, resolver: ResolverSpy
) -> None:
    with pytest.raises(RefusedRemote) as refused:
        check_repo_url(url, resolve=resolver)
    assert fragment in str(refused.value)
    host = url.split("@")[-1].split("//")[-1].split("/")[0].split(":")[0]
    assert resolver.looked_up == [host]


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "017700000001"])
def test_numeric_spellings_of_loopback_are_caught_by_the_real_lookup(host: str) -> None:
    # getaddrinfo reads these the way git and curl do, without asking a DNS server.
    with pytest.raises(RefusedRemote, match=r"\(127\.0\.0\.1\) is a loopback address"):
        check_repo_url(f"https://{host}/app.git", resolve=resolve_host)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/ethanshry/scapegoat",
        "https://github.com/acme/app.git",
        "https://gitlab.example.org:8443/group/sub/app.git",
        "ssh://git@github.com/acme/app.git",
        "ssh://github.com:2222/acme/app.git",
        "git://github.com/acme/app.git",
        "git@github.com:acme/app.git",
    ],
)
def test_public_remotes_are_accepted(url: str, resolver: ResolverSpy) -> None:
    remote = check_repo_url(url, resolve=resolver)
    assert remote.url == url
    assert remote.host in NAMES


def test_loopback_is_accepted_when_private_remotes_are_allowed(resolver: ResolverSpy) -> None:
    remote = check_repo_url("git://127.0.0.1:9418/app.git", allow_private=True, resolve=resolver)
    assert remote.host == "127.0.0.1"
    assert resolver.looked_up == []


def test_allowing_private_remotes_still_refuses_unsafe_syntax(resolver: ResolverSpy) -> None:
    for url in ("file:///srv/app.git", "ext::/bin/sh", "/srv/app.git", "--upload-pack=x"):
        with pytest.raises(RefusedRemote):
            check_repo_url(url, allow_private=True, resolve=resolver)
    assert resolver.looked_up == []


@pytest.mark.parametrize(
    ("branch", "fragment"),
    [
        ("-x", "starts with '-'"),
        ("--upload-pack=touch", "starts with '-'"),
        ("main..dev", "contains '..'"),
        ("ma\x01in", "control character"),
        ("ma\x7fin", "control character"),
        ("new feature", "a space"),
        ("main@{1}", "'@{'"),
        ("@", "is '@'"),
        ("release.lock", "'.lock'"),
        ("feature/", "ends in '/'"),
        ("/main", "empty path component"),
        ("a//b", "empty path component"),
        (".hidden", "starting with '.'"),
        ("feature/.x", "starting with '.'"),
        ("main~1", "~ ^ :"),
        ("main^", "~ ^ :"),
        ("refs:heads", "~ ^ :"),
        ("*", "~ ^ :"),
        ("", "is empty"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_bad_branches_are_refused(branch: str, fragment: str) -> None:
    with pytest.raises(RefusedRemote) as refused:
        check_branch(branch)
    assert fragment in str(refused.value)
    assert "allowed: a git branch name" in str(refused.value)


@pytest.mark.parametrize("branch", ["main", "feature/login", "release-1.2", "v2_x", "UPPER"])
def test_ordinary_branches_are_accepted(branch: str) -> None:
    assert check_branch(branch) == branch
