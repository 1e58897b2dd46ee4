"""Fixtures for the compliance tests: the demo screening list, loaded without the rescreen task."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.models import ScreeningList
from compliance.services import screening_list_load

DEMO_LIST = Path(__file__).resolve().parents[2] / "compliance" / "data" / "screening_demo.csv"


@pytest.fixture
def demo_list(db: None) -> ScreeningList:
    return screening_list_load(source=DEMO_LIST, rescreen=False)
