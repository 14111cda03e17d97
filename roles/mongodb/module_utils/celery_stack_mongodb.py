# -*- coding: utf-8 -*-
# Managed by celery-stack (roles/mongodb).
"""What the role's modules share: their login options and a pymongo client
built from them (the password is a module parameter, never a command line)."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure, PyMongoError
except ImportError:
    PYMONGO_ERROR = traceback.format_exc()
    MongoClient = None
    OperationFailure = PyMongoError = Exception
else:
    PYMONGO_ERROR = None

LOGIN_OPTIONS = dict(
    login_host=dict(type="str", default="127.0.0.1"),
    login_port=dict(type="int", default=27017),
    login_user=dict(type="str", required=True),
    login_password=dict(type="str", required=True, no_log=True),
    login_database=dict(type="str", default="admin"),
    connect_timeout=dict(type="int", default=10),
)


def mongo_client(module, **where):
    """A client for the module's login options; `where` adds pymongo
    options (directConnection=True, replicaSet=...). Fails the module when
    pymongo is missing."""
    if PYMONGO_ERROR:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_ERROR)
    p = module.params
    timeout_ms = p["connect_timeout"] * 1000
    return MongoClient(
        host=p["login_host"], port=p["login_port"],
        username=p["login_user"], password=p["login_password"], authSource=p["login_database"],
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, **where,
    )


def ttl_index_plan(existing: dict, name: str, key: list, seconds: int) -> tuple[str, str]:
    """What to do about a TTL index, from the collection's index_information():
    ("keep" | "create" | "change", why). Refuses (ValueError) an index of that
    name on other keys, or one without a TTL: dropping it is the operator's
    decision, not a converge's."""
    found = existing.get(name)
    if found is None:
        return "create", f"no index named {name}"
    keys = [tuple(pair) for pair in found.get("key", [])]
    if keys != [tuple(pair) for pair in key]:
        raise ValueError(f"index {name} exists on {keys}, not on {[tuple(p) for p in key]}; drop or rename it first")
    if "expireAfterSeconds" not in found:
        raise ValueError(f"index {name} exists without a TTL (collMod cannot add one); drop it first")
    if int(found["expireAfterSeconds"]) == int(seconds):
        return "keep", f"expireAfterSeconds is {seconds} already"
    return "change", f"expireAfterSeconds {found['expireAfterSeconds']} -> {seconds}"
