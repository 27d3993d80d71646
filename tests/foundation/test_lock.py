"""The locks (requirements*.txt, installed with --require-hashes) agree with what the
.in files pin: an edit of a .in file without `make lock` fails here, not in production."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)


def pins(path: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(path.read_text())}


def locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    # Every locked requirement carries at least one hash, or --require-hashes refuses it.
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1] if text.startswith("#") else text)
    for entry in entries:
        if PIN.match(entry):
            assert "--hash=sha256:" in entry, entry.splitlines()[0]
    return pins(path)


@pytest.mark.parametrize(
    "source, lock",
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_every_pin_is_locked_at_the_same_version_with_hashes(source, lock):
    wanted = pins(ROOT / source)
    have = locked(ROOT / lock)
    assert wanted, source
    mismatched = {n: (v, have.get(n)) for n, v in wanted.items() if have.get(n) != v}
    assert not mismatched, f"{lock} is stale (run `make lock`): {mismatched}"


def test_the_dev_lock_holds_the_runtime_lock():
    runtime, dev = locked(ROOT / "requirements.txt"), locked(ROOT / "requirements-dev.txt")
    assert {n: dev.get(n) for n in runtime} == runtime
