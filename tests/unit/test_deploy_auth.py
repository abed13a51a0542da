"""The shipped container, compose and Kubernetes configs: where they bind, that they say why, and the web config.

The probes (kubelet, container HEALTHCHECK) send no credentials, so every shipped config
that could run under a web config sets ``server.open_probes``; the Kubernetes manifests
run with one (TLS + basic auth from a Secret) and probe over HTTPS.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from sentinel.config import load_config_text
from sentinel.server import load_web_config, parse_web_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
ENV = {"SENTINEL_WEBHOOK_HMAC": "x", "SENTINEL_WEBHOOK_URL": "http://x", "POSTGRES_PASSWORD": "x"}


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_container_and_compose_configs_bind_all_interfaces_say_why_and_leave_probes_open() -> None:
    for rel in ("docker/sentinel.yaml", "compose/sentinel.yaml"):
        text = (DEPLOY / rel).read_text()
        cfg = load_config_text(text, source=rel, env=ENV)
        assert cfg.server.listen == "0.0.0.0:9680" and cfg.server.open_probes is True, rel
        assert "127.0.0.1:9680" in text and "web-config.example.yml" in text, f"{rel} says how to restrict it"
    (compose,) = docs(DEPLOY / "compose.yaml")
    assert compose["services"]["sentinel"]["ports"] == ["127.0.0.1:9680:9680"]


def test_the_web_config_example_is_valid_with_its_tls_files(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "web-config.example.yml", tmp_path / "web-config.yml")
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("placeholder")  # only existence is checked at load
    wc = load_web_config(tmp_path / "web-config.yml")
    assert wc.tls is not None and wc.tls.cert_file == tmp_path / "tls.crt" and wc.tls.min_version == "TLS12"
    assert list(wc.basic_auth_users) == ["prometheus"] and wc.headers["X-Frame-Options"] == "deny"


def test_kubernetes_runs_with_the_web_config_secret_and_unauthenticated_https_probes(tmp_path: Path) -> None:
    (cm,) = docs(K8S / "configmap.yaml")
    cfg = load_config_text(cm["data"]["sentinel.yaml"], source="configmap", env=ENV)
    assert cfg.server.listen == "0.0.0.0:9680" and cfg.server.open_probes is True
    assert cfg.server.web_config_file is not None
    (sts,) = docs(K8S / "statefulset.yaml")
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert str(Path(cfg.server.web_config_file).parent) == mounts["web-config"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_name = volumes["web-config"]["secret"]["secretName"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["path"] in ("/-/ready", "/-/healthy"), probe
    secrets = {d["metadata"]["name"]: d for d in docs(K8S / "secret.example.yaml")}
    data = secrets[secret_name]["stringData"]
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text(data[name])
    wc = parse_web_config(yaml.safe_load(data[Path(cfg.server.web_config_file).name]), base_dir=tmp_path)
    assert wc.tls is not None and wc.auth_enabled
    (sm,) = docs(K8S / "optional" / "servicemonitor.yaml")
    (ep,) = sm["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["basicAuth"]["username"] == {"name": secret_name, "key": "username"}
    assert {"username", "password"} <= set(data)
    assert sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "https"


def shipped_configs() -> list[tuple[str, str]]:
    """``(name, text)`` of every Sentinel config shipped under deploy/: plain files and ConfigMaps' sentinel.yaml."""
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        rel = str(path.relative_to(DEPLOY))
        for d in docs(path):
            if isinstance(d, dict) and d.get("kind") == "ConfigMap" and "sentinel.yaml" in d.get("data", {}):
                out.append((f"{rel}:sentinel.yaml", d["data"]["sentinel.yaml"]))
            elif isinstance(d, dict) and "server" in d and "sources" in d and "kind" not in d:
                out.append((rel, path.read_text()))
    return out


def test_every_shipped_config_that_binds_all_interfaces_says_why_and_leaves_the_probes_open() -> None:
    """D11: the compose TimescaleDB alternative and the NATS cluster ConfigMap bound 0.0.0.0 silently, with
    probes that a web config would have closed (they were added after the first set of configs)."""
    configs = shipped_configs()
    assert {"docker/sentinel.yaml", "compose/timescaledb.yaml", "kubernetes/with-nats/configmap.yaml:sentinel.yaml",
            "kubernetes/configmap.yaml:sentinel.yaml"} <= {n for n, _ in configs}
    for name, text in configs:
        cfg = load_config_text(text, source=name, env=ENV)
        if cfg.server.listen.startswith("127.0.0.1:"):
            continue
        file_text = (DEPLOY / name.split(":")[0]).read_text()
        assert cfg.server.open_probes is True, f"{name}: probes send no credentials"
        assert "web-config.example.yml" in file_text and "loopback" in file_text, f"{name} says why and how to guard it"
