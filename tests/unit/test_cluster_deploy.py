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
