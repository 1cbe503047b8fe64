"""What a service builds at start is set aside from full collections; garbage never is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.gitdaemon import free_port

# In a process of its own: freezing this test process's heap would outlive the test.
PROBE = textwrap.dedent(
    """
    import gc, weakref
    from shipwreck_runtime import freeze_startup_heap

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    kept = Node()
    before = cycle()  # garbage already, not yet collected
    gc.disable()  # only the collections asked for below
    count = freeze_startup_heap()
    assert before() is None, "garbage present at the call was frozen"
    assert count == gc.get_freeze_count() > 1000, count
    assert all(o is not kept for o in gc.get_objects()), "a live object is still walked"
    after = cycle()
    gc.collect()
    assert after() is None, "garbage made after the call is not collected"
    print("ok", count)
    """
)


def test_startup_objects_are_set_aside_and_garbage_is_still_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


@pytest.mark.parametrize("module", ["shipwreck_scheduler", "shipwreck_api"])
def test_a_service_sets_its_startup_heap_aside_before_it_serves(module: str) -> None:
    # Nothing listens on the port: the service starts, says what it set aside, and exits
    # because it cannot reach RabbitMQ.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPWRECK_")}
    env.update(
        SHIPWRECK_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        SHIPWRECK_LOG_LEVEL="DEBUG",
        SHIPWRECK_API_TOKEN="t",
        SHIPWRECK_API_PORT=str(free_port()),
    )
    done = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "objects built at start set aside from garbage collection" in output, output
