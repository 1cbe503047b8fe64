"""The suite's own harness (tests/conftest.py): no hung test can stall a run, and a failed
test's report carries its services' logs.

Each case runs a small pytest session, in a process of its own, with the suite's conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = 'pytest_plugins = ["tests.conftest"]\n'


def _session(tmp_path: Path, source: str, *, timeout: int) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_case.py").write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--timeout",
            str(timeout),
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            "test_case.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_failed_tests_hung_teardown_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    result = _session(
        tmp_path,
        """
        import asyncio
        import pytest

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        async def hangs_on_teardown():
            yield
            while True:
                await asyncio.sleep(0.05)

        async def test_fails(hangs_on_teardown):
            assert False

        async def test_after():
            await asyncio.sleep(0)
        """,
        timeout=2,
    )
    out = result.stdout
    assert "ERROR test_case.py::test_fails - Failed: Timeout (>2.0s) from pytest-timeout" in out
    assert "FAILED test_case.py::test_fails" in out
    assert "1 failed, 1 passed, 1 error" in out


def test_a_test_that_escapes_the_timer_ends_the_run_with_every_threads_stack(
    tmp_path: Path,
) -> None:
    result = _session(
        tmp_path,
        """
        import signal
        import time

        def test_ignores_the_alarm():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                time.sleep(0.05)

        def test_never_reached():
            pass
        """,
        timeout=1,
    )
    assert result.returncode != 0
    assert "Timeout (0:00:03)!" in result.stderr
    assert "in test_ignores_the_alarm" in result.stderr
    assert "passed" not in result.stdout


def test_a_failed_tests_report_ends_with_its_services_logs(tmp_path: Path) -> None:
    result = _session(
        tmp_path,
        """
        import pytest
        from tests.support.platform import Platform

        @pytest.fixture
        def platform(tmp_path):
            p = Platform(amqp_url="amqp://", database_url="postgresql://", state_dir=tmp_path)
            p.logs["api"] = tmp_path / "api.log"
            p.logs["api"].write_text("api ready\\nread model rebuilt up to position 41\\n")
            return p

        def test_fails(platform):
            assert False

        def test_passes(platform):
            pass
        """,
        timeout=30,
    )
    out = result.stdout
    assert "service logs" in out
    assert "--- the end of api's log (" in out
    assert "read model rebuilt up to position 41" in out
    assert out.count("read model rebuilt up to position 41") == 1  # not for the passing test
