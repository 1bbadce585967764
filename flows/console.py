"""Prefect's console log handler without tracebacks, for the quiet CLI (the default; --verbose keeps them).

A failing audit then ends with Prefect's one-line ERROR records and the CLI's one `medaudit: error:` line
instead of three tracebacks (task, flow, CLI). Prefect's API log handler still receives the tracebacks:
this handler hides them only while it formats its own line.
"""

from __future__ import annotations

import logging

from prefect.logging.handlers import PrefectConsoleHandler


class QuietConsoleHandler(PrefectConsoleHandler):
    """Selected by configure_prefect(quiet=True) through PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS (every process
    that configures Prefect's logging inherits it: Dask workers of a LocalCluster, the ephemeral API server)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
