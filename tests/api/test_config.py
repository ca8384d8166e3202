"""Settings from the example config file and the environment."""

from __future__ import annotations

from pathlib import Path

from service.config import hash_token, load

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "vhdmend.example.toml"


def test_example_config_loads():
    s = load({"VHDMEND_CONFIG": str(EXAMPLE)})
    assert s.host == "fs01" and set(s.roots) == {"vms", "repair"}
    assert {t.name for t in s.tokens} == {"ticketing", "grafana"}
    assert s.webhook_allow_hosts == ("tickets.example.com",)


def test_environment_overrides_the_file_and_plain_token_is_hashed():
    s = load({"VHDMEND_CONFIG": str(EXAMPLE), "VHDMEND_HOST": "fs09",
              "VHDMEND_API_TOKEN": "plain-token", "VHDMEND_LEASE_SECONDS": "7"})
    assert s.host == "fs09" and s.lease_seconds == 7.0
    entry = s.token_for_hash(hash_token("plain-token"))
    assert entry is not None and "admin" in entry.scopes
    assert all(t.sha256 != "plain-token" for t in s.tokens)
