"""Files a user pushed are read only if they are regular files inside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipwreck_contracts import MAX_MANIFEST_BYTES
from shipwreck_node.checkout import UnsafeRepoFile, find_manifest, read_repo_file
from shipwreck_node.ports import Checkout


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "checkout"
    path.mkdir()
    return path


def checkout(root: Path, symlinks: frozenset[str] = frozenset()) -> Checkout:
    return Checkout(path=root, commit="b" * 40, symlinks=symlinks)


def test_the_first_manifest_name_present_wins(root: Path) -> None:
    (root / "Config.toml").write_text("c")
    (root / "shipwreck.toml").write_text("s")
    assert find_manifest(checkout(root)) == ("shipwreck.toml", b"s")


def test_no_manifest_is_none(root: Path) -> None:
    (root / "README.md").write_text("hi")
    assert find_manifest(checkout(root)) is None


def test_a_symlink_on_disk_pointing_outside_is_never_followed(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    os.symlink(secret, root / "Shipwreck.toml")
    with pytest.raises(UnsafeRepoFile, match="is a symbolic link"):
        find_manifest(checkout(root))


def test_a_file_git_recorded_as_a_symlink_is_refused(root: Path) -> None:
    # With core.symlinks=false the link is checked out as a text file holding its target.
    (root / "requirements.txt").write_text("/etc/shadow")
    links = frozenset({"requirements.txt"})
    with pytest.raises(UnsafeRepoFile, match="symbolic link in the repository"):
        read_repo_file(checkout(root, links), "requirements.txt", 1024)


def test_a_manifest_recorded_as_a_symlink_is_refused_even_if_absent_on_disk(root: Path) -> None:
    with pytest.raises(UnsafeRepoFile, match="symbolic link"):
        find_manifest(checkout(root, frozenset({"Shipwreck.toml"})))


def test_a_directory_is_not_a_file(root: Path) -> None:
    (root / "package.json").mkdir()
    with pytest.raises(UnsafeRepoFile, match="not a regular file"):
        read_repo_file(checkout(root), "package.json", 1024)


def test_paths_are_names_at_the_root_only(root: Path) -> None:
    with pytest.raises(UnsafeRepoFile):
        read_repo_file(checkout(root), "../etc/passwd", 1024)


def test_an_oversized_manifest_is_refused_unread(root: Path) -> None:
    (root / "Shipwreck.toml").write_bytes(b"#" * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(UnsafeRepoFile, match="more than the limit"):
        find_manifest(checkout(root))


def test_an_absent_file_is_none(root: Path) -> None:
    assert read_repo_file(checkout(root), "requirements.txt", 1024) is None
