"""Fault-injection suite setup: every test here marked ``faults``.

The parent tests/conftest.py (8 simulated CPU devices, offline Hugging Face, the helpers of tests/ importable,
shared fixtures such as the tiny training ``env``) applies too.
``RLVR_FAULTS_HEAVY=1`` turns on the heavier variants (more signal moments, longer runs).
"""
import os
import pathlib

import pytest

HEAVY = os.environ.get("RLVR_FAULTS_HEAVY", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).resolve().parent
    for item in items:
        if here in pathlib.Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)
