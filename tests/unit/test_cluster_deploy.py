"""The NATS cluster manifests (deploy/kubernetes/with-nats/): roles, ordinals, NATS with JetStream, the trainer."""

from __future__ import annotations

from pathlib import Path

import yaml

from sentinel.cluster.partitions import ordinal
from sentinel.cluster.scorer import scorer_index
from sentinel.config import load_config_text

D = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "with-nats"  # sorts after the one-process files
ENV = {"SENTINEL_WEBHOOK_URL": "http://x", "SENTINEL_WEBHOOK_HMAC": "y"}


def docs() -> dict[tuple[str, str], dict]:
    out = {}
    for p in sorted(D.glob("*.yaml")):
        for d in yaml.safe_load_all(p.read_text()):
            if d and "kind" in d and d["kind"] != "Kustomization":
                out[(d["kind"], d["metadata"].get("name") or d["metadata"].get("generateName"))] = d
    return out


def container(d: dict) -> dict:
    (c,) = d["spec"]["template"]["spec"]["containers"]
    return c


def test_roles_ordinals_and_the_shared_config() -> None:
    k = docs()
    router, scorer = k[("Deployment", "sentinel-router")], k[("StatefulSet", "sentinel-scorer")]
    assert container(router)["args"][3:5] == ["--role", "router"]
    assert container(scorer)["args"][3:5] == ["--role", "scorer"]
    assert k[("Service", "sentinel-router")]["spec"]["selector"] == router["spec"]["selector"]["matchLabels"]
    job = k[("Job", "sentinel-train-publish-")]
    assert container(job)["args"][:2] == ["train", "--publish"]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cfg = load_config_text(k[("ConfigMap", "sentinel-cluster-config")]["data"]["sentinel.yaml"], source="configmap",
                           env=ENV)
    assert cfg.cluster.replicas == 3 and cfg.cluster.servers == ["nats://sentinel-nats:4222"]
    nats = k[("StatefulSet", "sentinel-nats")]
    assert nats["spec"]["replicas"] == 3 >= cfg.cluster.replicas
    conf = k[("ConfigMap", "sentinel-nats-config")]["data"]["nats.conf"]
    assert "jetstream" in conf and conf.count("sentinel-nats-") == 3
    # a scorer pod's index is the ordinal in its hostname
    assert ordinal("sentinel-scorer-2") == 2
    assert scorer_index(cfg, "sentinel-scorer-7") == 7
    assert scorer_index(cfg, "laptop") == 0
    kz = yaml.safe_load((D / "kustomization.yaml").read_text())
    assert all((D / r).exists() for r in kz["resources"])


def test_the_compose_override_runs_the_roles_on_nats() -> None:
    """deploy/compose.nats.yaml over compose.yaml: NATS with JetStream, the router as "sentinel", two
    scorers with StatefulSet-like hostnames, the trainer on a profile, Prometheus scraping all three."""
    deploy = D.parents[1]
    (base,) = [d for d in yaml.safe_load_all((deploy / "compose.yaml").read_text()) if d]
    (over,) = [d for d in yaml.safe_load_all((deploy / "compose.nats.yaml").read_text()) if d]
    s = over["services"]
    assert "--jetstream" in s["nats"]["command"] and "nats-data" in over["volumes"]
    assert s["sentinel"]["command"][-2:] == ["--role", "router"] and "sentinel" in base["services"]
    scorers = {k: v for k, v in s.items() if k.startswith("sentinel-scorer-")}
    assert sorted(scorers) == ["sentinel-scorer-0", "sentinel-scorer-1"]
    cfg = load_config_text((deploy / "compose" / "cluster.yaml").read_text(), source="compose/cluster.yaml",
                           env={"SENTINEL_WEBHOOK_HMAC": "x"})
    assert cfg.cluster.servers == ["nats://nats:4222"] and cfg.cluster.replicas == 1
    assert cfg.cluster.scorers == len(scorers) and cfg.sources and cfg.state.dir == "/var/lib/sentinel/state"
    for name, svc in scorers.items():
        assert svc["command"][-2:] == ["--role", "scorer"] and svc["depends_on"]["nats"]
        assert scorer_index(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"index": None})}),
                            svc["hostname"]) == int(name.rsplit("-", 1)[1])
    assert s["trainer"]["profiles"] == ["train"] and s["trainer"]["command"][:2] == ["train", "--publish"]
    for name, svc in s.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (deploy / src).exists(), f"{name}: mounted {src} does not exist"
            else:
                assert src in over["volumes"] or src in base["volumes"], f"{name}: volume {src} not declared"
        assert all(p.startswith("127.0.0.1:") for p in svc.get("ports", [])), name
    mounted = {v.split(":")[1]: v.split(":")[0] for svc in (s["sentinel"], *scorers.values(), s["trainer"])
               for v in svc["volumes"] if v.startswith(".")}
    assert mounted == {"/etc/sentinel/sentinel.yaml": "./compose/cluster.yaml"}
    (prom,) = [d for d in yaml.safe_load_all((deploy / "prometheus" / "prometheus-nats.yml").read_text()) if d]
    job = {j["job_name"]: j for j in prom["scrape_configs"]}["sentinel"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"sentinel:9680", *(f"{k}:9680" for k in scorers)}
    assert s["prometheus"]["volumes"] == ["./prometheus/prometheus-nats.yml:/etc/prometheus/prometheus.yml:ro"]
