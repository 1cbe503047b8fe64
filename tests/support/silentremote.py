"""A remote that hangs: a TCP server on 127.0.0.1 that accepts every connection and never
answers (a git daemon stuck before its ref advertisement), counting the connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class SilentRemote:
    """Accepts on a loopback port and keeps every connection open, saying nothing."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._accept, name="silent-remote", daemon=True)
        self._thread.start()

    def url(self, repo: str) -> str:
        """The git:// URL of ``repo`` here."""
        return f"git://127.0.0.1:{self.port}/{repo}.git"

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._changed:
            return len(self._held)

    def wait_for(self, connections: int, timeout: float) -> bool:
        """Whether ``connections`` were accepted within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._held) >= connections, timeout)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed: the test is over
                return
            with self._changed:
                self._held.append(conn)
                self._changed.notify_all()

    def __enter__(self) -> SilentRemote:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        # shutdown wakes the accepting thread where close alone may not.
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self._thread.join(5)
        with self._changed:
            for conn in self._held:
                conn.close()
