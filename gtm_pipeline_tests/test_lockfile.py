"""The lockfile the install step uses (`requirements.lock`) holds what pyproject.toml pins, every package with hashes.

A pin changed in pyproject.toml without `make lock` would install the old version silently; this catches it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    locked: dict[str, str] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        m = _PIN.match(line)
        if m:
            locked[_norm(m.group(1))] = m.group(3)
    return locked


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        m = _PIN.match(spec.strip())
        assert m, f"pyproject.toml: {spec!r} is not pinned with ==; pin it so requirements.lock stays reproducible"
        pins[_norm(m.group(1))] = m.group(3)
    return pins


def test_every_pin_of_pyproject_is_locked_at_the_same_version():
    locked = _locked()
    wrong = {name: (ver, locked.get(name)) for name, ver in _pins().items() if locked.get(name) != ver}
    assert not wrong, f"requirements.lock disagrees with pyproject.toml (pinned, locked): {wrong}; run `make lock`"


def test_every_locked_package_carries_a_hash():
    text = (REPO / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [e.split()[0] for e in entries if _PIN.match(e) and "--hash=sha256:" not in e]
    assert not unhashed, f"requirements.lock: packages without a hash: {unhashed}; run `make lock`"
    assert len([e for e in entries if _PIN.match(e)]) >= len(_pins())


def test_the_lock_names_no_path_of_the_machine_it_was_made_on():
    header = "\n".join((REPO / "requirements.lock").read_text().splitlines()[:3])
    assert "/tmp" not in header and "/home" not in header and "make lock" in header
