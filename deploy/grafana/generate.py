#!/usr/bin/env python3
"""Generate Sentinel's Grafana dashboards from Python (grafana-foundation-sdk).

Writes ``deploy/grafana/dashboards/sentinel-overview.json`` and
``sentinel-stream.json``. The committed JSON is what Grafana provisions; a test
re-runs :func:`render` and compares, so edit this file and run::

    .venv/bin/python deploy/grafana/generate.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/generate.py --check  # exit 1 if out of date

Data sources (uids fixed by ``provisioning/datasources/sentinel.yaml``):
Prometheus scraping Sentinel (every panel of the overview and the live rows of the
stream dashboard), InfluxDB (raw series and score write-back) and PostgreSQL /
TimescaleDB (score write-back). Metric names are Sentinel's contract (DESIGN §7);
``sentinel:*`` series are recording rules from ``deploy/prometheus/rules/sentinel.yml``.
Every PromQL expression here is run against a real Prometheus scraping Sentinel by
``tests/integration/test_deploy_dashboards.py``: each must parse and return data,
which is why counters whose label values appear only on first use (rejections,
transitions, retrains, notifications) fall back to ``or on() vector(0)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

PROM = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
INFLUX = dm.DataSourceRef(type_val="influxdb", uid="sentinel-influxdb")
POSTGRES = dm.DataSourceRef(type_val="grafana-postgresql-datasource", uid="sentinel-postgres")

# Stream labels of the built-in simulator (and of the demo/compose InfluxDB data).
STREAM_SEL = 'measurement="$measurement", site="$site", sensor="$sensor"'
# Write-back targets (DESIGN §8): InfluxDB measurement (fields score, error, threshold, alert_state,
# share_<field>; tags: the stream's tags and measurement) and the PostgreSQL table of
# sentinel/writeback/postgres.py (time, measurement, labels jsonb, score, error, threshold,
# alert_state, "values" float8[], field_shares float8[]).
WB_MEASUREMENT = "sentinel_scores"
WB_TABLE = "sentinel_scores"

STATE_MAPPINGS = [
    dm.ValueMap(options={
        "0": dm.ValueMappingResult(text="ok", color="green", index=0),
        "1": dm.ValueMappingResult(text="pending", color="yellow", index=1),
        "2": dm.ValueMappingResult(text="firing", color="red", index=2),
    })
]


class RawQuery(cogvariants.Dataquery):
    """A data-source query the SDK has no typed builder for (InfluxQL, SQL): emitted as given."""

    def __init__(self, body: dict[str, Any]):
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body


class RawQueryBuilder:
    def __init__(self, **body: Any):
        self.body = body

    def build(self) -> RawQuery:
        return RawQuery(self.body)


def q(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prom.Dataquery:
    b = prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROM)
    return b.instant() if instant else b.range()


def influxql(query: str, ref: str = "A", alias: str = "") -> RawQueryBuilder:
    return RawQueryBuilder(refId=ref, datasource=INFLUX, rawQuery=True, resultFormat="time_series", query=query,
                           alias=alias)


def sql(query: str, ref: str = "A") -> RawQueryBuilder:
    return RawQueryBuilder(refId=ref, datasource=POSTGRES, editorMode="code", format="time_series", rawQuery=True,
                           rawSql=query)


def ts(title: str, desc: str, unit: str = "short", w: int = 12, h: int = 8) -> timeseries.Panel:
    return timeseries.Panel().title(title).description(desc).datasource(PROM).unit(unit).span(w).height(h)


def last_value() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def finish(dash: dict[str, Any]) -> dict[str, Any]:
    """What the SDK leaves out or sets oddly for provisioning.

    Stable panel ids (rows included), ``options: {}`` instead of ``null`` (panels whose
    options the SDK never touched), no placeholder variable ids, and Grafana's built-in
    annotation ahead of ours.
    """
    n = 0
    for p in dash["panels"]:
        for panel in (p, *p.get("panels", [])):
            n += 1
            panel["id"] = n
            if panel.get("options") is None:
                panel["options"] = {}
    for var in dash.get("templating", {}).get("list", []):
        var.pop("id", None)
    builtin = {
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
    }
    dash["annotations"] = {"list": [builtin, *dash.get("annotations", {}).get("list", [])]}
    return dash


def overview() -> dict[str, Any]:
    d = (
        db.Dashboard("Sentinel — fleet overview")
        .uid("sentinel-overview")
        .description("Sentinel's streams, alerts, ingest, scoring, retraining and alert delivery.")
        .tags(["sentinel", "anomaly-detection"])
        .refresh("30s")
        .time("now-3h", "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var())
        .link(db.DashboardLink("Stream").type(dm.DashboardLinkType.DASHBOARDS).tags(["sentinel"]).as_dropdown(True)
              .keep_time(True))
        .with_row(db.Row("Fleet"))
        .with_panel(
            stat.Panel().title("Streams by state").datasource(PROM).span(8).height(6)
            .description("warming: collecting history; ready: model trained, re-warming; ok/pending/firing: alert state.")
            .reduce_options(last_value())
            .with_target(q("sentinel:streams:by_state", "{{state}}", instant=True))
        )
        .with_panel(
            stat.Panel().title("Firing").datasource(PROM).span(4).height(6)
            .description("Streams whose anomaly alert is firing now.")
            .reduce_options(last_value())
            .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([
                dm.Threshold(value=None, color="green"), dm.Threshold(value=1, color="red")]))
            .with_target(q('sum(sentinel:streams:by_state{state="firing"}) or on() vector(0)', "firing",
                           instant=True))
        )
        .with_panel(
            stat.Panel().title("Model version").datasource(PROM).span(4).height(6)
            .description("Model bank version in use (highest across instances).")
            .reduce_options(last_value())
            .with_target(q("max(sentinel_model_version)", "version", instant=True))
        )
        .with_panel(
            stat.Panel().title("Last checkpoint age").datasource(PROM).span(4).height(6).unit("s")
            .description("Seconds since the oldest instance last wrote a checkpoint.")
            .reduce_options(last_value())
            .with_target(q("time() - min(sentinel_checkpoint_last_success_timestamp_seconds)", "age", instant=True))
        )
        .with_panel(
            stat.Panel().title("Config reload").datasource(PROM).span(4).height(6)
            .description("1 if every instance's last config reload succeeded.")
            .mappings([dm.ValueMap(options={
                "0": dm.ValueMappingResult(text="failed", color="red", index=0),
                "1": dm.ValueMappingResult(text="ok", color="green", index=1)})])
            .reduce_options(last_value())
            .with_target(q("min(sentinel_config_last_reload_successful)", "reload", instant=True))
        )
        .with_panel(
            ts("Streams by state", "Streams per lifecycle / alert state over time.", w=12)
            .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(30)
            .with_target(q("sentinel:streams:by_state", "{{state}}"))
        )
        .with_panel(
            ts("Alert rate", "New firing alerts per second (per measurement) and alert transitions by status.",
               unit="ops", w=12)
            .with_target(q("sentinel:alerts:rate5m", "fired {{measurement}}"))
            .with_target(q("sentinel:alert_transitions:rate5m or on() vector(0)", "{{status}}", ref="B"))
        )
        .with_panel(
            table.Panel().title("Top anomalous streams").datasource(PROM).span(12).height(9)
            .description("The 10 streams with the highest anomaly score now.")
            .with_target(q("topk(10, sentinel_anomaly_score)", "{{measurement}} {{site}} {{sensor}}", instant=True)
                         .format(pm.PromQueryFormat.TABLE))
        )
        .with_panel(
            bargauge.Panel().title("Top anomalous streams (score)").datasource(PROM).span(12).height(9)
            .min(0).max(1).reduce_options(last_value())
            .with_target(q("topk(10, sentinel_anomaly_score)", "{{measurement}} {{site}} {{sensor}}", instant=True))
        )
        .with_row(db.Row("Ingest"))
        .with_panel(
            ts("Ingest rate", "Samples accepted for scoring per second, by source.", unit="ops", w=8)
            .with_target(q("sentinel:samples_ingested:rate1m", "{{source}}"))
        )
        .with_panel(
            ts("Ingest lag", "Age of the newest scored sample when it was scored, by source.", unit="s", w=8)
            .with_target(q("max by (source) (sentinel_ingest_lag_seconds)", "{{source}}"))
        )
        .with_panel(
            ts("Rejected samples", "Samples rejected per second, by reason (out of order, duplicate, non-finite…).",
               unit="ops", w=8)
            .with_target(q("sentinel:samples_rejected:rate5m or on() vector(0)", "{{reason}}"))
        )
        .with_panel(
            ts("Sources up", "1 while a source is connected.", w=8)
            .with_target(q("min by (source) (sentinel_source_up)", "{{source}}"))
        )
        .with_panel(
            ts("Queue depth", "Items waiting in Sentinel's bounded queues.", w=8)
            .with_target(q("max by (queue) (sentinel_queue_depth)", "{{queue}}"))
        )
        .with_panel(
            ts("Queue drops", "Items dropped by a queue's overflow policy, per second.", unit="ops", w=8)
            .with_target(q("sum by (queue) (rate(sentinel_queue_dropped_total[$__rate_interval])) or on() vector(0)",
                           "{{queue}}"))
        )
        .with_row(db.Row("Scoring"))
        .with_panel(
            ts("Scoring latency", "Time to score one batch (all streams that got a sample this round).", unit="s")
            .with_target(q("sentinel:score_batch_seconds:p50", "p50"))
            .with_target(q("sentinel:score_batch_seconds:p99", "p99", ref="B"))
        )
        .with_panel(
            ts("Scored batches", "Batches scored per second.", unit="ops")
            .with_target(q("sum(rate(sentinel_score_batch_seconds_count[$__rate_interval]))", "batches/s"))
        )
        .with_row(db.Row("Model"))
        .with_panel(
            ts("Retraining", "Retraining runs per hour, by result (success, rejected by validation, failure).", w=8)
            .draw_style(cm.GraphDrawStyle.BARS)
            .with_target(q("sum by (result) (increase(sentinel_retrain_total[1h])) or on() vector(0)", "{{result}}"))
        )
        .with_panel(
            ts("Retrain duration", "Mean wall time of a retraining run over the last hour.", unit="s", w=8)
            .with_target(q("sum(rate(sentinel_retrain_duration_seconds_sum[1h])) "
                           "/ sum(rate(sentinel_retrain_duration_seconds_count[1h]))", "mean"))
        )
        .with_panel(
            ts("Model version", "Model bank version over time; a step is a hot-swapped retrained model.", w=8)
            .with_target(q("max(sentinel_model_version)", "version"))
        )
        .with_row(db.Row("Alert delivery"))
        .with_panel(
            ts("Outbox depth", "Notifications waiting in the durable outbox, by sink.", w=8)
            .with_target(q("sum by (sink) (sentinel_outbox_pending) or on() vector(0)", "{{sink}}"))
        )
        .with_panel(
            ts("Notifications", "Notification attempts per second, by sink and result.", unit="ops", w=8)
            .with_target(q("sum by (sink, result) (rate(sentinel_notifications_total[$__rate_interval])) "
                           "or on() vector(0)", "{{sink}} {{result}}"))
        )
        .with_panel(
            ts("Outbox drops", "Notifications dropped because the outbox was full (last hour).", w=8)
            .with_target(q("sum by (sink) (increase(sentinel_outbox_dropped_total[1h])) or on() vector(0)",
                           "{{sink}}"))
        )
        # --role router|scorer on NATS JetStream (README "Scaling out"); a --role all instance exports
        # none of these, hence the fallbacks.
        .with_row(db.Row("Cluster (NATS JetStream)"))
        .with_panel(
            ts("Partitions owned", "Partitions each scorer owns; a step is a handover (scale out/in, a restart).", w=8)
            .with_target(q("sum by (instance) (sentinel_partitions_owned) or on() vector(0)", "{{instance}}"))
        )
        .with_panel(
            ts("Partition lag", "Messages of a partition not yet fetched by its scorer: the 10 most behind, "
               "and all partitions together. Exact seconds per partition: GET /api/v1/cluster.", w=8)
            .with_target(q("topk(10, max by (partition) (sentinel_partition_lag_messages)) or on() vector(0)",
                           "p{{partition}}"))
            .with_target(q("sum(sentinel_partition_lag_messages) or on() vector(0)", "all", ref="B"))
        )
        .with_panel(
            ts("Published model version", "Model version of the partitions' published models "
               "(sentinel train --publish): lowest and highest across partitions; they meet once every "
               "scorer picked the announced version up.", w=8)
            .with_target(q("min(sentinel_partition_model_version) or on() vector(0)", "min"))
            .with_target(q("max(sentinel_partition_model_version) or on() vector(0)", "max", ref="B"))
        )
        .with_panel(
            ts("Router publish rate", "Samples published to JetStream per second, by router; publish errors "
               "(bodies answered 5xx, retried by the agent).", unit="ops", w=8)
            .with_target(q("sum by (instance) (rate(sentinel_router_published_total[$__rate_interval])) "
                           "or on() vector(0)", "{{instance}}"))
            .with_target(q("sum(rate(sentinel_router_publish_errors_total[$__rate_interval])) or on() vector(0)",
                           "errors", ref="B"))
        )
        .with_panel(
            ts("Poller lease", "1 on the router that holds the pollers' lease (reads the databases); it moves "
               "when that router dies.", w=8)
            .with_target(q("max by (instance) (sentinel_poller_lease_held) or on() vector(0)", "{{instance}}"))
        )
        .with_panel(
            ts("Partition checkpoint", "Time to write one partition's checkpoint to the object store (p99).",
               unit="s", w=8)
            .with_target(q("histogram_quantile(0.99, sum by (le) "
                           "(rate(sentinel_partition_checkpoint_seconds_bucket[$__rate_interval]))) or on() vector(0)",
                           "p99"))
        )
    )
    return finish(to_dict(d))


def stream() -> dict[str, Any]:
    def lv(selector: str, label: str) -> str:
        return f"label_values(sentinel_anomaly_score{{{selector}}}, {label})" if selector else \
            f"label_values(sentinel_anomaly_score, {label})"

    wb_where = "\"measurement\" = '$measurement' AND \"site\" = '$site' AND \"sensor\" = '$sensor' AND $timeFilter"
    pg_where = ("measurement = '$measurement' AND labels->>'site' = '$site' AND labels->>'sensor' = '$sensor' "
                "AND $__timeFilter(time)")
    d = (
        db.Dashboard("Sentinel — stream")
        .uid("sentinel-stream")
        .description("One stream: its value and expected band, anomaly score, error vs threshold, alert spans and "
                     "per-field error share.")
        .tags(["sentinel", "anomaly-detection"])
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var())
        .with_variable(db.QueryVariable("measurement").label("Measurement").datasource(PROM)
                       .query(lv("", "measurement")).refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_variable(db.QueryVariable("site").label("Site").datasource(PROM)
                       .query(lv('measurement="$measurement"', "site"))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_variable(db.QueryVariable("sensor").label("Sensor").datasource(PROM)
                       .query(lv('measurement="$measurement", site="$site"', "sensor"))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_variable(db.QueryVariable("field").label("Field").datasource(PROM)
                       .query(f"label_values(sentinel_expected_value{{{STREAM_SEL}}}, field)")
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .annotation(db.AnnotationQuery().name("Alert firing").datasource(PROM).enable(True).icon_color("red")
                    .expr(f"sentinel_alert_state{{{STREAM_SEL}}} == 2"))
        .link(db.DashboardLink("Fleet overview").type(dm.DashboardLinkType.DASHBOARDS).tags(["sentinel"])
              .keep_time(True))
        .with_row(db.Row("Live (Prometheus)"))
        .with_panel(
            ts("Anomaly score", "Calibrated score in [0, 1]; the same value means the same rarity on every stream.",
               w=12)
            .min(0).max(1)
            .with_target(q(f"max(sentinel_anomaly_score{{{STREAM_SEL}}})", "score"))
        )
        .with_panel(
            ts("Reconstruction error and threshold", "Error of the last sample and the adaptive threshold on it.",
               w=12)
            .with_target(q(f"max(sentinel_reconstruction_error{{{STREAM_SEL}}})", "error"))
            .with_target(q(f"max(sentinel_threshold{{{STREAM_SEL}}})", "threshold", ref="B"))
        )
        .with_panel(
            timeseries.Panel().title("Expected value and band").datasource(PROM).span(24).height(8)
            .description("The model's expected value of $field for each sample and its band, in the sensor's own "
                         "units: a value outside the band is a field error above its share of the threshold. "
                         "The raw value is in the Value panel below.")
            .with_target(q(f"max(sentinel_expected_lower{{{STREAM_SEL}, field=\"$field\"}})", "lower"))
            .with_target(q(f"max(sentinel_expected_upper{{{STREAM_SEL}, field=\"$field\"}})", "upper", ref="B"))
            .with_target(q(f"max(sentinel_expected_value{{{STREAM_SEL}, field=\"$field\"}})", "expected", ref="C"))
            .override_by_name("upper", [dm.DynamicConfigValue(id_val="custom.fillBelowTo", value="lower"),
                                        dm.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
                                        dm.DynamicConfigValue(id_val="custom.lineWidth", value=0)])
            .override_by_name("lower", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=0)])
            .override_by_name("expected", [dm.DynamicConfigValue(id_val="custom.lineStyle",
                                                                 value={"fill": "dash", "dash": [6, 4]})])
        )
        .with_panel(
            statetimeline.Panel().title("Alert state").datasource(PROM).span(18).height(4)
            .description("ok → pending → firing; firing spans are also drawn as annotations.")
            .mappings(STATE_MAPPINGS)
            .with_target(q(f"max(sentinel_alert_state{{{STREAM_SEL}}})", "state"))
        )
        .with_panel(
            stat.Panel().title("Alerts fired").datasource(PROM).span(6).height(4)
            .reduce_options(last_value())
            .with_target(q(f"max(sentinel_alerts_total{{{STREAM_SEL}}})", "alerts", instant=True))
        )
        .with_row(db.Row("Value and write-back (InfluxDB)"))
        .with_panel(
            timeseries.Panel().title("Value").datasource(INFLUX).span(12).height(8)
            .description("The stream's raw fields from the source database.")
            .with_target(influxql("SELECT mean(*) FROM \"$measurement\" WHERE \"site\" = '$site' AND "
                                  "\"sensor\" = '$sensor' AND $timeFilter GROUP BY time($__interval) fill(none)"))
        )
        .with_panel(
            timeseries.Panel().title("Score and threshold (write-back)").datasource(INFLUX).span(12).height(8)
            .description(f"Sentinel's write-back measurement {WB_MEASUREMENT!r}: error, threshold and score.")
            .with_target(influxql(f"SELECT mean(\"error\") AS \"error\", mean(\"threshold\") AS \"threshold\", "
                                  f"max(\"score\") AS \"score\" FROM \"{WB_MEASUREMENT}\" WHERE {wb_where} "
                                  f"GROUP BY time($__interval) fill(none)"))
        )
        .with_panel(
            timeseries.Panel().title("Value and expected band (write-back)").datasource(INFLUX).span(24).height(8)
            .description(f"From {WB_MEASUREMENT!r}: per field expected_<field>, lower_<field> and upper_<field>, "
                         "in the sensor's own units, beside the raw value.")
            .with_target(influxql(f"SELECT mean(/^(expected|lower|upper)_/) FROM \"{WB_MEASUREMENT}\" WHERE {wb_where} "
                                  f"GROUP BY time($__interval) fill(none)"))
            .with_target(influxql("SELECT mean(*) FROM \"$measurement\" WHERE \"site\" = '$site' AND "
                                  "\"sensor\" = '$sensor' AND $timeFilter GROUP BY time($__interval) fill(none)",
                                  ref="B"))
        )
        .with_panel(
            timeseries.Panel().title("Per-field error share (write-back)").datasource(INFLUX).span(24).height(8)
            .description("Which field drove the error: each field's share of it (fields share_<field>, sum 1).")
            .stacking(cb.StackingConfig().mode(cm.StackingMode.PERCENT)).fill_opacity(60).unit("percentunit")
            .with_target(influxql(f"SELECT mean(/^share_/) FROM \"{WB_MEASUREMENT}\" WHERE {wb_where} "
                                  f"GROUP BY time($__interval) fill(none)"))
        )
        .with_row(db.Row("Value and write-back (PostgreSQL / TimescaleDB)"))
        .with_panel(
            timeseries.Panel().title("Score, error and threshold (write-back)").datasource(POSTGRES).span(12)
            .height(8)
            .with_target(sql(f"SELECT time AS \"time\", score, error, threshold FROM {WB_TABLE} "
                             f"WHERE {pg_where} ORDER BY 1"))
        )
        .with_panel(
            timeseries.Panel().title("Value (write-back)").datasource(POSTGRES).span(12).height(8)
            .description("The sample values Sentinel scored (write-back column \"values\", one per field, "
                         "in the stream's field order).")
            .with_target(sql(f"SELECT time AS \"time\", 'field ' || v.i AS metric, v.x AS value "
                             f"FROM {WB_TABLE}, unnest(\"values\") WITH ORDINALITY AS v(x, i) "
                             f"WHERE {pg_where} ORDER BY 1"))
        )
        .with_panel(
            timeseries.Panel().title("Per-field error share (write-back)").datasource(POSTGRES).span(24)
            .height(8)
            .description("Each field's share of the error (write-back column field_shares, summing to 1).")
            .stacking(cb.StackingConfig().mode(cm.StackingMode.PERCENT)).fill_opacity(60).unit("percentunit")
            .with_target(sql(f"SELECT time AS \"time\", 'field ' || v.i AS metric, v.x AS share "
                             f"FROM {WB_TABLE}, unnest(field_shares) WITH ORDINALITY AS v(x, i) "
                             f"WHERE {pg_where} ORDER BY 1"))
        )
    )
    return finish(to_dict(d))


def to_dict(builder: db.Dashboard) -> dict[str, Any]:
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def render() -> dict[str, str]:
    """File name -> exact JSON text (sorted keys, 2-space indent, trailing newline)."""
    return {
        f"{d['uid']}.json": json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for d in (overview(), stream())
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run deploy/grafana/generate.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
