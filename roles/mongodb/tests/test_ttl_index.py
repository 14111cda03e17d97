"""The TTL index plan of library/mongodb_ttl_index.py (module_utils), fed
with what pymongo's index_information() returns; no mongod needed."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "module_utils" / "celery_stack_mongodb.py"
_SPEC = importlib.util.spec_from_file_location("celery_stack_mongodb", _PATH)
assert _SPEC and _SPEC.loader
utils = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(utils)

KEY = [("date_done", -1)]
BASE = {"_id_": {"v": 2, "key": [("_id", 1)]},
        "date_done_1": {"v": 2, "key": [("date_done", 1)]}}  # Celery's own, without TTL


def test_missing_index_is_created():
    assert utils.ttl_index_plan(BASE, "date_done_ttl", KEY, 604800)[0] == "create"


def test_same_expiry_changes_nothing():
    existing = {**BASE, "date_done_ttl": {"v": 2, "key": [("date_done", -1)], "expireAfterSeconds": 604800}}
    assert utils.ttl_index_plan(existing, "date_done_ttl", KEY, 604800)[0] == "keep"


def test_other_expiry_is_changed_in_place():
    existing = {**BASE, "date_done_ttl": {"v": 2, "key": [("date_done", -1)], "expireAfterSeconds": 86400}}
    action, why = utils.ttl_index_plan(existing, "date_done_ttl", KEY, 604800)
    assert action == "change" and "86400 -> 604800" in why


@pytest.mark.parametrize("found, words", [
    ({"v": 2, "key": [("date_done", 1)], "expireAfterSeconds": 604800}, "not on"),
    ({"v": 2, "key": [("created", -1)], "expireAfterSeconds": 604800}, "not on"),
    ({"v": 2, "key": [("date_done", -1)]}, "without a TTL"),
])
def test_an_index_of_that_name_that_is_not_ours_is_refused(found, words):
    with pytest.raises(ValueError, match=words):
        utils.ttl_index_plan({**BASE, "date_done_ttl": found}, "date_done_ttl", KEY, 604800)
