"""The names of an app's images, and which of them can go.

Every deployment that builds gets its own image, ``shipwreck/app-<app>:<deployment id>``
(a rollback tags the image it runs again the same way), and its dependency stage's image
is tagged ``shipwreck/deps-<app>:<deployment id>``: the classic builder would otherwise
leave that stage's image dangling, with nothing to tell when it can go. As long as a kept
deployment has the same dependencies, their image stays, and with it the build cache that
makes the next build skip the install.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from shipwreck_contracts import DeployWork
from shipwreck_node.ports import ImageInfo


def image_tag(work: DeployWork) -> str:
    """``shipwreck/app-<app>:<deployment id>``: one image per deployment, for rollbacks."""
    return f"shipwreck/app-{work.app}:{work.deployment_id}"


def deps_tag(app: str, deployment: str) -> str:
    """``shipwreck/deps-<app>:<deployment id>``: the dependency stage of that build."""
    return f"shipwreck/deps-{app}:{deployment}"


def stale_images(
    images: Sequence[ImageInfo], in_use: Collection[str], keep: int
) -> list[ImageInfo]:
    """The images to remove: all but the ``keep`` most recently used (built, or tagged by
    a rollback), except those ``in_use`` by a container (by id or by tag)."""
    newest_first = sorted(images, key=lambda image: image.last_used, reverse=True)
    return [
        image
        for image in newest_first[keep:]
        if image.id not in in_use and not any(tag in in_use for tag in image.tags)
    ]
