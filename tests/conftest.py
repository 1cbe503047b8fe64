"""Suite-wide fixtures, and the bounds that keep a hung test from stalling a run."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Generator

import pytest
import pytest_timeout

from tests.support.gitdaemon import git_server
from tests.support.platform import Platform, platform

__all__ = ["anyio_backend", "git_server", "platform"]  # shared by the integration and e2e suites


@pytest.fixture
def anyio_backend() -> str:
    # FastStream and aio-pika run on asyncio; trio is not a target.
    return "asyncio"


# --- failure reports ---------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A failed test's report ends with its platform's service logs: in CI, the only record
    # of what the services did.
    used = getattr(item, "funcargs", {}).get("platform")
    if report.failed and report.when != "teardown" and isinstance(used, Platform):
        report.sections.append(("service logs", used.log_tails()))
    return report


# --- bounds ------------------------------------------------------------------------------------
#
# pytest-timeout (2.4) stops a test's timer as soon as the test fails (its
# pytest_exception_interact hook, meant for pdb), so the fixture teardown of a failed test runs
# unbounded: a hung one stalled a CI run for its whole 90 minutes, printing nothing after the
# "F" (pytest-timeout#196; the fix, #197, is not released). Two bounds close that gap:
# - a failed test's teardown gets its timeout again: a hang there becomes an error with every
#   thread's stack, and the run goes on;
# - every test, whatever happens to the timer (the exception its signal raises can be caught by
#   the code it interrupts), has a last bound at three times its timeout: every thread's stack
#   is written to stderr and the run exits, failed, instead of hanging.

FAILED = pytest.StashKey[bool]()
STDERR = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    # The terminal's stderr, kept before any test runs: during a test, descriptor 2 is
    # pytest's capture file, which a process that exits takes with it (as pytest's own
    # faulthandler plugin does).
    config.stash[STDERR] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    os.close(config.stash[STDERR])


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    configured = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(configured or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timeout = _timeout_of(item)
    if timeout > 0:
        faulthandler.dump_traceback_later(3 * timeout, exit=True, file=item.config.stash[STDERR])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node: pytest.Item | pytest.Collector) -> None:
    if isinstance(node, pytest.Item):
        node.stash[FAILED] = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    timeout = _timeout_of(item)
    rearm = item.stash.get(FAILED, False) and timeout > 0
    hooks = item.config.pluginmanager.hook
    if rearm:
        settings = pytest_timeout.Settings(timeout, "signal", False, False)
        hooks.pytest_timeout_set_timer(item=item, settings=settings)
    try:
        yield
    finally:
        if rearm:
            hooks.pytest_timeout_cancel_timer(item=item)
