"""The api's command bus rides out a short RabbitMQ outage and fails clearly after it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError

from shipwreck_api.commands import RabbitCommandBus
from shipwreck_api.errors import Unavailable
from shipwreck_contracts import CancelDeployment

pytestmark = pytest.mark.anyio


class FlakyBroker:
    """Refuses the first ``failures`` publishes as a closed channel does, then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[Any] = []

    async def publish(self, message: Any, **_: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ChannelInvalidStateError("<RobustChannel> closed")
        self.published.append(message)


def _command() -> CancelDeployment:
    return CancelDeployment(
        deployment_id=uuid.uuid4(), actor="tester", reason="test", requested_at=datetime.now(UTC)
    )


async def test_a_command_sent_while_rabbitmq_reconnects_is_delivered_once_it_is_back() -> None:
    broker = FlakyBroker(failures=2)
    command = _command()
    await RabbitCommandBus(broker, patience=5).send(command)  # type: ignore[arg-type]
    assert broker.published == [command]


async def test_a_longer_outage_is_unavailable_naming_rabbitmq_and_nothing_is_sent() -> None:
    broker = FlakyBroker(failures=1000)
    with pytest.raises(Unavailable) as raised:
        await RabbitCommandBus(broker, patience=0.6).send(_command())  # type: ignore[arg-type]
    assert "RabbitMQ is unreachable" in str(raised.value)
    assert "nothing was requested" in str(raised.value)
    assert broker.published == []
