"""App commands (api -> orchestrator) and app events.

An app is the stable thing users name: it owns a route and a history of deployments, and
exactly one of them is current. The orchestrator writes apps, like deployments.
"""

from __future__ import annotations

import uuid

from .base import Message
from .values import Actor, AppName, AwareDatetime, BranchName, RepoUrl


class RollbackApp(Message, tag="app.rollback.v1", frozen=True, kw_only=True):
    """Deploy again the commit of an earlier deployment of the app.

    ``new_deployment_id`` is chosen by the api, like ``RequestDeployment.deployment_id``; the
    new deployment has trigger ROLLBACK and is pinned to ``deployment_id``'s commit.
    """

    app: AppName
    deployment_id: uuid.UUID
    new_deployment_id: uuid.UUID
    actor: Actor
    requested_at: AwareDatetime


class StopApp(Message, tag="app.stop.v1", frozen=True, kw_only=True):
    """Stop the app: its running deployment becomes STOPPED and its route is removed."""

    app: AppName
    actor: Actor
    reason: str = ""
    requested_at: AwareDatetime


class SetAppWatch(Message, tag="app.set-watch.v1", frozen=True, kw_only=True):
    """Turn redeploy-on-new-commit on or off for an app."""

    app: AppName
    watching: bool
    actor: Actor
    requested_at: AwareDatetime


class AppWatchChanged(Message, tag="app.watch-changed.v1", frozen=True, kw_only=True):
    """An app started or stopped being watched; the watcher follows ``repo_url``/``branch``."""

    app: AppName
    repo_url: RepoUrl
    branch: BranchName
    watching: bool
    at: AwareDatetime
