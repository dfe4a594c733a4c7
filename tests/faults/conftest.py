"""Fault-injection suite setup: the helpers of tests/ importable, every test here marked ``faults``.

The parent tests/conftest.py (8 simulated CPU devices, offline Hugging Face, shared fixtures) applies too.
``RLVR_FAULTS_HEAVY=1`` turns on the heavier variants (more signal moments, longer runs).
"""
import os
import pathlib
import sys

import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

HEAVY = os.environ.get("RLVR_FAULTS_HEAVY", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).resolve().parent
    for item in items:
        if here in pathlib.Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)
