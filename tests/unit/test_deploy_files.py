"""Static checks of deploy/: what can be validated without Docker, Grafana or Kubernetes.

Dashboards are in sync with their generator and carry what Grafana needs; every
YAML/JSON file parses; compose, Dockerfile, systemd unit and Kubernetes manifests
have the structure the issue asks for; the Sentinel configs shipped for compose,
the image and Kubernetes validate against Sentinel's own strict config schema.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.config import load_config_text
from tests.servers._proc import require_binary, sentinel_exe, unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
K8S = DEPLOY / "kubernetes"

# The metric names of DESIGN §7 / sentinel/metrics.py, as exported (counters with _total).
CONTRACT_METRICS = {
    "sentinel_anomaly_score", "sentinel_reconstruction_error", "sentinel_threshold", "sentinel_alert_state",
    "sentinel_alerts_total", "sentinel_samples_ingested_total", "sentinel_samples_rejected_total",
    "sentinel_streams", "sentinel_streams_refused_total", "sentinel_score_batch_seconds",
    "sentinel_ingest_lag_seconds", "sentinel_model_version", "sentinel_retrain_total",
    "sentinel_retrain_duration_seconds", "sentinel_checkpoint_last_success_timestamp_seconds",
    "sentinel_notifications_total", "sentinel_outbox_pending", "sentinel_outbox_dropped_total",
    "sentinel_config_last_reload_successful", "sentinel_queue_dropped_total", "sentinel_queue_depth",
    "sentinel_alert_transitions_total", "sentinel_source_up", "sentinel_expected_value", "sentinel_expected_lower",
    "sentinel_expected_upper", "sentinel_feedback_total",
    # --role router|scorer (issue 13; sentinel/cluster/metrics.py)
    "sentinel_partitions_owned", "sentinel_partition_lag_messages", "sentinel_partition_model_version",
    "sentinel_partition_checkpoint_seconds", "sentinel_router_published_total", "sentinel_router_publish_errors_total",
    "sentinel_poller_lease_held",
}
_METRIC_REF = re.compile(r"\b(sentinel_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?![:(])")


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# --- Grafana ---------------------------------------------------------------------------


def test_dashboards_are_in_sync_with_generator(tmp_path: Path) -> None:
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        unavailable("grafana-foundation-sdk is not installed (dev dependency)")
    spec = importlib.util.spec_from_file_location("sentinel_grafana_generate", DEPLOY / "grafana" / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rendered = gen.render()
    assert sorted(rendered) == ["sentinel-overview.json", "sentinel-stream.json"]
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} is stale: run deploy/grafana/generate.py"
    assert gen.main(["--check"]) == 0
    assert gen.main(["--out", str(tmp_path)]) == 0 and sorted(p.name for p in tmp_path.iterdir()) == sorted(rendered)


@pytest.mark.parametrize("name", ["sentinel-overview.json", "sentinel-stream.json"])
def test_dashboard_has_what_grafana_needs(name: str) -> None:
    dash = dashboards()[name]
    assert dash["uid"] == name.removesuffix(".json") and len(dash["uid"]) <= 40
    assert dash["title"].startswith("Sentinel") and isinstance(dash["schemaVersion"], int)
    assert "sentinel" in dash["tags"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    data_panels = [p for p in all_panels(dash) if p["type"] != "row"]
    assert len(data_panels) >= 6
    for p in data_panels:
        assert p["title"] and p["datasource"]["type"] and p["datasource"]["uid"], p
        assert p["targets"], f"panel {p['title']!r} has no targets"
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert isinstance(p["options"], dict)
        refs = [t["refId"] for t in p["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), f"panel {p['title']!r}: refIds {refs}"
        for t in p["targets"]:
            assert t.get("expr") or t.get("query") or t.get("rawSql"), (p["title"], t)
    assert dash["annotations"]["list"][0]["builtIn"] == 1


def test_overview_covers_the_issue_list() -> None:
    dash = dashboards()["sentinel-overview.json"]
    titles = {p["title"] for p in all_panels(dash)}
    for want in ("Streams by state", "Alert rate", "Top anomalous streams", "Ingest rate", "Ingest lag",
                 "Rejected samples", "Scoring latency", "Retraining", "Model version", "Outbox depth"):
        assert want in titles
    assert all(p["datasource"]["uid"] == "${datasource}" for p in all_panels(dash) if p["type"] != "row")


def test_overview_has_the_cluster_row_on_the_cluster_metrics() -> None:
    """Issue 13: a Grafana row for the partitions owned, their lag and the published model versions."""
    dash = dashboards()["sentinel-overview.json"]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert rows[-1]["title"] == "Cluster (NATS JetStream)"
    after = dash["panels"][dash["panels"].index(rows[-1]) + 1:]
    titles = [p["title"] for p in after]
    assert titles == ["Partitions owned", "Partition lag", "Published model version", "Router publish rate",
                      "Poller lease", "Partition checkpoint"]
    exprs = " ".join(t["expr"] for p in after for t in p["targets"])
    from prometheus_client import CollectorRegistry

    from sentinel.cluster.metrics import RouterMetrics, ScorerMetrics  # the names the roles export

    reg = CollectorRegistry()
    RouterMetrics(reg), ScorerMetrics(reg)
    exported = {s.name for fam in reg.collect() for s in fam.samples} | {
        fam.name for fam in reg.collect()}
    for metric in ("sentinel_partitions_owned", "sentinel_partition_lag_messages", "sentinel_partition_model_version",
                   "sentinel_router_published_total", "sentinel_router_publish_errors_total",
                   "sentinel_poller_lease_held", "sentinel_partition_checkpoint_seconds_bucket"):
        assert metric in exprs, metric
        assert metric in exported or metric.removesuffix("_total") in exported, metric


def test_stream_dashboard_selects_one_stream_and_uses_all_three_sources() -> None:
    dash = dashboards()["sentinel-stream.json"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("measurement", "site", "sensor"):
        assert variables[name]["type"] == "query" and not variables[name]["multi"]
        assert variables[name]["query"].startswith("label_values(sentinel_anomaly_score")
    types = {p["datasource"]["type"] for p in all_panels(dash) if p["type"] != "row"}
    assert types == {"prometheus", "influxdb", "grafana-postgresql-datasource"}
    exprs = " ".join(t.get("expr", "") for p in all_panels(dash) for t in p.get("targets", []))
    for metric in ("sentinel_anomaly_score", "sentinel_threshold", "sentinel_reconstruction_error",
                   "sentinel_alert_state"):
        assert f'{metric}{{measurement="$measurement", site="$site", sensor="$sensor"}}' in exprs
    queries = " ".join(t.get("query", "") for p in all_panels(dash) for t in p.get("targets", []))
    assert "share_" in queries, "per-field error share panel"
    band = [p for p in all_panels(dash) if p.get("title") == "Expected value and band"]
    assert band and {t["expr"].split("{")[0].removeprefix("max(") for t in band[0]["targets"]} == {
        "sentinel_expected_value", "sentinel_expected_lower", "sentinel_expected_upper"}
    assert "(expected|lower|upper)_" in queries, "write-back band panel"
    alert_spans = [a for a in dash["annotations"]["list"] if a.get("expr")]
    assert alert_spans and "sentinel_alert_state" in alert_spans[0]["expr"]


def test_provisioned_datasource_uids_match_dashboards() -> None:
    (doc,) = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "sentinel.yaml")
    provisioned = {d["uid"]: d["type"] for d in doc["datasources"]}
    assert provisioned == {"sentinel-prometheus": "prometheus", "sentinel-influxdb": "influxdb",
                           "sentinel-postgres": "grafana-postgresql-datasource"}
    assert [d["uid"] for d in doc["datasources"] if d.get("isDefault")] == ["sentinel-prometheus"]
    for dash in dashboards().values():
        for p in all_panels(dash):
            ds = p.get("datasource")
            if ds and ds["uid"] != "${datasource}":
                assert provisioned.get(ds["uid"]) == ds["type"], (p["title"], ds)
    (prov,) = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "sentinel.yaml")
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/sentinel"


def test_dashboards_and_rules_reference_only_contract_metrics() -> None:
    exprs = [t["expr"] for d in dashboards().values() for p in all_panels(d) for t in p.get("targets", [])
             if "expr" in t]
    exprs += [v["query"] for d in dashboards().values() for v in d["templating"]["list"] if v["type"] == "query"]
    (rules,) = load_yaml_docs(DEPLOY / "prometheus" / "rules" / "sentinel.yml")
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in _METRIC_REF.findall(e)}
    assert len(used) >= 15, used
    assert used <= CONTRACT_METRICS, used - CONTRACT_METRICS


# --- Prometheus / Alertmanager (structure; the real tools run in tests/integration) -----


def test_prometheus_config_scrapes_sentinel_and_loads_rules() -> None:
    (cfg,) = load_yaml_docs(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["sentinel"]["static_configs"][0]["targets"] == ["sentinel:9680"]
    assert cfg["rule_files"] == ["rules/sentinel.yml"]
    (rules,) = load_yaml_docs(DEPLOY / "prometheus" / "rules" / "sentinel.yml")
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for want in ("SentinelDown", "SentinelNotReady", "SentinelIngestStalled", "SentinelIngestLagGrowing",
                 "SentinelOutboxGrowing", "SentinelRetrainFailing", "SentinelCheckpointStale",
                 "SentinelConfigReloadFailed"):
        assert want in alerts
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
                assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_alertmanager_inhibits_anomalies_while_sentinel_is_unhealthy() -> None:
    (am,) = load_yaml_docs(DEPLOY / "alertmanager" / "alertmanager.yml")
    (rules,) = load_yaml_docs(DEPLOY / "prometheus" / "rules" / "sentinel.yml")
    inhibiting = {r["alert"] for g in rules["groups"] for r in g["rules"]
                  if r.get("labels", {}).get("inhibits_anomalies") == "true"}
    assert {"SentinelDown", "SentinelNotReady", "SentinelIngestStalled"} <= inhibiting
    rule = am["inhibit_rules"][0]
    assert rule["source_matchers"] == ['inhibits_anomalies="true"']
    assert rule["target_matchers"] == ['alertname="SentinelAnomaly"']
    receivers = {r["name"] for r in am["receivers"]}
    assert all(w["url"] for r in am["receivers"] for w in r.get("webhook_configs", []))
    assert {"sentinel-anomaly-warning", "sentinel-anomaly-critical", "sentinel-ops"} <= receivers


# --- Container and compose ---------------------------------------------------------------


def test_dockerfile_is_small_non_root_with_cuda_arg_and_ready_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "/-/ready" in text and re.search(r"^HEALTHCHECK ", text, re.M)
    assert re.search(r'^VOLUME \["/var/lib/sentinel"\]$', text, re.M)
    assert text.count("FROM ") == 2, "multi-stage: build deps stay out of the runtime image"
    assert re.search(r'^ENTRYPOINT \["sentinel"\]$', text, re.M)
    for line in re.findall(r"^COPY (?:--from=\S+ )?(\S+)", text, re.M):
        if not line.startswith("/"):
            assert (ROOT / line).exists(), f"COPY source {line} missing"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:] and "!sentinel/" in ignore and "!deploy/docker/" in ignore


def test_compose_stack_wires_every_service() -> None:
    (compose,) = load_yaml_docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"influxdb", "timescaledb", "prometheus", "alertmanager", "grafana", "sentinel", "simulator"} <= set(
        services
    )
    assert services["sentinel"]["command"][:1] == ["run"] and services["simulator"]["command"][:1] == ["simulate"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: mounted {src} does not exist"
            else:
                assert src in compose["volumes"], f"{name}: named volume {src} not declared"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert any(v.endswith(":/var/lib/sentinel") for v in services["sentinel"]["volumes"])
    (prom,) = load_yaml_docs(DEPLOY / "prometheus" / "prometheus.yml")
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] in services


@pytest.mark.parametrize(
    "path", ["compose/sentinel.yaml", "compose/simulate.yaml", "compose/timescaledb.yaml", "docker/sentinel.yaml"]
)
def test_shipped_sentinel_configs_validate(path: str) -> None:
    cfg = load_config_text((DEPLOY / path).read_text(), source=path,
                           env={"SENTINEL_WEBHOOK_HMAC": "x", "POSTGRES_PASSWORD": "x"})
    assert cfg.sources
    if path != "compose/simulate.yaml":
        assert cfg.state.dir == "/var/lib/sentinel/state"
        assert cfg.server.listen == "0.0.0.0:9680"


# --- systemd -----------------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "sentinel.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_is_hardened() -> None:
    u = _unit()
    assert u["DynamicUser"] == ["yes"] and u["ProtectSystem"] == ["strict"]
    assert u["StateDirectory"] == ["sentinel"] and u["Restart"] == ["on-failure"]
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert u["ExecStart"][0].endswith("sentinel run --config /etc/sentinel/sentinel.yaml")
    assert u["NoNewPrivileges"] == ["yes"] and u["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = require_binary("systemd-analyze")
    # verify checks that ExecStart's binary exists: point it at the installed entry point.
    exe = sentinel_exe()
    unit = tmp_path / "sentinel.service"
    unit.write_text((DEPLOY / "systemd" / "sentinel.service").read_text().replace(
        "/opt/sentinel/bin/sentinel", str(exe)))
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run([tool, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) < 3.0, r.stdout[-3000:]


# --- Kubernetes --------------------------------------------------------------------------


def _k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for p in sorted(K8S.rglob("*.yaml")):
        for d in load_yaml_docs(p):
            docs.setdefault(d["kind"], d)  # the first of each kind (secret.example.yaml: sentinel-secrets first)
    return docs


def test_kubernetes_statefulset_shards_by_ordinal_with_probes_and_volumes() -> None:
    k = _k8s()
    sts = k["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:3] == ["run", "--config", "/etc/sentinel/sentinel.yaml"]
    assert "--shard" in c["args"] and c["args"][c["args"].index("--shard") + 1] == "$(POD_INDEX)/$(SENTINEL_SHARDS)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["SENTINEL_SHARDS"]["value"] == str(sts["spec"]["replicas"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["envFrom"][0]["secretRef"]["name"] == k["Secret"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["state"] == "/var/lib/sentinel"
    assert {v["name"] for v in pod["volumes"]} | {"state"} == set(mounts)
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9680"
    assert k["Service"]["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == k["Service"]["metadata"]["name"]
    cfg = k["ConfigMap"]["data"]["sentinel.yaml"]
    parsed = load_config_text(cfg, source="configmap", env={"SENTINEL_WEBHOOK_URL": "http://x", "SENTINEL_WEBHOOK_HMAC": "y"})
    assert parsed.state.dir == mounts["state"] + "/state"


def test_kubernetes_gpu_training_job() -> None:
    job = _k8s()["Job"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["train", "--config"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_kustomization_lists_existing_files_and_builds() -> None:
    (kz,) = load_yaml_docs(K8S / "kustomization.yaml")
    for res in kz["resources"]:
        assert (K8S / res).exists(), res
    assert "secret.example.yaml" not in kz["resources"], "no Secret values are applied from the repo"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "not found" in r.stderr.lower():
        return
    assert r.returncode == 0, r.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(r.stdout) if d)
    assert kinds == ["ConfigMap", "Namespace", "PersistentVolumeClaim", "Service", "StatefulSet"]


def test_every_deploy_yaml_and_json_parses() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
    assert len(files) >= 15
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())
        else:
            assert load_yaml_docs(p), p
