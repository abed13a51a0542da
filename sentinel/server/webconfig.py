"""The ``--web.config.file`` of Prometheus exporters (exporter-toolkit convention): TLS and basic auth.

Operators reuse the file they already give node_exporter::

    tls_server_config:
      cert_file: server.crt          # relative paths resolve against this file's directory
      key_file: server.key
      client_ca_file: ca.crt         # optional
      client_auth_type: RequireAndVerifyClientCert   # optional, default NoClientCert (or
                                                     # RequireAndVerifyClientCert when client_ca_file is set)
      min_version: TLS12             # optional: TLS10..TLS13
      max_version: TLS13             # optional
      client_allowed_sans: [scraper] # optional: a verified client cert must carry one of these SANs
      cipher_suites: [...]           # accepted for compatibility, not applied (OpenSSL picks)
      curve_preferences: [...]       # accepted for compatibility, not applied
      prefer_server_cipher_suites: true  # accepted for compatibility, not applied
    http_server_config:
      headers: {X-Frame-Options: deny}   # added to every response
      http2: true                        # accepted for compatibility (aiohttp serves HTTP/1.1)
    basic_auth_users:
      alice: $2y$10$...              # bcrypt hashes only

Parsing is strict: an unknown key, a missing file or a hash that is not bcrypt raises
:class:`sentinel.errors.ConfigError` with ``file:key: reason`` lines. Nothing here does network I/O.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sentinel.errors import ConfigError

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_BCRYPT = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {
    "cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version",
    "client_allowed_sans", "cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
}
_HTTP_KEYS = {"headers", "http2"}


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """Resolved TLS settings; every path is absolute and existed when the file was loaded."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str | None = None
    max_version: str | None = None
    client_allowed_sans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A parsed web config. ``basic_auth_users`` maps user name -> bcrypt hash (bytes)."""

    tls: TLSServerConfig | None = None
    basic_auth_users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    source: str = "<web config>"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_users)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; raise :class:`ConfigError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read web config: {e.strerror or e}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    return parse_web_config(raw, source=str(p), base_dir=p.resolve().parent)


def parse_web_config(raw: Any, *, source: str = "<web config>", base_dir: Path | None = None) -> WebConfig:
    """Validate an already-loaded YAML document (``None`` = empty file = no TLS, no auth)."""
    problems: list[str] = []

    def bad(key: str, reason: str) -> None:
        problems.append(f"{source}:{key}: {reason}")

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    for k in raw:
        if k not in _TOP_KEYS:
            bad(str(k), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")

    tls = _parse_tls(raw.get("tls_server_config"), bad, base_dir or Path.cwd())
    headers = _parse_http(raw.get("http_server_config"), bad)
    users = _parse_users(raw.get("basic_auth_users"), bad)
    if problems:
        raise ConfigError(problems)
    return WebConfig(tls=tls, basic_auth_users=users, headers=headers, source=source)


def _mapping(v: Any, key: str, bad: Any) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        bad(key, f"expected a mapping, got {type(v).__name__}")
        return None
    return v


def _parse_tls(v: Any, bad: Any, base: Path) -> TLSServerConfig | None:
    m = _mapping(v, "tls_server_config", bad)
    if not m:
        return None
    for k in m:
        if k not in _TLS_KEYS:
            bad(f"tls_server_config.{k}", "unknown key")

    def path_of(k: str, required: bool) -> Path | None:
        val = m.get(k)
        if val is None or val == "":
            if required:
                bad(f"tls_server_config.{k}", "required when tls_server_config is set")
            return None
        if not isinstance(val, str):
            bad(f"tls_server_config.{k}", "expected a file path")
            return None
        p = Path(val) if Path(val).is_absolute() else base / val
        if not p.is_file():
            bad(f"tls_server_config.{k}", f"file not found: {p}")
            return None
        return p

    cert, key = path_of("cert_file", True), path_of("key_file", True)
    ca = path_of("client_ca_file", False)
    auth = m.get("client_auth_type")
    if auth is None:
        auth = "RequireAndVerifyClientCert" if ca else "NoClientCert"
    elif auth not in CLIENT_AUTH_TYPES:
        bad("tls_server_config.client_auth_type", f"must be one of {', '.join(CLIENT_AUTH_TYPES)}, got {auth!r}")
    elif auth in ("RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not m.get(
        "client_ca_file"
    ):
        # Python's ssl cannot accept a client certificate without verifying it against a CA.
        bad("tls_server_config.client_auth_type", f"{auth} needs client_ca_file")
    versions: dict[str, str | None] = {}
    for k in ("min_version", "max_version"):
        val = m.get(k)
        if val is not None and val not in TLS_VERSIONS:
            bad(f"tls_server_config.{k}", f"must be one of {', '.join(TLS_VERSIONS)}, got {val!r}")
            val = None
        versions[k] = val
    sans = m.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        bad("tls_server_config.client_allowed_sans", "expected a list of strings")
        sans = []
    if sans and ca is None:
        bad("tls_server_config.client_allowed_sans", "needs client_ca_file (client certs must be verified)")
    if cert is None or key is None:
        return None
    return TLSServerConfig(
        cert_file=cert, key_file=key, client_ca_file=ca, client_auth_type=str(auth),
        min_version=versions["min_version"], max_version=versions["max_version"], client_allowed_sans=tuple(sans),
    )


def _parse_http(v: Any, bad: Any) -> dict[str, str]:
    m = _mapping(v, "http_server_config", bad)
    if not m:
        return {}
    for k in m:
        if k not in _HTTP_KEYS:
            bad(f"http_server_config.{k}", "unknown key")
    if "http2" in m and not isinstance(m["http2"], bool):
        bad("http_server_config.http2", "expected true or false")
    headers = _mapping(m.get("headers"), "http_server_config.headers", bad) or {}
    out: dict[str, str] = {}
    for hk, hv in headers.items():
        if not isinstance(hk, str) or not isinstance(hv, str) or "\n" in hv or "\r" in hv:
            bad(f"http_server_config.headers.{hk}", "expected a single-line string value")
            continue
        out[hk] = hv
    return out


def _parse_users(v: Any, bad: Any) -> dict[str, bytes]:
    m = _mapping(v, "basic_auth_users", bad)
    if not m:
        return {}
    users: dict[str, bytes] = {}
    for user, h in m.items():
        key = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            bad(key, "user name must be a non-empty string without ':'")
        elif not isinstance(h, str) or not _BCRYPT.match(h):
            bad(key, "expected a bcrypt hash ($2y$..., e.g. from `htpasswd -nBC 10 USER`); plain passwords are refused")
        else:
            users[user] = h.encode("ascii")
    return users


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server-side :class:`ssl.SSLContext` for ``tls``; raises :class:`ConfigError` on unusable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version] if tls.min_version else ssl.TLSVersion.TLSv1_2
    if tls.max_version:
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"tls_server_config.cert_file: cannot load {tls.cert_file} / {tls.key_file}: {e}") from e
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"tls_server_config.client_ca_file: cannot load {tls.client_ca_file}: {e}") from e
    # Python's ssl cannot take a client cert without verifying it against a CA: the
    # "any client cert" modes verify against client_ca_file (required for RequireAnyClientCert).
    mode = {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_OPTIONAL if tls.client_ca_file else ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[tls.client_auth_type]
    ctx.verify_mode = mode
    return ctx


def peer_sans(peercert: dict | None) -> set[str]:
    """DNS names, IPs, URIs and e-mail SANs (and the CN) of a verified peer certificate."""
    if not peercert:
        return set()
    names = {v for _, v in peercert.get("subjectAltName", ())}
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                names.add(v)
    return names


def tls_digest(tls: TLSServerConfig | None) -> str:
    """A digest of the TLS files' paths and bytes: differs when a certificate was rotated in place."""
    if tls is None:
        return ""
    h = hashlib.sha256()
    for p in (tls.cert_file, tls.key_file, tls.client_ca_file):
        h.update(str(p).encode() + b"\0")
        if p is not None:
            try:
                h.update(p.read_bytes())
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()


TLS_RESTART_FIELDS = ("client_auth_type", "min_version", "max_version")
"""TLS settings fixed on the listening socket's context: a change waits for a restart."""


class ReloadableTLS:
    """The listening socket's TLS context, whose certificate, key and client CA can be swapped live.

    The listening context's SNI callback (OpenSSL calls it for every handshake, with or
    without a server name) points each new connection at the newest context, so a rotated
    certificate is served from the next connection on; open connections keep theirs.
    """

    def __init__(self, tls: TLSServerConfig):
        self.tls = tls
        self.digest = tls_digest(tls)
        self.context = ssl_context(tls)
        self._current = self.context
        self.context.sni_callback = self._sni

    def _sni(self, sslobj: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not ctx:
            sslobj.context = current

    def restart_fields(self, tls: TLSServerConfig) -> list[str]:
        """Settings of ``tls`` that differ from the listening ones and cannot change live."""
        return [f for f in TLS_RESTART_FIELDS if getattr(tls, f) != getattr(self.tls, f)]

    def prepare(self, tls: TLSServerConfig) -> tuple[TLSServerConfig, ssl.SSLContext]:
        """``tls`` with the listening :data:`TLS_RESTART_FIELDS` kept, and its context (ConfigError if unusable)."""
        effective = replace(tls, **{f: getattr(self.tls, f) for f in TLS_RESTART_FIELDS})
        return effective, ssl_context(effective)

    def swap(self, prepared: tuple[TLSServerConfig, ssl.SSLContext]) -> None:
        """Serve the prepared files from the next handshake on."""
        self.tls, self._current = prepared
        self.digest = tls_digest(self.tls)
