"""YAML parsing that a hostile or broken file cannot turn into a traceback, a hang or a memory blow-up.

Before PyYAML builds any object, the event stream is walked once (the parser is a
state machine, so this does not recurse) to bound:

* nesting depth (:data:`MAX_DEPTH`): PyYAML's composer recurses per level, so
  thousands of nested ``[`` would end in ``RecursionError``;
* aliases inside the value they name (a value containing itself);
* repeated keys in one mapping (YAML keeps the last silently; a strict config refuses);
* the size of the document with every alias expanded (:data:`MAX_NODES`): a
  "billion laughs" alias bomb is a few hundred bytes that expand to 10⁹ nodes;
  counting is O(events), so it is refused in milliseconds.

Any other failure of the loader (a 5,000-digit integer, a bad tag) becomes a
:class:`YamlProblem` naming the line.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_BYTES = 4 * 1024 * 1024

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader


class YamlProblem(ValueError):
    """Why a text is not acceptable YAML; ``where`` is ``line N`` or ``(file)``."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")


def _line(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}" if mark is not None else "?"


def check_structure(text: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Raise :class:`YamlProblem` if ``text`` nests deeper than ``max_depth``, expands past ``max_nodes``
    or repeats a key within one mapping (YAML would keep the last one silently)."""
    sizes: dict[str, int] = {}  # anchor -> nodes its value expands to
    # per open collection: [nodes so far, anchor, keys seen (None for a sequence), next node is a key]
    stack: list[list[Any]] = [[0, None, None, False]]
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if not isinstance(ev, yaml.NodeEvent | yaml.CollectionEndEvent):
                continue
            top = stack[-1]
            if not isinstance(ev, yaml.CollectionEndEvent) and top[2] is not None:
                if top[3] and isinstance(ev, yaml.ScalarEvent) and ev.value != "<<":
                    if ev.value in top[2]:
                        raise YamlProblem(_line(ev), f"key {ev.value!r} given twice in one mapping")
                    top[2].add(ev.value)
                top[3] = not top[3]
            if isinstance(ev, yaml.CollectionStartEvent):
                if len(stack) > max_depth:
                    raise YamlProblem(_line(ev), f"nested more than {max_depth} levels deep")
                stack.append([1, ev.anchor, set() if isinstance(ev, yaml.MappingStartEvent) else None, True])
            elif isinstance(ev, yaml.CollectionEndEvent):
                n, anchor, _, _ = stack.pop()
                if anchor is not None:
                    sizes[anchor] = n
                stack[-1][0] += n
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.anchor is not None:
                    sizes[ev.anchor] = 1
                top[0] += 1
            elif isinstance(ev, yaml.AliasEvent):
                if any(f[1] == ev.anchor for f in stack):
                    raise YamlProblem(_line(ev), f"alias *{ev.anchor} refers to a value that contains it")
                top[0] += sizes.get(ev.anchor or "", 1)  # an undefined alias: the composer reports it
            if sum(f[0] for f in stack) > max_nodes:
                raise YamlProblem(_line(ev), f"more than {max_nodes} values once aliases are expanded "
                                             "(an alias bomb?)")
    except yaml.YAMLError as e:
        raise _problem(e) from None


def _problem(e: yaml.YAMLError) -> YamlProblem:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "?"
    return YamlProblem(where, f"invalid YAML: {getattr(e, 'problem', None) or e}")


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` behind :func:`check_structure`; every failure is a :class:`YamlProblem`."""
    if len(text) > MAX_BYTES:
        raise YamlProblem("(file)", f"larger than {MAX_BYTES // (1024 * 1024)} MiB; not a config file")
    check_structure(text)
    try:
        return yaml.load(text, Loader=_Loader)  # a safe loader (CSafeLoader or SafeLoader)
    except yaml.YAMLError as e:
        raise _problem(e) from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:  # e.g. int() past 4300 digits
        raise YamlProblem("?", f"invalid YAML value: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None


def decode(data: bytes, max_bytes: int = MAX_BYTES) -> str:
    """Config file bytes -> text (UTF-8, an optional BOM); :class:`YamlProblem` says where it is not UTF-8."""
    if len(data) > max_bytes:
        raise YamlProblem("(file)", f"larger than {max_bytes // (1024 * 1024)} MiB; not a config file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise YamlProblem(f"line {line}", f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") \
            from None
