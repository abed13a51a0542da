"""D6: the web config file (users, headers, TLS files) is re-read at ``/-/reload``, applied or refused.

On the old main the web config was never reloaded: the old password kept working and a
rotated certificate was not served, while the reload said ``config reloaded``.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import yaml

from tests.daemon_helpers import RunningDaemon, config_dict
from tests.servers._proc import require_binary


def cert(tmp: Path, name: str) -> tuple[Path, Path]:
    require_binary("openssl")
    c, k = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(k), "-out", str(c), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return c, k


def hashed(pw: str) -> str:
    return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()


def request(url: str, ca: Path, pw: str | None, method: str = "GET") -> tuple[int, dict[str, str], str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": "Basic " + base64.b64encode(f"alice:{pw}".encode()).decode()} if pw else {}
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_users_headers_and_rotated_certificates_apply_at_reload_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    a_crt, a_key = cert(tmp_path, "a")
    b_crt, b_key = cert(tmp_path, "b")
    live_crt, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    live_crt.write_bytes(a_crt.read_bytes())
    live_key.write_bytes(a_key.read_bytes())
    web = tmp_path / "web-config.yml"
    doc = {"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
           "http_server_config": {"headers": {"X-Sentinel-Test": "1"}},
           "basic_auth_users": {"alice": hashed("old")}}
    web.write_text(yaml.safe_dump(doc))
    path = tmp_path / "sentinel.yaml"
    data = config_dict(tmp_path, extra={"server": {"web_config_file": "web-config.yml"}})
    path.write_text(yaml.safe_dump(data))
    d = RunningDaemon(path)
    with d.start():
        url = d.url
        assert url.startswith("https://")
        assert request(url + "/metrics", a_crt, "old")[0] == 200
        assert request(url + "/metrics", a_crt, "new")[0] == 401
        assert request(url + "/-/healthy", a_crt, None)[0] == 401  # probes guarded by default

        # rotate: a new password, a new header value, a new certificate in the same files
        doc["basic_auth_users"] = {"alice": hashed("new")}
        doc["http_server_config"]["headers"]["X-Sentinel-Test"] = "2"
        web.write_text(yaml.safe_dump(doc))
        live_crt.write_bytes(b_crt.read_bytes())
        live_key.write_bytes(b_key.read_bytes())
        data["server"]["open_probes"] = True
        data["server"]["listen"] = "127.0.0.1:1"  # waits for a restart, and is kept at its running value
        path.write_text(yaml.safe_dump(data))
        status, _, msg = request(url + "/-/reload", a_crt, "old", method="POST")
        assert status == 200, msg
        for key in ("web_config.basic_auth_users", "web_config.http_server_config.headers",
                    "web_config.tls_server_config (certificate, key, client CA)", "server.open_probes"):
            assert key in msg.split("; applied ")[1], (key, msg)
        assert "server.listen take effect after a restart" in msg, msg
        assert d.metric("sentinel_config_last_reload_successful") == 1
        assert d.daemon.cfg.server.listen == f"127.0.0.1:{d.daemon._server.port}"
        # new connections get certificate b; the old password is refused, the new one works
        assert request(url + "/metrics", b_crt, "old")[0] == 401
        status, headers, _ = request(url + "/metrics", b_crt, "new")
        assert status == 200 and headers["X-Sentinel-Test"] == "2"
        try:
            request(url + "/metrics", a_crt, "new")
            raise AssertionError("the old certificate is still served")
        except urllib.error.URLError as e:
            assert isinstance(e.reason, ssl.SSLCertVerificationError), e
        assert request(url + "/-/healthy", b_crt, None)[0] == 200  # server.open_probes applied
        assert request(url + "/-/ready", b_crt, None)[0] == 200

        # an invalid web config refuses the whole reload, naming the file and key; nothing changes
        web.write_text(yaml.safe_dump({**doc, "basic_auth_users": {"alice": "plain-text"}}))
        data["alerts"]["enter"] = 0.95
        path.write_text(yaml.safe_dump(data))
        status, _, msg = request(url + "/-/reload", b_crt, "new", method="POST")
        assert status == 500 and "server.web_config_file:" in msg and "basic_auth_users.alice" in msg, msg
        assert d.metric("sentinel_config_last_reload_successful") == 0
        assert d.daemon.cfg.alerts.enter == 0.9
        assert request(url + "/metrics", b_crt, "new")[0] == 200

        # TLS off needs a new listening socket: named for a restart, still served over TLS
        web.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed("new")}}))
        status, _, msg = request(url + "/-/reload", b_crt, "new", method="POST")
        assert status == 200 and "web_config.tls_server_config take effect after a restart" in msg, msg
        assert request(url + "/metrics", b_crt, "new")[0] == 200
