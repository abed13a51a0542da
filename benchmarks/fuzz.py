"""Mutation fuzzing of every parser an outsider can feed: 10⁶ inputs, crashes must be 0.

Targets (share of ``--inputs``):

* ``lp`` (75 %): line-protocol bodies through ``StreamSelector.parse_body`` (tagset and
  per-field selectors, kept across inputs, so state growth shows in RSS) and the
  reference ``parse``; any exception is a crash ("never raises on content").
* ``csv`` (12 %): replay CSV files through the replay reader and its timestamp and
  value parsing; ``InputError`` / ``ValueError`` are expected, anything else a crash.
* ``config`` (8 %): config files through ``load_config``; only ``ConfigError`` is expected.
* ``checkpoint`` (5 %): checkpoint files through ``checkpoint.load``, mutated as raw bytes
  and, inside a valid zip, as the pickle the weights-only unpickler reads; only
  ``CheckpointError`` is expected, and a marker file proves no code ran.

Inputs are seeded corpora mutated (bit flips, random bytes, dictionary tokens,
deletions, duplications, truncation, splices); the run is deterministic for a
``--seed``. Also reported: the slowest single input per target and the peak RSS.
Crashing inputs are written to ``--crash-dir``.

    .venv/bin/python benchmarks/fuzz.py [--inputs 1000000] [--seed 1] [--crash-dir out/fuzz]
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import pickle
import random
import resource
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import torch

from sentinel.config import ConfigError, load_config
from sentinel.errors import CheckpointError, InputError
from sentinel.lineprotocol import PRECISION_NS, parse
from sentinel.sources.selector import Selection, StreamSelector
from sentinel.state import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]

LP_SEEDS = [
    b"cpu,host=a,region=eu usage=0.5,idle=99i 1700000000000000000",
    b"weather,station=x temp=21.5,hum=40u,ok=t\nweather,station=y temp=-3e2 1700000000",
    b'm,t=a\\ b\\,c s="quoted \\" str",v=1 1\n# comment\n\nm v=2',
    b"probe,machine=fut value=1 9000000000\nprobe,machine=fut value=2 9000000001",
    b"m,a=1,b=2,c=3 " + b",".join(b"f%d=%d" % (i, i) for i in range(80)) + b" 5",
    b'm v=1.5 1\nm v=NaN 2\nm v=inf 3\nm v=1e400 4\nm,=x v=1\nm v="a\nb" 5',
]
LP_TOKENS = [b",", b"=", b" ", b"\\", b'"', b"\n", b"#", b"i", b"u", b"e", b"-", b"9" * 25, b"NaN", b"t", b"\r",
             b"\xff", b"\x00", b"\xc3\xa9", b"\xed\xa0\x80", b"=\"", b"\\\n", b"  ", b"1e-400", b"0x1p3"]

CSV_SEEDS = [
    b"timestamp,value\n2024-01-01T00:00:00Z,1.5\n2024-01-01T00:01:00Z,2\n",
    b"timestamp;value\n1700000000;1,5\n1700000060;\n",
    b'\xef\xbb\xbftimestamp,value,label\n"2024-01-01 00:00:00+02:00","3.5",1\n1700000000.5,nan,0\n',
    b"timestamp,value\n0001-01-01T00:00:00+01:00,1\n9999-12-31T23:59:59-01:00,2\ninf,3\n",
]
CSV_TOKENS = [b",", b";", b"\t", b'"', b"\n", b"\r\n", b"T", b"Z", b"+14:00", b"-", b":", b"1e999", b"nan", b"\xff",
              b"\x00", b"timestamp", b"value", b"9" * 30, b"0001-01-01"]

CONFIG_TOKENS = [b"&a ", b"*a", b"[", b"]", b"{", b"}", b": ", b"\n  ", b"- ", b"!!python/object:os.system ",
                 b".nan", b".inf", b"${X}", b"${X:-", b"<<: *a", b"'", b'"', b"\xff", b"9" * 5000, b"0", b"-1",
                 b"checkpoint_interval", b"listen", b":9680", b"\t", b"\x00", b"? "]


def mutate(rnd: random.Random, data: bytes, tokens: list[bytes], corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 5)):
        op = rnd.randrange(8)
        i = rnd.randint(0, len(b))
        if op == 0 and b:
            j = min(i, len(b) - 1)
            b[j] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rnd.randrange(256)
        elif op in (2, 3):
            b[i:i] = rnd.choice(tokens)
        elif op == 4 and b:
            del b[i:i + rnd.randint(1, 16)]
        elif op == 5 and b:
            j = rnd.randint(0, len(b))
            a, z = min(i, j), max(i, j)
            b[a:a] = b[a:z][:4096] * rnd.randint(1, 4)
        elif op == 6:
            del b[i:]
        else:
            other = rnd.choice(corpus)
            k = rnd.randint(0, len(other))
            b[i:] = other[k:]
    return bytes(b[:1 << 20])


# -- the replay CSV reader: sentinel.replay today, a package tomorrow ---------------------------------
def _find(names: list[str], attr: str) -> Callable | None:
    for mod in names:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        if hasattr(m, attr):
            return getattr(m, attr)
    return None


_MODS = ["sentinel.replay", "sentinel.replay.reader", "sentinel.sources.replay"]
READ_SERIES = _find(_MODS, "read_series")  # the replay package: sniffing, columns and time parsing in one
READ_ROWS = None if READ_SERIES is not None else _find(_MODS, "read_rows")  # the old one-module replay
PARSE_TS = _find([*_MODS, "sentinel.replay.timeparse"], "parse_timestamp")


class Fuzz:
    def __init__(self, seed: int, work: Path, crash_dir: Path):
        self.rnd = random.Random(seed)
        self.work, self.crash_dir = work, crash_dir
        self.crashes: Counter[str] = Counter()
        self.inputs: Counter[str] = Counter()
        self.slowest: dict[str, float] = {}
        self.rss_mb: dict[str, float] = {}
        self.marker = work / "pwned"
        self.lp_sel = [StreamSelector(Selection(max_streams=5000)),
                       StreamSelector(Selection(stream_per="field", max_streams=5000))]
        self.ckpt_seed = self._checkpoint_seed()

    def _checkpoint_seed(self) -> bytes:
        p = ckpt.save(self.work / "seed", {"model_version": 1, "groups": {"1": {"keys": ["a"]}}, "cursors": {}},
                      {"g1.bank.W": torch.randn(2, 4, 3), "g1.a.ready": torch.tensor([True, False])})
        return p.read_bytes()

    def record(self, target: str, data: bytes, e: BaseException) -> None:
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        sig = f"{target} {type(e).__name__} at {where}"
        if sig not in self.crashes:
            self.crash_dir.mkdir(parents=True, exist_ok=True)
            (self.crash_dir / f"{target}-{len(self.crashes)}.bin").write_bytes(data)
            print(f"# CRASH {sig}: {str(e).splitlines()[0][:160] if str(e) else ''}", flush=True)
        self.crashes[sig] += 1

    def timed(self, target: str, data: bytes, fn: Callable[[bytes], None]) -> None:
        t = time.perf_counter()
        try:
            fn(data)
        except Exception as e:
            self.record(target, data, e)
        dt = time.perf_counter() - t
        if dt > self.slowest.get(target, 0.0):
            self.slowest[target] = dt
        self.inputs[target] += 1

    # -- targets -----------------------------------------------------------------------------------
    def lp(self, data: bytes) -> None:
        body = data.decode("utf-8", errors="replace")
        prec = self.rnd.choice(list(PRECISION_NS))
        for sel in self.lp_sel:
            sel.parse_body(body, prec, now_ns=1_700_000_000_000_000_000)
        parse(body, prec)

    def csv(self, data: bytes) -> None:
        p = self.work / "in.csv"
        p.write_bytes(data)
        if READ_SERIES is not None:
            with contextlib.suppress(InputError):
                READ_SERIES(p)
            return
        if READ_ROWS is None:
            return
        try:
            stamps, rows = READ_ROWS(p, ["value"])
        except InputError:
            return
        for s in stamps[:200]:
            with contextlib.suppress(ValueError, OverflowError):  # what replay counts as a bad row
                PARSE_TS(s)  # type: ignore[misc]
        for r in rows[:200]:
            for v in r:
                with contextlib.suppress(ValueError):
                    float(v)

    def config(self, data: bytes) -> None:
        p = self.work / "c.yaml"
        p.write_bytes(data)
        with contextlib.suppress(ConfigError):
            load_config(p, env={"X": "1"})

    def checkpoint(self, data: bytes) -> None:
        p = self.work / "ck" / "checkpoint-00000001.pt"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        with contextlib.suppress(CheckpointError):
            ckpt.load(p)
        if self.marker.exists():
            raise AssertionError("a checkpoint ran code")

    def checkpoint_pickle(self, rnd: random.Random) -> bytes:
        """A valid zip whose data.pkl is mutated (so the weights-only unpickler itself is fuzzed)."""
        src = zipfile.ZipFile(io.BytesIO(self.ckpt_seed))
        out = io.BytesIO()
        evil = pickle.dumps((os.system, (f"touch {self.marker}",)), protocol=2)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("data.pkl"):
                    data = mutate(rnd, data, [evil[:20], b"c", b"\x80\x02", b"R", b"\x93", b"(", b"."], [data, evil])
                z.writestr(info.filename, data)
        return out.getvalue()

    def run(self, n: int) -> None:
        shares = {"lp": 0.75, "csv": 0.12, "config": 0.08, "checkpoint": 0.05}
        cfg_corpus = [p.read_bytes() for p in sorted((REPO / "config").glob("*.yaml"))] + [
            b"a: &a [1,2]\nb: [*a, *a]\n", b"model: {hidden: 8}\nstate: {checkpoint_interval: 30s}\n"]
        plan = [(t, int(n * s)) for t, s in shares.items()]
        plan[0] = ("lp", n - sum(k for _, k in plan[1:]))
        rnd = self.rnd
        for target, count in plan:
            t0 = time.perf_counter()
            for i in range(count):
                if target == "lp":
                    self.timed("lp", mutate(rnd, rnd.choice(LP_SEEDS), LP_TOKENS, LP_SEEDS), self.lp)
                elif target == "csv":
                    self.timed("csv", mutate(rnd, rnd.choice(CSV_SEEDS), CSV_TOKENS, CSV_SEEDS), self.csv)
                elif target == "config":
                    self.timed("config", mutate(rnd, rnd.choice(cfg_corpus), CONFIG_TOKENS, cfg_corpus), self.config)
                else:
                    data = (self.checkpoint_pickle(rnd) if i % 2 else
                            mutate(rnd, self.ckpt_seed, [b"PK\x03\x04", b"\x00" * 64, b"\xff"], [self.ckpt_seed]))
                    self.timed("checkpoint", data, self.checkpoint)
            self.rss_mb[target] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"# {target}: {count} inputs in {time.perf_counter() - t0:.1f}s, "
                  f"crashes={sum(v for k, v in self.crashes.items() if k.startswith(target + ' '))}, "
                  f"slowest={self.slowest.get(target, 0) * 1e3:.1f}ms, peak_rss={self.rss_mb[target]:.0f}MB",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crash-dir", default=str(REPO / "out" / "fuzz"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)  # torch on fuzzed pickle protocol numbers
    print(f"# seed={a.seed} inputs={a.inputs} csv_reader={getattr(READ_SERIES or READ_ROWS, '__qualname__', 'MISSING')}")
    with tempfile.TemporaryDirectory(prefix="sentinel-fuzz-") as tmp:
        f = Fuzz(a.seed, Path(tmp), Path(a.crash_dir))
        t0 = time.perf_counter()
        f.run(a.inputs)
        wall = time.perf_counter() - t0
    for sig, k in f.crashes.most_common():
        print(f"# {k:7d}x {sig}")
    total = sum(f.crashes.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + " ".join([f"inputs={sum(f.inputs.values())}", f"crashes={total}",
                                f"distinct_crashes={len(f.crashes)}",
                                *(f"{t}_inputs={f.inputs[t]}" for t in ("lp", "csv", "config", "checkpoint")),
                                *(f"{t}_slowest_ms={f.slowest.get(t, 0) * 1e3:.1f}" for t in ("lp", "csv", "config",
                                                                                               "checkpoint")),
                                f"peak_rss_mb={peak:.0f}", f"seconds={wall:.0f}"]))


if __name__ == "__main__":
    main()
