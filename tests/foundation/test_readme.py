"""The README is true in a fresh clone: every file it names exists there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_path_the_readme_names_exists_in_the_clone():
    text = (ROOT / "README.md").read_text()
    names = set(re.findall(r"`((?:\.\./)?[\w.-]+(?:/[\w.-]+)+/?)`", text))
    assert names, "the README names no paths?"
    missing = sorted(n for n in names if not (ROOT / n).exists())
    assert not missing, f"README names paths a clone does not have: {missing}"
    assert "../" not in text, "the README points outside the repository"


def test_make_names_the_readme_commands():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([\w-]+)", (ROOT / "README.md").read_text()):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
