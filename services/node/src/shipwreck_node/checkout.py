"""Reading files a user pushed, without ever following them out of the checkout.

A repository can record ``Shipwreck.toml -> /etc/shadow`` as a symbolic link. The checkout
is made with ``core.symlinks=false``, so no link exists on disk, but the files that git
recorded as links are still refused by name, and every path is resolved and checked to stay
inside the checkout, so that a checkout made some other way is just as safe.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from shipwreck_contracts import MANIFEST_FILENAMES, MAX_MANIFEST_BYTES, find_manifest_filename
from shipwreck_node.ports import Checkout

MAX_DEPENDENCY_FILE_BYTES: Final = 1024 * 1024
"""A requirements.txt or package.json is a few kB; a huge one is refused before reading."""


class UnsafeRepoFile(Exception):
    """A file the node will not read or use; the message says which and why."""


def repo_file(checkout: Checkout, name: str) -> Path | None:
    """The path of the regular file ``name`` at the checkout's root, or None if absent.

    Raises `UnsafeRepoFile` for a symbolic link (in git or on disk), a path that resolves
    outside the checkout, or anything that is not a regular file.
    """
    if "/" in name or name in ("", ".", ".."):
        raise UnsafeRepoFile(f"{name!r} is not a file name at the repository root")
    if name in checkout.symlinks:
        raise UnsafeRepoFile(
            f"{name} is a symbolic link in the repository; Shipwreck reads only regular "
            "files (commit the file itself, not a link to it)"
        )
    root = checkout.path.resolve()
    path = checkout.path / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRepoFile(
            f"{name} is a symbolic link; Shipwreck reads only regular files "
            "(commit the file itself, not a link to it)"
        )
    if not path.resolve().is_relative_to(root):
        raise UnsafeRepoFile(f"{name} resolves outside the repository")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeRepoFile(f"{name} is not a regular file")
    return path


def read_repo_file(checkout: Checkout, name: str, max_bytes: int) -> bytes | None:
    """The bytes of ``name`` at the checkout's root (see `repo_file`), or None if absent.

    Refuses files larger than ``max_bytes`` without reading them.
    """
    path = repo_file(checkout, name)
    if path is None:
        return None
    # O_NOFOLLOW: if the file was swapped for a link after the check, opening fails.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise UnsafeRepoFile(f"{name} is {size} bytes, more than the limit of {max_bytes}")
        return f.read(max_bytes)


def find_manifest(checkout: Checkout) -> tuple[str, bytes] | None:
    """The manifest's file name and bytes, looked up in ``MANIFEST_FILENAMES`` order."""
    present = set(os.listdir(checkout.path)) | (checkout.symlinks & set(MANIFEST_FILENAMES))
    name = find_manifest_filename(present)
    if name is None:
        return None
    data = read_repo_file(checkout, name, MAX_MANIFEST_BYTES)
    return (name, data) if data is not None else None


def has_regular_file(checkout: Checkout, name: str) -> bool:
    """Whether ``name`` is a regular file at the root (raises `UnsafeRepoFile` for a link)."""
    return repo_file(checkout, name) is not None
