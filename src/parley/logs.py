"""Parley's own log lines (``parley.store``, ``parley.cost``, ...), printed by each command
with their level and logger."""

from __future__ import annotations

import logging

_HANDLER_NAME = "parley lines"


def log_parley_at(level: str, handler: logging.Handler) -> None:
    """Print Parley's own lines from ``level`` up through ``handler``, in place of the
    handler of an earlier call (a second call printed each line twice).

    Without a handler of its own, Python printed Parley's warnings and errors bare (no
    level, no logger) and dropped its other lines, whatever ``PARLEY_LOG_LEVEL`` said.
    """
    logger = logging.getLogger("parley")
    for earlier in [earlier for earlier in logger.handlers if earlier.name == _HANDLER_NAME]:
        logger.removeHandler(earlier)
    handler.name = _HANDLER_NAME
    logger.addHandler(handler)
    logger.setLevel(level.upper())
