"""Unit tests never write the machine's recovery timeline: a lab session may be reading it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from openstack_ha import timeline


@pytest.fixture(autouse=True)
def private_timeline(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path_factory.mktemp("timeline") / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))


@pytest.fixture
def planted_link(tmp_path: Path) -> Callable[[str, str], Path]:
    """A symbolic link planted at ``tmp_path/<at>`` (its directory made) pointing to a file
    of mode 0600 holding ``text``: the file returned, which root must leave untouched."""
    def plant(at: str, text: str) -> Path:
        victim = tmp_path / "shadow"
        victim.write_text(text)
        victim.chmod(0o600)
        link = tmp_path / at
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
        return victim
    return plant
