"""Fixtures of the kit's own unit tests (helpers in kit_playbooks.py)."""

from __future__ import annotations

import pytest

from kit_playbooks import playbook_runner


@pytest.fixture(scope="session")
def run_playbook(tmp_path_factory):
    """Run plays on localhost; see kit_playbooks.playbook_runner."""
    return playbook_runner(tmp_path_factory)
