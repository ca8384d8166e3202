"""deploy/prometheus/vhdmend-rules.yml: valid YAML in Prometheus' rule-group shape, and
every metric it names is one /metrics exposes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from api.health.metrics import VOLUME_GAUGES, volume_metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "vhdmend-rules.yml"


def test_rules_name_only_exposed_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    (group,) = doc["groups"]
    rules = group["rules"]
    assert {r["alert"] for r in rules} >= {"VhdmendVolumeFillsSoon",
                                           "VhdmendVolumeOvercommitted"}
    status = {"id": "v", "host": "h", "roots": ["r"], "risk": "ok", "seconds_to_full": 1.0,
              "chains": [], "scan_seconds": 0.1,
              **{name: 1 for name, _ in VOLUME_GAUGES}}
    exposed = {f.name for f in volume_metrics([status])}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"]
        named = set(re.findall(r"vhdmend_[a-z_]+", rule["expr"]))
        assert named and named <= exposed, named - exposed
    assert any("predict_linear(vhdmend_volume_free_bytes[6h]" in r["expr"] for r in rules)


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    """Prometheus' own tool: the rules parse, and predict_linear fires when it should."""
    import os
    import shutil
    import subprocess

    import pytest
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool (Debian package prometheus) is required in CI")
        pytest.skip("promtool not installed")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    here = Path(__file__).resolve().parent
    test = subprocess.run([promtool, "test", "rules", "prometheus_rules_test.yml"],
                          cwd=here, capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
