"""The alert rules carry the seed's thresholds and fire when they should (promtool)."""

import shutil
import subprocess
from pathlib import Path

import yaml

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


def promtool(*args):
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: make test installs it (scripts/promtool.sh)"
    return subprocess.run([binary, *args], cwd=OPS, capture_output=True, text=True, timeout=60)


def test_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_at_the_seed_thresholds():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_has_a_case_that_fires_it():
    # By name and labels: two rules may share a name (PartitionSuspected), each must fire.
    groups = yaml.safe_load((OPS / "alerts.yml").read_text())["groups"]
    rules = [(rule["alert"], rule.get("labels", {})) for group in groups for rule in group["rules"]]
    tests = yaml.safe_load((OPS / "alerts_test.yml").read_text())["tests"]
    fired = [
        (case["alertname"], alert["exp_labels"])
        for test in tests
        for case in test.get("alert_rule_test", [])
        for alert in case["exp_alerts"]
    ]
    unfired = [
        (name, labels) for name, labels in rules
        if not any(name == fired_name and labels.items() <= exp.items() for fired_name, exp in fired)
    ]
    assert unfired == [], "alert rules without a promtool case that fires them"
