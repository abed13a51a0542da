"""Topic -> stream labels: the segments after a prefix, named by ``key_from_topic``.

>>> m = TopicKey("plant", ["site", "machine"])
>>> m.labels("plant/s1/m7/telemetry")
(('site', 's1'), ('machine', 'm7'))
>>> m.labels("other/s1/m7") is None, m.labels("plant/s1") is None
(True, True)
>>> TopicKey("", ["_", "machine"]).labels("s1/m7")
(('machine', 'm7'),)
"""

from __future__ import annotations

SKIP = "_"


class TopicKey:
    """Maps a topic to labels; ``None`` when the topic lacks the prefix or a named segment."""

    def __init__(self, prefix: str, names: list[str]):
        self.prefix = tuple(p for p in prefix.strip("/").split("/") if p) if prefix else ()
        self.names = tuple(names)
        self._cache: dict[str, tuple[tuple[str, str], ...] | None] = {}

    def labels(self, topic: str) -> tuple[tuple[str, str], ...] | None:
        got = self._cache.get(topic, _MISS)
        if got is not _MISS:
            return got  # type: ignore[return-value]
        out = self._map(topic)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[topic] = out
        return out

    def _map(self, topic: str) -> tuple[tuple[str, str], ...] | None:
        if not self.prefix and not self.names:
            return ()
        parts = topic.split("/")
        n = len(self.prefix)
        if tuple(parts[:n]) != self.prefix:
            return None
        rest = parts[n:]
        if len(rest) < len(self.names):
            return None
        out = []
        for name, seg in zip(self.names, rest, strict=False):
            if name == SKIP:
                continue
            if not seg:
                return None
            out.append((name, seg))
        return tuple(out)


_MISS = object()
