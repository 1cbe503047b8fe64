"""Integration fixtures: real PostgreSQL, SQLite files and RabbitMQ."""

from tests.support.stores import stores

__all__ = ["stores"]
