"""Health probes over the network: an HTTP GET, or a TCP connection."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from shipwreck_node.ports import ProbeResult


class NetworkProbe:
    """`HealthProbe` over real sockets (loopback and the node's own containers only)."""

    async def http(self, url: str, within: float) -> ProbeResult:
        """GET ``url`` without following redirects: 2xx and 3xx pass."""
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"

        def get() -> ProbeResult:
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port or 80, timeout=within
            )
            try:
                connection.request("GET", path, headers={"User-Agent": "shipwreck-health/1"})
                response = connection.getresponse()
                response.read(64 * 1024)
            except (OSError, http.client.HTTPException) as e:
                return ProbeResult(ok=False, detail=_describe(e))
            finally:
                connection.close()
            ok = 200 <= response.status < 400
            return ProbeResult(
                ok=ok, detail=f"HTTP {response.status} {response.reason}".strip(), answered=True
            )

        return await anyio.to_thread.run_sync(get)

    async def tcp(self, host: str, port: int, within: float) -> ProbeResult:
        """Passes when ``host:port`` accepts a connection."""
        try:
            with anyio.fail_after(within):
                stream = await anyio.connect_tcp(host, port)
        except TimeoutError:
            return ProbeResult(ok=False, detail=f"no answer from {host}:{port} in {within:g} s")
        except OSError as e:
            return ProbeResult(ok=False, detail=_describe(e))
        await stream.aclose()
        return ProbeResult(ok=True, detail="connection accepted", answered=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if isinstance(error, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    return str(error) or type(error).__name__
