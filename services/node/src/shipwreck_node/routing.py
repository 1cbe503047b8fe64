"""Which container serves each app through the node's reverse proxy.

A deployment takes its app's route only once its container is healthy (``Pipeline``), and
gives it back only while the route still points at it: stopping a superseded deployment
never unroutes its successor, and a cancelled one hands the route back to the container
that served before it. After a restart of the node (or of Caddy), `Routes.restore` routes
every app again to the newest healthy container this node runs for it.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Final

from shipwreck_node.ports import (
    LABEL_APP,
    LABEL_DOMAIN,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_ROLE,
    ROLE_APP,
    ContainerInfo,
    ContainerQuery,
    ContainerRuntime,
    HealthProbe,
    Router,
)
from shipwreck_node.proxy import app_hosts
from shipwreck_node.settings import PUBLISH_HOST, NodeSettings

PROBE_TIMEOUT: Final = 2.0
_OLDEST: Final = datetime.min.replace(tzinfo=UTC)

log = logging.getLogger(__name__)


def upstream_of(container: ContainerInfo) -> str | None:
    """The proxy's upstream for an app container: its published loopback port."""
    return f"{PUBLISH_HOST}:{container.host_port}" if container.host_port else None


def _newest_first(containers: Collection[ContainerInfo]) -> list[ContainerInfo]:
    return sorted(containers, key=lambda c: c.created or _OLDEST, reverse=True)


class Routes:
    """The app routes of this node: host names, public URLs, hand-overs and restores."""

    def __init__(
        self,
        settings: NodeSettings,
        runtime: ContainerRuntime,
        router: Router,
        probe: HealthProbe,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.router = router
        self.probe = probe

    def hosts(self, app: str, domain: str | None = None) -> list[str]:
        """The host names the app answers on."""
        return app_hosts(app, self.settings.apps_domain, domain)

    def url(self, app: str) -> str:
        """The app's stable URL, through the proxy (whatever container serves it)."""
        s = self.settings
        if s.proxy_https_port is not None:
            scheme, port, default = "https", s.proxy_https_port, 443
        else:
            scheme, port, default = "http", s.proxy_http_port, 80
        suffix = "" if port == default else f":{port}"
        return f"{scheme}://{app}.{s.apps_domain}{suffix}/"

    async def serving(self, app: str | None = None) -> list[ContainerInfo]:
        """This node's app containers that passed their health check and run, newest first."""
        labels = {LABEL_NODE: str(self.settings.node_id), LABEL_ROLE: ROLE_APP}
        if app is not None:
            labels[LABEL_APP] = app
        found = await self.runtime.find(ContainerQuery(labels=labels, running_only=True))
        return _newest_first([c for c in found if c.kept_running and c.host_port])

    async def take(self, container: ContainerInfo) -> bool:
        """Route the container's app to it, unless a newer container of the app has the route
        (a redelivered deployment must not take the route back from its successor)."""
        app = container.labels.get(LABEL_APP, "")
        ours = upstream_of(container)
        if not app or ours is None:
            return False
        current = await self.router.upstream(app)
        if current == ours:
            return True
        if current is not None:
            holder = next((c for c in await self.serving(app) if upstream_of(c) == current), None)
            if holder is not None and (holder.created or _OLDEST) > (container.created or _OLDEST):
                return False
        return await self.router.route(
            app, self.hosts(app, container.labels.get(LABEL_DOMAIN)), ours
        )

    async def claim(self, container: ContainerInfo) -> bool:
        """Route the container's app to it unless the route leads to another live container
        of the app on this node; whether the route points at it now.

        For a container started again (a revival, or one kept after a restart): the app's
        route is its own only if nothing else serves the app here, since a deployment that
        took over meanwhile must keep it.
        """
        app = container.labels.get(LABEL_APP, "")
        ours = upstream_of(container)
        if not app or ours is None:
            return False
        current = await self.router.upstream(app)
        if current == ours:
            return True
        if current is not None and any(
            upstream_of(c) == current for c in await self.serving(app) if c.id != container.id
        ):
            return False
        hosts = self.hosts(app, container.labels.get(LABEL_DOMAIN))
        return await self.router.route(app, hosts, ours, only_if_upstream=current)

    async def release(
        self,
        container: ContainerInfo,
        *,
        hand_over: bool,
        ended: Collection[uuid.UUID] = (),
    ) -> bool:
        """Take the app's route away from ``container``, only if it still points there.

        With ``hand_over`` the route goes to the newest other healthy container of the app
        on this node (outside ``ended`` deployments) if there is one; otherwise it is
        removed. Whether the route pointed at ``container``.
        """
        app = container.labels.get(LABEL_APP, "")
        ours = upstream_of(container)
        if not app or ours is None:
            return False
        if hand_over:
            for other in await self.serving(app):
                theirs = upstream_of(other)
                if other.id == container.id or theirs is None or other.deployment_id in ended:
                    continue
                hosts = self.hosts(app, other.labels.get(LABEL_DOMAIN))
                return await self.router.route(app, hosts, theirs, only_if_upstream=ours)
        return await self.router.remove(app, only_if_upstream=ours)

    async def proxy_exited(self, within: float) -> bool:
        """Wait at most ``within`` seconds for a part of the proxy to exit (see `revive`)."""
        return await self.router.exited(within)

    async def revive(self) -> bool:
        """Bring back a proxy that exited under the node, and route every app again if its
        routes went with it. Whether they had to be restored."""
        if not await self.router.revive():
            return False
        log.warning("the proxy came back without routes: routing every app again")
        await self.restore()
        return True

    async def restore(self) -> None:
        """Route every app this node serves to its newest healthy container; drop routes
        that lead to no container of this node (it died while the node was away)."""
        by_app: dict[str, list[ContainerInfo]] = defaultdict(list)
        for container in await self.serving():
            by_app[container.labels.get(LABEL_APP, "")].append(container)
        routed: set[str] = set()
        for app, containers in by_app.items():
            if not app:
                continue
            chosen = await self._first_healthy(containers) or containers[0]
            upstream = upstream_of(chosen)
            if upstream is None:
                continue
            hosts = self.hosts(app, chosen.labels.get(LABEL_DOMAIN))
            await self.router.route(app, hosts, upstream)
            routed.add(upstream)
            log.info("routed %s to %s (%s)", app, chosen.name, upstream)
        for app, upstream in (await self.router.routes()).items():
            if upstream not in routed and await self.router.remove(app, only_if_upstream=upstream):
                log.info("removed the route of %s: nothing of it runs here", app)

    async def _first_healthy(self, containers: list[ContainerInfo]) -> ContainerInfo | None:
        for container in containers:
            port = container.labels.get(LABEL_PORT)
            if container.address and port and port.isdigit():
                result = await self.probe.tcp(container.address, int(port), PROBE_TIMEOUT)
            elif container.host_port:
                result = await self.probe.tcp(PUBLISH_HOST, container.host_port, PROBE_TIMEOUT)
            else:
                continue
            if result.ok:
                return container
        return None
