"""Errors a client caused or can act on: shown as GraphQL errors with a code, never logged
as server faults."""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """An error whose message is meant for the client.

    graphql-core copies ``extensions`` of the original error into the GraphQL error, so
    clients can branch on ``extensions.code`` instead of parsing messages.
    """

    code: ClassVar[str] = "BAD_REQUEST"

    @property
    def extensions(self) -> dict[str, Any]:
        """The GraphQL error extensions: the error's code."""
        return {"code": self.code}


class NotFound(ApiError):
    """The named deployment or app is not known to this api."""

    code = "NOT_FOUND"


class Refused(ApiError):
    """The request breaks a policy (repository URL, branch) or the target's state."""

    code = "REFUSED"


class Unavailable(ApiError):
    """The command could not be handed to RabbitMQ; nothing was requested."""

    code = "UNAVAILABLE"


class Rebuilding(ApiError):
    """The read model has not folded the orchestrator's replay yet, so an answer from it
    could leave out what the platform holds; the client should ask again shortly."""

    code = "REBUILDING"
