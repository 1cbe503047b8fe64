"""One event-store behaviour suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.utils import get_topic

from shipwreck_eventstore import ShipwreckApplication, StoreConfig, existing, process_once
from tests.support.infra import POSTGRES_URL
from tests.support.sample_domain import Colour, Label, Ledger, Tally, make_writer
from tests.support.stores import StoreFactory

pytestmark = pytest.mark.infra


def _ledger(name: str = "books") -> Ledger:
    return Ledger(name, uuid.uuid4(), datetime.now(UTC), Colour.BLUE)


def test_aggregate_round_trips_with_its_types_intact(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("rt"))
    ledger = _ledger()
    ledger.add_entry("a", Label("first", weight=3))
    app.save(ledger)

    reloaded = app.repository.get(ledger.id)
    assert isinstance(reloaded, Ledger)
    assert isinstance(reloaded.owner, uuid.UUID)
    assert reloaded.owner == ledger.owner
    assert reloaded.opened_at.tzinfo is not None
    assert reloaded.opened_at == ledger.opened_at
    assert reloaded.colour is Colour.BLUE
    assert reloaded.entries == [("a", Label("first", weight=3))]
    app.close()


def test_events_survive_a_restart_of_the_application(stores: StoreFactory) -> None:
    name = stores.name("restart")
    first = make_writer(stores.config(), name)
    ledger = _ledger()
    ledger.add_entry("k", Label("x"))
    first.save(ledger)
    first.close()

    second = make_writer(stores.config(), name)
    assert second.repository.get(ledger.id).entries == [("k", Label("x"))]
    second.close()


def test_old_event_versions_are_upcast_on_read(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("upcast"))
    ledger = _ledger("old")
    app.save(ledger)
    # A Renamed event as version 1 wrote it: no class_version, no reason.
    v1_state = msgspec.json.encode({"timestamp": datetime.now(UTC), "new_name": "renamed-long-ago"})
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=ledger.id,
                originator_version=2,
                topic=get_topic(Ledger.Renamed),
                state=v1_state,
            )
        ]
    )
    reloaded = app.repository.get(ledger.id)
    assert reloaded.name == "renamed-long-ago"
    renamed = list(app.events.get(ledger.id))[-1]
    assert isinstance(renamed, Ledger.Renamed)
    assert renamed.reason == "unknown (recorded before reasons existed)"
    app.close()


def test_current_events_are_stored_with_their_class_version(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("version"))
    ledger = _ledger()
    ledger.rename("ledger-2", reason="tidy")
    app.save(ledger)
    stored = app.recorder.select_events(ledger.id)[-1]
    assert msgspec.json.decode(stored.state)["class_version"] == 2
    renamed = list(app.events.get(ledger.id))[-1]
    assert renamed.reason == "tidy"
    app.close()


def test_a_stale_writer_is_rejected_by_optimistic_concurrency(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("occ"))
    ledger = _ledger()
    app.save(ledger)
    one = app.repository.get(ledger.id)
    two = app.repository.get(ledger.id)
    one.add_entry("from-one", Label("1"))
    two.add_entry("from-two", Label("2"))
    app.save(one)
    with pytest.raises(IntegrityError):
        app.save(two)
    assert [k for k, _ in app.repository.get(ledger.id).entries] == ["from-one"]
    app.close()


def test_notification_log_orders_events_across_aggregates(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("log"))
    a, b = _ledger("a"), _ledger("b")
    app.save(a)
    app.save(b)
    a.add_entry("a1", Label("a1"))
    app.save(a)
    notifications = app.recorder.select_notifications(1, 10)
    assert [n.originator_id for n in notifications] == [a.id, b.id, a.id]
    assert [n.id for n in notifications] == sorted(n.id for n in notifications)
    app.close()


def test_process_once_records_tracking_with_the_new_events(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("once"))
    ledger_id = uuid.uuid4()
    tracking = Tracking(application_name="upstream", notification_id=7)

    def decide() -> list[Tally]:
        tally = Tally(ledger_id)
        tally.count("k7")
        return [tally]

    assert process_once(app, tracking, decide) is True
    assert app.has_tracking(tracking)
    # The same upstream position again: nothing is decided, nothing is recorded.
    assert process_once(app, tracking, decide) is False
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["k7"]
    app.close()


def test_process_once_accepts_positions_out_of_order(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("order"))
    ledger_id = uuid.uuid4()
    app.save(Tally(ledger_id))

    def count(key: str) -> list[Tally]:
        tally = app.repository.get(Tally.create_id(ledger_id))
        tally.count(key)
        return [tally]

    # A redelivered message arrives after a later one: both are new, neither is a duplicate.
    assert process_once(app, Tracking("up", 5), lambda: count("five")) is True
    assert process_once(app, Tracking("up", 3), lambda: count("three")) is True
    assert process_once(app, Tracking("up", 5), lambda: count("five")) is False
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["five", "three"]
    app.close()


def test_process_once_decides_again_after_a_version_conflict(stores: StoreFactory) -> None:
    app = make_writer(stores.config(), stores.name("retry"))
    ledger_id = uuid.uuid4()
    app.save(Tally(ledger_id))
    calls: list[int] = []

    def decide() -> list[Tally]:
        tally = app.repository.get(Tally.create_id(ledger_id))
        if not calls:
            # Another writer commits between our read and our write.
            rival = app.repository.get(Tally.create_id(ledger_id))
            rival.count("rival")
            app.save(rival)
        calls.append(1)
        tally.count("ours")
        return [tally]

    assert process_once(app, Tracking("up", 1), decide) is True
    assert len(calls) == 2
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["rival", "ours"]
    app.close()


def test_a_cached_writer_decides_again_on_fresh_state_after_losing_a_conflict(
    stores: StoreFactory,
) -> None:
    # A writer trusts its cache; should anything else ever write its aggregates (a second
    # process by mistake), the conflict this causes must not repeat on every retry.
    name = stores.name("cached")
    config = dataclasses.replace(stores.config(), aggregate_cache=100)
    app = make_writer(config, name)
    intruder = make_writer(stores.config(), name)
    ledger_id = uuid.uuid4()
    app.save(Tally(ledger_id))
    app.repository.get(Tally.create_id(ledger_id))  # now cached
    rival = intruder.repository.get(Tally.create_id(ledger_id))
    rival.count("rival")
    intruder.save(rival)

    def decide() -> list[Tally]:
        tally = app.repository.get(Tally.create_id(ledger_id))
        tally.count("ours")
        return [tally]

    assert process_once(app, Tracking("up", 1), decide) is True
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["rival", "ours"]
    app.close()
    intruder.close()


@dataclasses.dataclass
class CountOnce:
    """A decide that creates the ledger's tally when there is none and counts ``key`` once
    in it; ``decisions`` says what each run of it found."""

    app: ShipwreckApplication
    ledger_id: uuid.UUID
    key: str
    decisions: list[str] = dataclasses.field(default_factory=list)

    def __call__(self) -> list[Tally]:
        found = existing(self.app, Tally.create_id(self.ledger_id))
        self.decisions.append("found" if found is not None else "new")
        tally = found if isinstance(found, Tally) else Tally(self.ledger_id)
        if self.key in tally.keys:
            return []
        tally.count(self.key)
        return [tally]


@pytest.mark.parametrize("cache", [0, 100], ids=["uncached", "cached"])
def test_an_id_taken_for_new_that_was_recorded_is_decided_again_with_the_store(
    stores: StoreFactory, cache: int
) -> None:
    # The writer restarted (or its cache let the tally go): the first decision takes the
    # tally for new and creates it again; the store refuses that, and the second decision
    # finds it. Nothing is recorded twice.
    name = stores.name("assumed")
    first = make_writer(stores.config(), name)
    ledger_id = uuid.uuid4()
    assert process_once(first, Tracking("up", 1), CountOnce(first, ledger_id, "a"))
    first.close()
    app = make_writer(dataclasses.replace(stores.config(), aggregate_cache=cache), name)
    decide = CountOnce(app, ledger_id, "b")
    assert process_once(app, Tracking("up", 2), decide) is True
    assert decide.decisions == ["new", "found"]
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["a", "b"]
    again = CountOnce(app, ledger_id, "b")
    assert process_once(app, Tracking("up", 3), again) is True
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["a", "b"]
    app.close()


def test_a_cached_aggregate_is_found_in_the_first_decision(stores: StoreFactory) -> None:
    app = make_writer(
        dataclasses.replace(stores.config(), aggregate_cache=100), stores.name("warm")
    )
    ledger_id = uuid.uuid4()
    assert process_once(app, Tracking("up", 1), CountOnce(app, ledger_id, "a"))
    decide = CountOnce(app, ledger_id, "b")
    assert process_once(app, Tracking("up", 2), decide) is True
    assert decide.decisions == ["found"]
    assert app.repository.get(Tally.create_id(ledger_id)).keys == ["a", "b"]
    app.close()


def test_a_new_id_costs_no_read_of_the_store(stores: StoreFactory) -> None:
    app = make_writer(
        dataclasses.replace(stores.config(), aggregate_cache=100), stores.name("cold")
    )
    reads: list[uuid.UUID] = []
    select = app.recorder.select_events

    def counting_select(originator_id: uuid.UUID, **kw: Any) -> Any:
        reads.append(originator_id)
        return select(originator_id, **kw)

    app.recorder.select_events = counting_select  # type: ignore[method-assign]
    ledger_id = uuid.uuid4()
    decide = CountOnce(app, ledger_id, "a")
    assert process_once(app, Tracking("up", 1), decide) is True
    assert decide.decisions == ["new"]
    assert reads == []
    app.close()


def test_tracking_without_new_events_still_marks_the_message_handled(
    stores: StoreFactory,
) -> None:
    app = make_writer(stores.config(), stores.name("empty"))
    tracking = Tracking("upstream", 11)
    assert process_once(app, tracking, list) is True
    assert process_once(app, tracking, list) is False
    app.close()


def test_applications_created_at_once_on_a_fresh_database_all_start() -> None:
    """Services started together (``just up``) each create their tables on a new database,
    and eventsourcing's shared types and functions are created or replaced by all of
    them: unserialized, one failed on pg_proc's uniqueness."""
    dbname = f"shipwreck_race_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    store = StoreConfig(
        database_url=f"{POSTGRES_URL.rsplit('/', 1)[0]}/{dbname}", pool_size=1, max_overflow=1
    )
    count = 6
    barrier = threading.Barrier(count)
    started: list[ShipwreckApplication] = []
    failures: list[BaseException] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            started.append(make_writer(store, f"race_{i}"))
        except BaseException as e:  # every failure is the finding
            failures.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        assert len(started) == count
    finally:
        for app in started:
            app.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
