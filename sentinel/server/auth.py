"""Who may use the HTTP server: the web config's basic-auth users, a route's own credentials, open probes.

Rules (checked by the server's middleware, in this order):

1. with ``tls_server_config.client_allowed_sans``, a verified client certificate must carry one
   of them (except on open probes: a kubelet presents no certificate);
2. ``/-/healthy`` and ``/-/ready`` pass without credentials when ``server.open_probes`` is true
   (the Kubernetes manifests set it; the kubelet sends no credentials);
3. with ``basic_auth_users``, a request passes with a valid user and password, sent as
   ``Authorization: Basic`` or InfluxDB 1.8-style ``Authorization: Token user:password``;
4. a route with its own credentials (the line-protocol receiver's ``token`` / ``username``)
   also passes with *those*: either valid credential is enough, so a Telegraf that sends
   ``Authorization: Token <receiver token>`` writes under web auth too.

A request that passed sets ``request[AUTHENTICATED]`` so the route does not check again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
from collections.abc import Callable

import bcrypt
from aiohttp import web

AUTHENTICATED: web.RequestKey[bool] = web.RequestKey("sentinel_authenticated", bool)
"""Request key set to True once the server's middleware has let a request through on credentials."""

PROBES = frozenset({"/-/healthy", "/-/ready"})
"""The paths ``server.open_probes`` leaves unauthenticated."""

RouteAuth = Callable[[web.Request], bool]
"""A route's own credential check: True only for a request carrying a credential it configured."""


class BasicAuth:
    """Checks ``user:password`` against bcrypt hashes, off the event loop, with a bounded success cache.

    bcrypt is slow on purpose (tens of ms at cost 10), so a scrape every few seconds would burn a
    core; like exporter-toolkit we remember successful (user, password, hash) triples. Unknown
    users still pay one bcrypt check, so timing does not reveal which user names exist.
    """

    _DUMMY = bcrypt.hashpw(b"sentinel-dummy", bcrypt.gensalt(rounds=4))

    def __init__(self, users: dict[str, bytes], cache_size: int = 256):
        self._users = dict(users)
        self._cache: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._cache_size = cache_size

    def _key(self, user: str, password: bytes, hashed: bytes) -> bytes:
        return hashlib.sha256(user.encode() + b"\0" + password + b"\0" + hashed).digest()

    async def check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        pw = password.encode("utf-8")
        if hashed is not None:
            key = self._key(user, pw, hashed)
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, _checkpw, pw, hashed if hashed is not None else self._DUMMY)
        if ok and hashed is not None:
            self._cache[key] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return True
        return False


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


def parse_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from ``Basic <b64(user:pw)>`` or ``Token user:pw``; None otherwise.

    >>> parse_credentials("Basic " + base64.b64encode(b"alice:pw:x").decode())
    ('alice', 'pw:x')
    >>> parse_credentials("Token alice:pw"), parse_credentials("Token only-a-token")
    (('alice', 'pw'), None)
    """
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not token:
        return None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() == "token":  # InfluxDB 1.8's v2-compatible form
        decoded = token
    else:
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


def unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="Sentinel", charset="UTF-8"'}
    )


async def authorize(request: web.Request, auth: BasicAuth | None, route_auth: RouteAuth | None) -> None:
    """Raise 401 unless the request carries a web user's or the route's own credential (module docstring)."""
    if auth is None:
        return  # no web users: a route checks its own credentials (if any) itself
    creds = parse_credentials(request.headers.get("Authorization", ""))
    if creds is not None and await auth.check(*creds):
        request[AUTHENTICATED] = True
        return
    if route_auth is not None and route_auth(request):
        request[AUTHENTICATED] = True
        return
    raise unauthorized()
