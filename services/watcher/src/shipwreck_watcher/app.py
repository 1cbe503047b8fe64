"""The watcher's composition root."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shipwreck_contracts import (
    AppWatchChanged,
    DeploymentInitialized,
    DeploymentProgressed,
    ReplayRequested,
    Trigger,
    WebhookReceived,
)
from shipwreck_eventstore import (
    WRITER_AGGREGATE_CACHE,
    OutboxRelay,
    StoreConfig,
    tracking_from_headers,
)
from shipwreck_eventstore.service import build_writer_service
from shipwreck_messaging import create_broker, events_exchange, message_headers, tag_filter
from shipwreck_messaging.routes import WATCHER_APPS
from shipwreck_runtime import BackgroundTasks
from shipwreck_watcher.poller import Poller
from shipwreck_watcher.remote import DulwichLister, HeadLister
from shipwreck_watcher.service import Watcher, WatcherService
from shipwreck_watcher.settings import WatcherSettings
from shipwreck_watcher.translate import translate


def create_app(
    settings: WatcherSettings,
    *,
    broker: RabbitBroker | None = None,
    lister: HeadLister | None = None,
    logger: logging.Logger | None = None,
) -> FastStream:
    """Wire the watcher: ledger, app-watch consumer, poller, outbox relay, replays."""
    log = logger or logging.getLogger("shipwreck.watcher")
    broker = broker or create_broker(settings.amqp_url, app_id="watcher")
    # This process is the one writer of its store: its aggregates can stay cached.
    store = StoreConfig(
        database_url=settings.database_url,
        state_dir=settings.state_dir,
        aggregate_cache=WRITER_AGGREGATE_CACHE,
    )
    app = Watcher(store)
    service = WatcherService(app)
    relay = OutboxRelay(app, broker, translate)
    poller = Poller(
        service,
        lister
        or DulwichLister(
            allow_private=settings.git_allow_private, timeout=settings.ls_remote_timeout_seconds
        ),
        interval=settings.watch_interval,
        jitter=settings.watch_jitter,
        concurrency=settings.watch_concurrency,
    )
    apps = broker.subscriber(WATCHER_APPS.declaration(), events_exchange())

    @apps(filter=tag_filter(AppWatchChanged))
    async def on_watch_changed(
        msg: AppWatchChanged, headers: dict[str, Any] = message_headers(broker)
    ) -> None:
        await anyio.to_thread.run_sync(
            service.app_watch_changed, msg, tracking_from_headers(headers)
        )

    @apps(filter=tag_filter(WebhookReceived))
    async def on_webhook(
        msg: WebhookReceived, headers: dict[str, Any] = message_headers(broker)
    ) -> None:
        await anyio.to_thread.run_sync(service.webhook, msg, tracking_from_headers(headers))

    @apps(filter=tag_filter(DeploymentInitialized))
    async def on_deployment_initialized(
        msg: DeploymentInitialized, headers: dict[str, Any] = message_headers(broker)
    ) -> None:
        # Only rollbacks are routed here (ROLLBACK_INITIALIZED), the only deployments the
        # ledger records; what a binding retired by an upgrade queued before it may not be.
        if msg.trigger is Trigger.ROLLBACK:
            await anyio.to_thread.run_sync(
                service.rollback_started, msg, tracking_from_headers(headers)
            )

    @apps(filter=tag_filter(DeploymentProgressed))
    async def on_deployment_progressed(
        msg: DeploymentProgressed, headers: dict[str, Any] = message_headers(broker)
    ) -> None:
        if not service.may_settle(msg):  # nearly every report: nothing to do
            return
        pair = await anyio.to_thread.run_sync(
            service.deployment_built, msg, tracking_from_headers(headers)
        )
        if pair is not None:
            poller.check_soon(pair)  # a poll had seen a newer head: deploy it now

    @apps(filter=tag_filter(ReplayRequested))
    async def on_replay(msg: ReplayRequested) -> None:
        # A reader rebuilding its view of the ledger (the api): the orchestrator answers
        # the requests that name it, this relay those that name the watcher.
        if msg.origin == relay.app.name:
            await relay.replay(msg.reply_to, msg.after_position)

    async def poll() -> None:
        watched = await anyio.to_thread.run_sync(service.recover)
        log.info("watching %d (repository, branch) pairs", watched)
        await poller.run()

    tasks = BackgroundTasks()
    tasks.add("poller", poll)
    return build_writer_service("watcher", broker, log, relay, tasks=tasks)
