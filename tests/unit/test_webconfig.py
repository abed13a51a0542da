"""The exporter-toolkit web config: strict parsing, clear ``file:key: reason`` errors, SSL contexts."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from sentinel.errors import ConfigError
from sentinel.server.webconfig import load_web_config, parse_web_config, peer_sans, ssl_context
from tests.servers._proc import require_binary

# bcrypt("secret", rounds=4): a real hash, fixed so the test needs no bcrypt call to build it.
HASH = "$2b$04$dpk4OnRXHO0p7Zt1pjg3aecUygeweg8y9lFXJzbahvXdJ.U98YNPG"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def self_signed(tmp: Path, name: str = "server", cn: str = "localhost") -> tuple[Path, Path]:
    require_binary("openssl")
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
         "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def test_empty_document_means_no_tls_no_auth():
    wc = parse_web_config(None)
    assert wc.tls is None and wc.basic_auth_users == {} and not wc.auth_enabled and wc.headers == {}


def test_basic_auth_users_and_headers_parse():
    wc = parse_web_config({
        "basic_auth_users": {"alice": HASH},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}, "http2": True},
    })
    assert wc.basic_auth_users == {"alice": HASH.encode()}
    assert wc.auth_enabled
    assert wc.headers == {"X-Frame-Options": "deny"}


def test_every_problem_is_reported_with_file_and_key():
    with pytest.raises(ConfigError) as ei:
        parse_web_config(
            {"tls_server_config": {"cert_file": "nope.crt", "colour": 1}, "basic_auth_users": {"bob": "hunter2"},
             "extra": 1},
            source="web.yml",
        )
    problems = ei.value.problems
    assert "web.yml:extra: unknown key (allowed: basic_auth_users, http_server_config, tls_server_config)" in problems
    assert "web.yml:tls_server_config.colour: unknown key" in problems
    assert any(p.startswith("web.yml:tls_server_config.cert_file: file not found:") for p in problems)
    assert "web.yml:tls_server_config.key_file: required when tls_server_config is set" in problems
    assert any(p.startswith("web.yml:basic_auth_users.bob: expected a bcrypt hash") for p in problems)
    assert len(problems) == 5


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        ([1, 2], "", "expected a mapping at the top level, got list"),
        ({"basic_auth_users": ["a"]}, "basic_auth_users", "expected a mapping, got list"),
        ({"basic_auth_users": {"a:b": HASH}}, "basic_auth_users.a:b", "user name must be a non-empty string without ':'"),
        ({"http_server_config": {"http2": "yes"}}, "http_server_config.http2", "expected true or false"),
        ({"http_server_config": {"gzip": True}}, "http_server_config.gzip", "unknown key"),
        ({"http_server_config": {"headers": {"X": "a\nb"}}}, "http_server_config.headers.X",
         "expected a single-line string value"),
    ],
)
def test_bad_values(doc, key, reason):
    with pytest.raises(ConfigError) as ei:
        parse_web_config(doc, source="w.yml")
    expected = f"w.yml:{key}: {reason}" if key else f"w.yml: {reason}"
    assert ei.value.problems == [expected]


def test_tls_paths_resolve_against_the_files_directory(tmp_path):
    cert, key = self_signed(tmp_path)
    cfg = write(tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n")
    wc = load_web_config(cfg)
    assert wc.tls is not None
    assert wc.tls.cert_file == cert.resolve() and wc.tls.key_file == key.resolve()
    assert wc.tls.client_auth_type == "NoClientCert"
    ctx = ssl_context(wc.tls)
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_client_ca_defaults_to_require_and_verify(tmp_path):
    cert, key = self_signed(tmp_path)
    wc = parse_web_config(
        {"tls_server_config": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(cert),
                               "min_version": "TLS13", "client_allowed_sans": ["scraper"]}},
    )
    assert wc.tls is not None and wc.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert wc.tls.client_allowed_sans == ("scraper",)
    ctx = ssl_context(wc.tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_tls_option_errors(tmp_path):
    cert, key = self_signed(tmp_path)
    with pytest.raises(ConfigError) as ei:
        parse_web_config({"tls_server_config": {
            "cert_file": str(cert), "key_file": str(key), "client_auth_type": "RequireAndVerifyClientCert",
            "min_version": "SSL3", "client_allowed_sans": ["x"]}}, source="w.yml")
    assert ei.value.problems == [
        "w.yml:tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file",
        "w.yml:tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13, got 'SSL3'",
        "w.yml:tls_server_config.client_allowed_sans: needs client_ca_file (client certs must be verified)",
    ]
    with pytest.raises(ConfigError, match="client_auth_type: must be one of NoClientCert"):
        parse_web_config({"tls_server_config": {"cert_file": str(cert), "key_file": str(key),
                                                "client_auth_type": "Sometimes"}})


def test_unusable_key_file_raises_config_error(tmp_path):
    cert, _ = self_signed(tmp_path)
    bad_key = write(tmp_path / "bad.key", "not a key\n")
    wc = parse_web_config({"tls_server_config": {"cert_file": str(cert), "key_file": str(bad_key)}})
    assert wc.tls is not None
    with pytest.raises(ConfigError, match=r"tls_server_config\.cert_file: cannot load"):
        ssl_context(wc.tls)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.yml"
    with pytest.raises(ConfigError, match=r"missing\.yml: cannot read web config"):
        load_web_config(missing)
    bad = write(tmp_path / "bad.yml", "basic_auth_users: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: invalid YAML"):
        load_web_config(bad)
    unknown = write(tmp_path / "u.yml", "basic_auth_user: {}\n")
    with pytest.raises(ConfigError) as ei:
        load_web_config(unknown)
    assert ei.value.problems[0].startswith(f"{unknown}:basic_auth_user: unknown key")


def test_peer_sans():
    cert = {"subject": ((("commonName", "scraper-cn"),),), "subjectAltName": (("DNS", "scraper"), ("IP Address", "10.0.0.1"))}
    assert peer_sans(cert) == {"scraper-cn", "scraper", "10.0.0.1"}
    assert peer_sans(None) == set()
