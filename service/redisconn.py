"""Where Redis is, and the one place the service's Redis clients are built.

``VHDMEND_REDIS_URL`` is either one server (``redis://``, ``rediss://``, ``unix://``) or a
set of Redis Sentinels, ``sentinel://[[user]:password@]h1:p1[/db];sentinel://h2:p2;...``,
with ``VHDMEND_REDIS_MASTER_NAME`` (the name the Sentinels monitor) and optionally
``VHDMEND_REDIS_SENTINEL_PASSWORD`` (the Sentinels' own ``requirepass``). As in kombu's
Sentinel transport, the user, password and db in the URL are the *master's*; one URL thus
configures the job store, the chain locks and the Celery broker alike.

With Sentinels, the client is redis-py's ``Sentinel(...).master_for(name)``: every new
connection asks the Sentinels where the master is, and a connection to a demoted master
(``READONLY``) is dropped as a ``ConnectionError``, so the store's retry (``_call``)
reconnects to the promoted replica after a failover. This module imports ``redis`` only
inside the functions that build clients (parsing is plain string work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from service.errors import ConfigError

if TYPE_CHECKING:
    import redis


class Settings(Protocol):
    """The Redis settings of :class:`service.config.Settings` (named here, not imported:
    the config module checks them with this one)."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_master_name(self) -> str: ...
    @property
    def redis_sentinel_password(self) -> str: ...

#: Where Sentinel listens when a ``sentinel://`` entry names no port.
SENTINEL_PORT = 26379
_DIRECT_SCHEMES = ("redis", "rediss", "unix")
#: Socket timeouts of the master connections (seconds) and of the Sentinel queries, which
#: are short: a dead Sentinel must not delay asking the next one.
SOCKET_TIMEOUT, CONNECT_TIMEOUT, SENTINEL_TIMEOUT = 10.0, 5.0, 1.0
#: After taking a lease or a fence with Sentinels: wait for one replica to acknowledge it
#: (``WAIT 1 <ms>``), so a failover right after does not lose it. Best effort: with no
#: replica connected the wait ends after this many milliseconds and the caller goes on.
REPLICA_WAIT_MS = 500


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``VHDMEND_REDIS_URL``: one server, or Sentinels and a master name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_password: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> str:
        """For logs: where Redis is, without any password."""
        if not self.is_sentinel:
            parts = urlsplit(self.url)
            host = parts.hostname or parts.path
            return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinels {hosts}, master {self.master_name!r}, db {self.db}"


def parse(url: str, master_name: str = "", sentinel_password: str = "") -> RedisTarget:
    """Parse ``url`` (see the module docstring); :class:`ConfigError` naming the problem."""
    url = url.strip()
    if not url:
        raise ConfigError("VHDMEND_REDIS_URL is empty")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme != "sentinel":
        if scheme not in _DIRECT_SCHEMES:
            raise ConfigError(f"VHDMEND_REDIS_URL {_masked(url)!r}: expected redis://, "
                              "rediss://, unix:// or sentinel://host:port;sentinel://...")
        if ";" in url:
            raise ConfigError(f"VHDMEND_REDIS_URL {_masked(url)!r}: several servers "
                              "separated by ';' are only meaningful as sentinel:// entries")
        if master_name:
            raise ConfigError(f"VHDMEND_REDIS_MASTER_NAME {master_name!r} is set but "
                              f"VHDMEND_REDIS_URL ({_masked(url)}) is not a sentinel:// URL")
        return RedisTarget(url)
    if not master_name.strip():
        raise ConfigError("VHDMEND_REDIS_URL names Sentinels but VHDMEND_REDIS_MASTER_NAME "
                          "is not set (the name the Sentinels monitor, e.g. 'vhdmend')")
    entries = [e.strip() for e in url.split(";") if e.strip()]
    sentinels: list[tuple[str, int]] = []
    first: tuple[str | None, str | None, int] | None = None
    for entry in entries:
        parts = _split(entry)
        host, port = _host_port(entry, parts)
        creds = (unquote(parts.username) if parts.username else None,
                 unquote(parts.password) if parts.password else None, _db(entry, parts))
        if first is None:
            first = creds
        elif creds != first and (creds[0] or creds[1] or parts.path.strip("/")):
            raise ConfigError(f"sentinel entry {_masked(entry)!r}: its user, password or db "
                              "differ from the first entry's (give them once, on the first)")
        if (host, port) in sentinels:
            raise ConfigError(f"sentinel {host}:{port} is listed twice in VHDMEND_REDIS_URL")
        sentinels.append((host, port))
    assert first is not None
    username, password, db = first
    return RedisTarget(url, tuple(sentinels), master_name.strip(), sentinel_password or None,
                       db, username, password)


def _split(entry: str) -> SplitResult:
    parts = urlsplit(entry)
    if parts.scheme.lower() != "sentinel":
        raise ConfigError(f"sentinel entry {_masked(entry)!r}: every entry separated by ';' "
                          "must be sentinel://host:port")
    if parts.query or parts.fragment:
        raise ConfigError(f"sentinel entry {_masked(entry)!r}: URL options (?...) are not "
                          "supported; use the VHDMEND_REDIS_* settings")
    return parts


def _host_port(entry: str, parts: SplitResult) -> tuple[str, int]:
    host = parts.hostname
    if not host:
        raise ConfigError(f"sentinel entry {_masked(entry)!r}: no host (expected "
                          "sentinel://host:port)")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        netloc = parts.netloc.rpartition("@")[2]
        if netloc.endswith(":"):
            raise ConfigError(f"sentinel entry {_masked(entry)!r}: empty port")
        port = SENTINEL_PORT
    if not 0 < port < 65536:
        raise ConfigError(f"sentinel entry {_masked(entry)!r}: the port is not a number "
                          "from 1 to 65535")
    return host, port


def _db(entry: str, parts: SplitResult) -> int:
    path = parts.path.strip("/")
    if not path:
        return 0
    if not path.isdigit():
        raise ConfigError(f"sentinel entry {_masked(entry)!r}: the database {path!r} is not "
                          "a number")
    return int(path)


def _masked(url: str) -> str:
    """``url`` with any password replaced, for messages."""
    out = []
    for entry in url.split(";"):
        head, sep, rest = entry.partition("://")
        userinfo, at, tail = rest.rpartition("@")
        if at and ":" in userinfo:
            entry = f"{head}{sep}{userinfo.partition(':')[0]}:***@{tail}"
        out.append(entry)
    return ";".join(out)


def target(settings: Settings) -> RedisTarget:
    """The parsed Redis location of ``settings``."""
    return parse(settings.redis_url, settings.redis_master_name,
                 settings.redis_sentinel_password)


def client(settings: Settings) -> redis.Redis:
    """The Redis client of the job store and the chain locks: health-checked connections,
    short socket timeouts; through the Sentinels' current master when so configured."""
    import redis
    t = target(settings)
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT,
                              "socket_connect_timeout": CONNECT_TIMEOUT,
                              "health_check_interval": 30}
    if not t.is_sentinel:
        return redis.Redis.from_url(t.url, **common)
    from redis.sentinel import Sentinel
    sentinel = Sentinel(list(t.sentinels), sentinel_kwargs=_sentinel_kwargs(t), **common)
    master: redis.Redis = sentinel.master_for(t.master_name, db=t.db, username=t.username,
                                              password=t.password)
    return master


def _sentinel_kwargs(t: RedisTarget) -> dict[str, Any]:
    out: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT,
                           "socket_connect_timeout": SENTINEL_TIMEOUT}
    if t.sentinel_password:
        out["password"] = t.sentinel_password
    return out


def celery_broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Celery's ``broker_url`` and the ``broker_transport_options`` it needs beyond ours:
    kombu's Sentinel transport takes the same URL plus the master's name."""
    t = target(settings)
    if not t.is_sentinel:
        return t.url, {}
    return t.url, {"master_name": t.master_name, "sentinel_kwargs": _sentinel_kwargs(t)}


def is_sentinel_client(client: Any) -> bool:
    """Whether ``client`` talks to a Sentinel-managed master (so replicas exist to wait for)."""
    try:
        from redis.sentinel import SentinelConnectionPool
    except ImportError:  # pragma: no cover - redis is a dependency of the service extra
        return False
    return isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool)


def wait_for_replica(client: Any, timeout_ms: int = REPLICA_WAIT_MS) -> int | None:
    """After a write that must survive a failover (a lease, a fence), ``WAIT 1`` for a
    replica to acknowledge it. Returns how many did (``None``: not a Sentinel setup)."""
    if not is_sentinel_client(client):
        return None
    return int(client.wait(1, timeout_ms))

