"""The durable, append-only event log: the source of truth."""

from plait.log.backends import LogBackend, LogRecord, backend_for
from plait.log.writer import LogWriter, Overloaded

__all__ = ["LogBackend", "LogRecord", "LogWriter", "Overloaded", "backend_for"]
