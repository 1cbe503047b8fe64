"""Output becomes numbered, whole, redacted log lines."""

from __future__ import annotations

import uuid

import pytest

from shipwreck_contracts import LogLine, LogStream
from shipwreck_node.logsink import MAX_LINE_CHARS, DeploymentLog, LineSplitter
from tests.support.fakes_node import Outbox

pytestmark = pytest.mark.anyio


def test_lines_are_reassembled_from_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed("Step 1/3 : FROM") == []
    assert splitter.feed(" base\n ---> abc\r\nStep 2") == ["Step 1/3 : FROM base", " ---> abc"]
    assert splitter.flush() == ["Step 2"]
    assert splitter.flush() == []


async def test_sequence_counts_from_one_across_streams() -> None:
    outbox = Outbox()
    log = DeploymentLog(outbox.send, uuid.uuid4(), 2)
    await log.write(LogStream.BUILD, "one\ntw")
    await log.write(LogStream.STDOUT, "three\n")
    await log.write(LogStream.BUILD, "o\n")
    await log.line(LogStream.SYSTEM, "four")
    lines = outbox.of(LogLine)
    assert [(m.sequence, m.stream, m.text) for m in lines] == [
        (1, LogStream.BUILD, "one"),
        (2, LogStream.STDOUT, "three"),
        (3, LogStream.BUILD, "two"),
        (4, LogStream.SYSTEM, "four"),
    ]
    assert {m.attempt for m in lines} == {2}


async def test_blank_lines_colours_and_progress_redraws_are_dropped() -> None:
    outbox = Outbox()
    log = DeploymentLog(outbox.send, uuid.uuid4(), 1)
    await log.write(LogStream.BUILD, "\n\n\x1b[32madded 1 package\x1b[0m\n10%\r50%\r100%\n")
    assert outbox.lines() == ["added 1 package", "100%"]


async def test_long_values_of_the_environment_are_redacted_short_ones_kept() -> None:
    outbox = Outbox()
    log = DeploymentLog(outbox.send, uuid.uuid4(), 1, secrets=["s3cr3t-t0ken-value", "1"])
    await log.line(LogStream.STDOUT, "token=s3cr3t-t0ken-value retries=1")
    assert outbox.lines() == ["token=*** retries=1"]
    assert log.tail(LogStream.STDOUT) == ["token=*** retries=1"]


async def test_huge_lines_are_cut() -> None:
    outbox = Outbox()
    log = DeploymentLog(outbox.send, uuid.uuid4(), 1)
    await log.line(LogStream.BUILD, "x" * (MAX_LINE_CHARS * 2))
    assert len(outbox.lines()[0]) < MAX_LINE_CHARS + 10


async def test_the_tail_keeps_the_last_lines_of_a_stream() -> None:
    outbox = Outbox()
    log = DeploymentLog(outbox.send, uuid.uuid4(), 1)
    for number in range(30):
        await log.line(LogStream.TEST, f"line {number}")
    assert log.tail(LogStream.TEST, 3) == ["line 27", "line 28", "line 29"]
    assert log.tail(LogStream.BUILD) == []
