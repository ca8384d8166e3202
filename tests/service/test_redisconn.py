"""Where Redis is: VHDMEND_REDIS_URL as one server or Sentinels, and its config errors."""

from __future__ import annotations

import pytest

from service import redisconn
from service.config import load
from service.errors import ClientError, ConfigError


def test_sentinel_url_with_master_name_and_passwords() -> None:
    t = redisconn.parse("sentinel://:s3cret@h1:26380/2;sentinel://h2:26381;sentinel://h3",
                        "vhdmend", "sentpass")
    assert t.is_sentinel
    assert t.sentinels == (("h1", 26380), ("h2", 26381), ("h3", redisconn.SENTINEL_PORT))
    assert (t.master_name, t.db, t.password, t.sentinel_password) == ("vhdmend", 2, "s3cret",
                                                                      "sentpass")
    assert "s3cret" not in t.describe() and "h2:26381" in t.describe()


def test_a_plain_url_stays_as_it_is() -> None:
    t = redisconn.parse("redis://:pw@10.0.0.5:6380/1")
    assert not t.is_sentinel and t.url == "redis://:pw@10.0.0.5:6380/1"
    assert t.describe() == "redis://10.0.0.5:6380"


@pytest.mark.parametrize(("url", "master", "words"), [
    ("sentinel://h1:26379;sentinel://h2:26379", "", "VHDMEND_REDIS_MASTER_NAME is not set"),
    ("sentinel://h1:abc", "m", "port is not a number"),
    ("sentinel://h1:0", "m", "port is not a number"),
    ("sentinel://h1:70000", "m", "port is not a number"),
    ("sentinel://h1:", "m", "empty port"),
    ("sentinel://:26379", "m", "no host"),
    ("sentinel://h1:26379;redis://h2:6379", "m", "must be sentinel://host:port"),
    ("sentinel://h1:26379/x", "m", "database 'x' is not a number"),
    ("sentinel://h1:26379?ssl=1", "m", "URL options"),
    ("sentinel://h1:1;sentinel://h1:1", "m", "listed twice"),
    ("sentinel://:a@h1:1;sentinel://:b@h2:2", "m", "differ from the first"),
    ("redis://h1:6379", "m", "is not a sentinel:// URL"),
    ("redis://h1:6379;redis://h2:6379", "", "only meaningful as sentinel://"),
    ("http://h1", "", "expected redis://"),
    ("", "", "empty"),
])
def test_bad_redis_settings_name_the_problem(url: str, master: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        redisconn.parse(url, master)
    assert words in str(info.value)
    assert isinstance(info.value, ClientError) and info.value.code == "invalid_config"


def test_a_password_never_appears_in_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        redisconn.parse("sentinel://:hunter2@h1:x", "m")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_settings_from_the_environment_are_checked_on_load() -> None:
    env = {"VHDMEND_REDIS_URL": "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380",
           "VHDMEND_REDIS_MASTER_NAME": "vhdmend", "VHDMEND_REDIS_SENTINEL_PASSWORD": "pw"}
    s = load(env)
    t = redisconn.target(s)
    assert t.sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380))
    assert t.sentinel_password == "pw"
    with pytest.raises(ConfigError, match="MASTER_NAME"):
        load({"VHDMEND_REDIS_URL": env["VHDMEND_REDIS_URL"]})


def test_the_celery_broker_gets_the_master_name() -> None:
    s = load({}, redis_url="sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380",
             redis_master_name="vhdmend", redis_sentinel_password="pw")
    url, options = redisconn.celery_broker(s)
    assert url == s.redis_url
    assert options["master_name"] == "vhdmend"
    assert options["sentinel_kwargs"]["password"] == "pw"
    from workers.factory import make_app
    app = make_app(s)
    assert app.conf.broker_transport_options["master_name"] == "vhdmend"
    assert app.conf.broker_transport_options["visibility_timeout"] == 6 * 3600
    conn = app.connection_for_write()
    assert conn.transport_cls == "sentinel"
    assert conn.alt == ["sentinel://127.0.0.1:26379", "sentinel://127.0.0.1:26380"]
    assert make_app(load({})).conf.broker_transport_options == {"visibility_timeout": 6 * 3600}


def test_the_store_client_is_sentinel_managed() -> None:
    from redis.sentinel import SentinelConnectionPool

    s = load({}, redis_url="sentinel://127.0.0.1:1/3", redis_master_name="vhdmend")
    client = redisconn.client(s)             # no connection yet: built lazily
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.connection_pool.service_name == "vhdmend"
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert redisconn.is_sentinel_client(client)
    assert not redisconn.is_sentinel_client(redisconn.client(load({})))
