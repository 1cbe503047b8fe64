"""Before `just up`: say clearly what is missing (RabbitMQ, PostgreSQL) and how to start it."""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika
import psycopg

from shipwreck_runtime import DEFAULT_AMQP_URL
from shipwreck_runtime.secrets import redact_url


async def check_rabbitmq(url: str) -> str | None:
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), 5)
    except Exception as e:
        return (
            f"RabbitMQ is not reachable at {redact_url(url)} ({type(e).__name__}: {e}).\n"
            "  Start it with: rabbitmq-server -detached\n"
            "  or point SHIPWRECK_AMQP_URL at a running broker."
        )
    await connection.close()
    return None


def check_postgres(url: str) -> str | None:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as e:
        return (
            f"PostgreSQL is not reachable at {redact_url(url)} ({e}).\n"
            "  Start it with: pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start\n"
            "  or unset SHIPWRECK_DATABASE_URL to keep the event store in SQLite files."
        )
    return None


def main() -> int:
    problems = []
    amqp = os.environ.get("SHIPWRECK_AMQP_URL", DEFAULT_AMQP_URL)
    if (problem := asyncio.run(check_rabbitmq(amqp))) is not None:
        problems.append(problem)
    database = os.environ.get("SHIPWRECK_DATABASE_URL")
    if database and (problem := check_postgres(database)) is not None:
        problems.append(problem)
    for problem in problems:
        print(f"shipwreck: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
