"""Unit tests never write the machine's recovery timeline: a lab session may be reading it."""

from __future__ import annotations

import pytest

from nova_evacuate import timeline


@pytest.fixture(autouse=True)
def private_timeline(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path_factory.mktemp("timeline") / "timeline.jsonl"
    monkeypatch.setenv(timeline.ENV, str(path))
