"""One log format for every Shipwreck process, so `just up` output reads as one stream."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(service: str, level: str = "INFO") -> logging.Logger:
    """Configure the root logger once and return the service's own logger."""
    root = logging.getLogger()
    if not any(getattr(h, "_shipwreck", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._shipwreck = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    # FastStream logs every message received and processed at INFO: that is debug detail.
    logging.getLogger("faststream.access").setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"shipwreck.{service}")
