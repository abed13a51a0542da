"""Sentinel's exception tree. Lower-level errors are converted at the edges.

    SentinelError
    ├── ConfigError           a config file failed validation (exit code 2)
    ├── InputError            a replay file or request body could not be used at all
    ├── CheckpointError       a checkpoint is unreadable, unsafe, or of another format version
    ├── SourceError           a source failed in a way retrying will not fix
    │   └── SourceUnavailable the server is down or unreachable (retried with backoff)
    └── SinkError             a notification could not be delivered (retried from the outbox)
"""

from __future__ import annotations


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError):
    """A configuration file is invalid; ``str(err)`` lists ``file:key: reason`` lines."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class InputError(SentinelError):
    """An input file or body cannot be used at all (bad rows are counted, not raised)."""


class CheckpointError(SentinelError):
    """A checkpoint cannot be loaded safely."""


class SourceError(SentinelError):
    """A source failed in a way that retrying will not fix (bad query, missing table)."""


class SourceUnavailable(SourceError):
    """The source's server cannot be reached right now; the caller retries with backoff."""


class SinkError(SentinelError):
    """A notification could not be delivered; the outbox retries it."""
