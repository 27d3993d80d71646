"""The alert rules carry the seed's thresholds and fire when they should (promtool)."""

import shutil
import subprocess
from pathlib import Path

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
