"""Fixtures shared by the test files (plain helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_checkpoint


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GGKMNet checkpoint with perturbed weights (not the identity an untrained net is)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("weights"))
