"""The whole configuration, section by section, with every default in one place.

Every key below has a default; a config file only states what differs. Unknown
keys are errors. Durations accept ``30s``, ``5m``, ``6h``, ``1d`` or seconds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._base import Duration, Strict
from .cluster import ClusterConfig
from .sinks import SinksConfig
from .source_influxdb import InfluxDBSourceConfig
from .source_mqtt import MQTTSourceConfig
from .source_postgres import PostgresSourceConfig
from .source_simulator import SimulatorSourceConfig


class WalConfig(Strict):
    """The write-ahead log of pushed writes (``sentinel.state.wal``): a write is acknowledged once in it."""

    enabled: bool = Field(True, description="off: writes are acknowledged once queued (a kill -9 loses them)")
    dir: str | None = Field(None, description="segment directory, relative to the config file; "
                                              "default: wal/ inside state.dir")
    fsync: Literal["always", "batch", "off"] = Field(
        "always", description="always: fsync before acknowledging (concurrent writes share one); batch: wait up "
        "to fsync_delay for more writes first; off: never fsync (survives kill -9, not power loss)")
    fsync_delay: Duration = Field(0.005, le=1.0, description="batch: longest wait before an fsync")
    segment_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, description="a new segment file after this size")
    max_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024,
                           description="bound on the log; a write past it gets 503 with Retry-After")
    retry_after: Duration = Field(5.0, gt=0, description="Retry-After of a 503 while the log is full")


class ServerConfig(Strict):
    listen: str = Field("127.0.0.1:9680", description="HOST:PORT of the one HTTP server")
    external_url: str | None = Field(None, description="URL alerts link back to; default http://<listen>/")
    web_config_file: str | None = Field(None, description="Prometheus exporter-style TLS/basic-auth file "
                                        "(re-read at every reload)")
    open_probes: bool = Field(False, description="/-/healthy and /-/ready answer without basic auth "
                                                 "(for Kubernetes probes and container health checks)")
    max_body_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    status_page_streams: int = Field(48, ge=0, description="streams drawn with charts on /")
    ingest_workers: int = Field(1, ge=0, le=16, description="processes that parse pushed line protocol beside "
                                "the scoring thread (sentinel.sources.parsepool); 0: parse in the daemon. 1 measured "
                                "best on 2 cores (benchmarks/README.md)")
    wal: WalConfig = Field(default_factory=WalConfig)

    @model_validator(mode="after")
    def _listen_ok(self) -> ServerConfig:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be HOST:PORT (0.0.0.0:PORT or [::]:PORT for every interface), "
                             f"got {self.listen!r}")
        return self

    @model_validator(mode="after")
    def _wal_fits_a_body(self) -> ServerConfig:
        if self.wal.enabled and self.wal.max_bytes < 2 * self.max_body_bytes:
            raise ValueError(f"wal.max_bytes ({self.wal.max_bytes}) must be at least twice max_body_bytes "
                             f"({self.max_body_bytes}), or a largest write could never be logged")
        return self


class StreamsConfig(Strict):
    max_streams: int = Field(100_000, ge=1, description="streams beyond this are refused and counted")
    history_size: int = Field(2048, ge=64, description="samples kept per stream for training (ring buffer)")
    history_dtype: Literal["float32", "float16"] = Field(
        "float32", description="dtype of the history ring's values (float16: residuals from a per-stream centre, "
        "2 bytes a field instead of 4; benchmarks/README.md: quality of each); timestamps are kept to 1 ms"
    )
    max_gap_intervals: float = Field(
        20.0, gt=1, description="a gap longer than this many typical intervals resets the hidden state"
    )
    rewarm_samples: int = Field(32, ge=0, description="samples after a reset before the stream may alert")
    history_lookback: Duration = Field(
        7200.0, description="on a fresh start, read this much of each source's history for warm-up (0 = none)"
    )
    # Bounds on what an input can make Sentinel hold (each refusal is counted under its reason).
    max_fields: int = Field(64, ge=1, le=4096, description="numeric fields per stream (and per line)")
    max_future: Duration = Field(600.0, description="points further ahead of the clock are rejected (0 = no bound)")
    max_age: Duration = Field(0.0, description="points older than this behind the clock are rejected (0 = no bound)")
    max_key_length: int = Field(256, ge=1, description="bytes of a measurement name, tag key or field key")
    max_tag_value_length: int = Field(1024, ge=1, description="bytes of a tag value")
    max_series_per_body: int = Field(100_000, ge=1, description="distinct streams in one write request")
    max_refused_keys: int = Field(10_000, ge=0, description="refused stream keys remembered (a bounded set)")


class ModelConfig(Strict):
    cell: Literal["lstm", "gru"] = "lstm"
    hidden: int = Field(32, ge=2, le=1024)
    window: int = Field(8, ge=1, le=256, description="recent samples the decoder reconstructs from the state")
    prediction_weight: float = Field(
        1.0, ge=0, description="weight of the one-step prediction error added to the reconstruction error"
    )
    baseline_halflife: float = Field(
        1024.0, ge=0, description="ticks: inputs are normalised against a slow average of the stream with this "
        "half-life, so slower drift is followed (0 = the fixed training mean)"
    )
    level_weight: float = Field(
        0.25, ge=0, description="weight of the level term: how far a normalised sample lies beyond level_k"
    )
    baseline_alerting_rate: float = Field(
        0.0, ge=0, le=1, description="pace of the baseline on samples that fall in an alert (0 = frozen: a fault "
        "is not learned as the new level; 1 = as on any sample)"
    )
    level_halflife: float = Field(
        0.0, ge=0, description="ticks: the level term reads a fast average of the samples with this half-life, "
        "scaled to unit noise, so a sustained moderate shift adds up (0 = each sample alone)"
    )
    level_k: float = Field(1.0, ge=0, description="normalised distance from the baseline that costs nothing")
    level_shrink: float = Field(
        0.1, ge=-1, le=1, description="multivariate streams: the level term also reads each field against what "
        "the stream's other fields predict for it (a broken relation between fields), from their training "
        "covariance shrunk towards its diagonal by this much (negative = off: each field alone)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    score_threads: int = Field(1, ge=1, description="torch threads for scoring (training gets the rest)")
    weight_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="dtype the scoring bank stores each stream's recurrent weights in (the bytes every "
        "tick reads); the step sums in float32 (benchmarks/README.md: speed and quality of each)"
    )


class TrainConfig(Strict):
    min_history: int = Field(256, ge=16, description="samples a stream needs before its first training")
    min_history_span: Duration = Field(
        86400.0, description="time a stream's history must also span before its first training "
        "(a full history buffer suffices; 0 = samples only)"
    )
    epochs: int = Field(30, ge=1)
    bptt: int = Field(16, ge=4, description="truncated-BPTT chunk length")
    segments: int = Field(8, ge=1, description="parallel segments per stream within one step")
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    val_fraction: float = Field(0.2, gt=0, lt=0.9)
    retrain_interval: Duration = Field(86400.0, description="retrain every stream this often (0 = never)")
    drift_retrain: bool = Field(True, description="retrain a stream early when its error level drifts")
    batch_streams: int = Field(4096, ge=1, description="streams trained together in one batch")
    threads: int = Field(1, ge=1, description="torch threads for background training on CPU")
    seed: int = 0
    progress: bool = Field(True, description="log each training job at info level (false: at debug); "
                           "`sentinel train` also prints every epoch")


class ThresholdConfig(Strict):
    method: Literal["dspot", "spot", "quantile"] = "dspot"
    risk: float = Field(1e-4, gt=0, lt=0.5, description="tail probability at which the threshold sits")
    init_quantile: float = Field(0.98, gt=0.5, lt=1, description="SPOT: quantile above which peaks are fitted")
    depth: int = Field(32, ge=1, description="DSPOT: samples in the moving average of normal errors")
    max_peaks: int = Field(256, ge=8, description="SPOT: excesses kept per stream (newest)")
    decay: float = Field(0.999, gt=0.9, lt=1, description="quantile: per-sample forgetting factor")


class DetectConfig(Strict):
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    level_tail: bool = Field(
        True, description="score the level term also on its own tail, fitted at training and without a moving "
        "average, so a slow glide far outside the training range is not absorbed by the error threshold's "
        "drift (needs model.level_weight > 0)"
    )
    level_halflife: float = Field(
        16.0, ge=0, description="ticks: the level tail also reads a moving average of each field's normalised "
        "samples with this half-life against one 16 times slower (held while alerting), scaled to their "
        "difference's spread in training, so a moderate shift that persists adds up to a rare level while a "
        "slower drift cancels (0 = each sample alone)"
    )
    score_decades: float = Field(
        8.0, gt=0, description="score = -log10(tail probability)/score_decades, clipped to [0, 1]"
    )


class AlertsConfig(Strict):
    false_alerts_per_day: float | None = Field(
        0.1, gt=0, description="alert budget in time: each stream's enter level is set from its measured cadence "
        "so that a normal stream crosses it this often per day (tail probability = budget x interval / 1 day), "
        "never below `enter`; unset = the fixed `enter` level for every stream"
    )
    enter: float = Field(0.5, gt=0, le=1, description="score at or above which a stream goes pending")
    exit: float = Field(0.4, ge=0, le=1, description="score below which a firing alert may resolve")
    for_: Duration = Field(0.0, alias="for", description="time pending before firing")
    resolve_for: Duration = Field(0.0, description="time below exit before resolving")
    resolve_for_ticks: float = Field(
        10.0, ge=0, description="also at least this many of the stream's own ticks below exit before resolving, so "
        "an alert that dips for a tick or two stays one alert at any cadence"
    )
    for_ticks: int = Field(
        2, ge=0, description="also this many of the stream's own ticks after the crossing, each at or above exit, "
        "before a pending alert fires, as long as they span at most for_ticks_within: a one-tick blip on a 1 Hz "
        "sensor is not an incident, one on an hourly series may be"
    )
    for_ticks_within: Duration = Field(
        30.0, description="the most time for_ticks may add: a stream with fewer of its ticks in this span waits "
        "for as many as fit (none on a series slower than this)"
    )
    cooldown: Duration = Field(300.0, description="after a resolve, a new crossing re-opens it (counted as a flap)")
    flap_window: Duration = Field(3600.0)
    flap_max: int = Field(4, ge=1, description="resolves within flap_window after which resolving needs flap_hold")
    flap_hold: Duration = Field(600.0)
    severity: str = "warning"
    relearn_after: Duration = Field(
        21600.0, description="an alert firing this long (and at least 512 of the stream's ticks) is taken as a "
        "new normal: its samples become training data, the stream retrains and the alert resolves (0 = never)"
    )

    model_config = Strict.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _levels(self) -> AlertsConfig:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not be above enter ({self.enter})")
        return self


class MetricsConfig(Strict):
    per_stream: Literal["all", "non_ok", "none"] = "all"


class StateConfig(Strict):
    dir: str = Field("state", description="checkpoint directory, relative to the config file")
    checkpoint_interval: Duration = Field(60.0, ge=1.0, description="at least 1s")
    on_bad_checkpoint: Literal["fresh", "exit"] = "fresh"
    keep: int = Field(3, ge=1, description="checkpoints kept")
    checkpoint_chunk_bytes: int = Field(8 * 1024 * 1024, ge=1, description=(
        "per-tick state a checkpoint copies per engine-thread step, between ticks (the longest scoring pause)"))


class QueueConfig(Strict):
    ingest_max_batches: int = Field(1024, ge=1)
    ingest_overflow: Literal["drop_oldest", "drop_newest", "block"] = "block"


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


SourceConfig = Annotated[
    SimulatorSourceConfig | InfluxDBSourceConfig | PostgresSourceConfig | MQTTSourceConfig,
    Field(discriminator="type"),
]


class SentinelConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    queues: QueueConfig = Field(default_factory=QueueConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)  # --role router|scorer (DESIGN §10)
    fields: list[str] = Field(
        default_factory=lambda: ["value"], min_length=1, description="replay: value columns of the CSV"
    )

    @model_validator(mode="after")
    def _unique_source_names(self) -> SentinelConfig:
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"source names must be unique, repeated: {sorted(dup)}")
        return self
