"""API settings, from ``SHIPWRECK_*`` environment variables."""

from __future__ import annotations

from shipwreck_runtime import CommonSettings, Count, Port, PositiveSeconds, Seconds


class ApiSettings(CommonSettings, frozen=True, kw_only=True):
    """The api's settings.

    - ``SHIPWRECK_API_HOST``/``_PORT``: where to listen.
    - ``SHIPWRECK_API_TOKEN``: the first admin token (when unset, the one in
      ``<state_dir>/api-token``, generated there with mode 0600 if the file is missing).
    - ``SHIPWRECK_WEBHOOK_SECRET``: the secret push webhooks are signed with (GitHub and
      Gitea HMAC-SHA256, GitLab token); unset, ``/webhooks/*`` answers 503.
    - ``SHIPWRECK_GIT_ALLOW_PRIVATE``: accept repository URLs on loopback and private
      addresses (refused by default, before anything is published).
    - ``SHIPWRECK_LEDGER_ENTRIES``: how many ledger entries each (repository, branch)
      keeps (the newest; default 1000).
    - ``SHIPWRECK_REPLAY_RETRY_SECONDS``: how often to ask again, at start-up or after a
      reconnection, while a replay request cannot be delivered (no queue takes it: the
      orchestrator's or the watcher's topology is not declared yet; or RabbitMQ is away).
    - ``SHIPWRECK_SUBSCRIBER_QUEUE_SIZE``/``_LOG_SUBSCRIBER_QUEUE_SIZE``: how many updates /
      log lines may wait for one subscriber. One that lags further loses its oldest queued
      items and, when it catches up, gets what it missed from the read model instead
      (status changes from the stored events, lines from the log buffer), so memory per
      subscriber is bounded and no subscriber slows another.
    - ``SHIPWRECK_LOG_BUFFER_LINES``: the bound of each deployment's log buffer (default
      1000 lines). It rotates: a new line drops the oldest, and a client asking for lines
      from before the kept ones gets one SYSTEM line "N earlier lines dropped" instead;
      ``Deployment.logsDropped`` counts them.
    - ``SHIPWRECK_LOG_BUFFER_DEPLOYMENTS``: how many deployments keep log lines (the most
      recently active ones; default 200). Memory for logs is bounded by the product.
    - ``SHIPWRECK_REBUILD_TIMEOUT_SECONDS``: how long ``rebuildReadModel`` waits for the
      orchestrator's (and the watcher's) replay before answering (the rebuild goes on
      afterwards).
    - ``SHIPWRECK_UNKNOWN_DEPLOYMENT_WAIT_SECONDS``: how long a subscription to a deployment
      or app not known yet waits for it to appear before answering "not found" (it waits
      on while the read model is rebuilding).
    - ``SHIPWRECK_READ_MODEL_WAIT_SECONDS``: how long a query about apps or deployments, or
      a command on a known one, waits for the read model to have folded the orchestrator's
      replay (at start-up, or after ``rebuildReadModel``) before answering a REBUILDING
      error: until then an app that exists would look unknown and lists would be short.
    """

    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    api_token: str | None = None
    state_dir: str = ".shipwreck"
    git_allow_private: bool = False
    ledger_entries: Count = 1000
    replay_retry_seconds: PositiveSeconds = 5.0
    subscriber_queue_size: Count = 100
    log_subscriber_queue_size: Count = 1000
    log_buffer_lines: Count = 1000
    log_buffer_deployments: Count = 200
    rebuild_timeout_seconds: Seconds = 60.0
    unknown_deployment_wait_seconds: Seconds = 10.0
    read_model_wait_seconds: Seconds = 10.0
    webhook_secret: str | None = None
