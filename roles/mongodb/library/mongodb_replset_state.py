#!/usr/bin/python
# -*- coding: utf-8 -*-
# Managed by celery-stack (roles/mongodb).
"""Read a replica set's member states and settings from one member."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mongodb_replset_state
short_description: Read the members of a MongoDB replica set as one member sees them
description:
  - Connects directly to one mongod, runs C(replSetGetStatus) and
    C(replSetGetConfig) and returns every member's state, health and optime
    merged with its settings (arbiter, hidden, delay, priority, votes).
  - community.mongodb.mongodb_status returns the state names only; the
    rolling restart of roles/mongodb also needs the health, the optimes
    (is a secondary caught up?) and the hidden and delayed members.
  - Read-only; the password is a module parameter, never part of a command line.
options:
  login_host:
    description: Host of the mongod to ask.
    type: str
    default: 127.0.0.1
  login_port:
    description: Port of the mongod to ask.
    type: int
    default: 27017
  login_user:
    description: User with the clusterMonitor role (or more).
    type: str
    required: true
  login_password:
    description: Its password.
    type: str
    required: true
  login_database:
    description: The user's authentication database.
    type: str
    default: admin
  connect_timeout:
    description: Seconds to wait for the mongod.
    type: int
    default: 10
requirements:
  - pymongo >= 4
author: celery-stack
"""

RETURN = r"""
initialized:
  description: C(false) when the mongod runs with a replica set name but the set was not initiated yet.
  returned: always
  type: bool
set:
  description: Name of the replica set.
  returned: when initialized
  type: str
members:
  description:
    - One dict per member, in the set's order, with the keys of replSetGetStatus
      (C(name), C(stateStr), C(health), C(optimeDate) as ISO 8601 text in UTC,
      C(self), C(lastHeartbeatMessage)) and of replSetGetConfig (C(arbiterOnly),
      C(hidden), C(secondaryDelaySecs), C(priority), C(votes)).
  returned: when initialized
  type: list
  elements: dict
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_stack_mongodb import LOGIN_OPTIONS, OperationFailure, PyMongoError, mongo_client

NOT_YET_INITIALIZED = 94
STATUS_KEYS = ("name", "stateStr", "health", "self", "lastHeartbeatMessage", "infoMessage")
CONFIG_KEYS = ("arbiterOnly", "hidden", "secondaryDelaySecs", "priority", "votes")


def _iso(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.isoformat()
    return None


def merge_members(status, config):
    """replSetGetStatus members with their replSetGetConfig settings, by member _id."""
    settings = {m["_id"]: m for m in config.get("members", [])}
    members = []
    for member in status.get("members", []):
        merged = {key: member[key] for key in STATUS_KEYS if key in member}
        merged["optimeDate"] = _iso(member.get("optimeDate"))
        merged["self"] = bool(member.get("self", False))
        own = settings.get(member.get("_id"), {})
        for key in CONFIG_KEYS:
            if key in own:
                merged[key] = own[key]
        members.append(merged)
    return members


def main():
    module = AnsibleModule(
        argument_spec=LOGIN_OPTIONS,
        supports_check_mode=True,
    )
    p = module.params
    client = mongo_client(module, directConnection=True)
    try:
        status = client.admin.command("replSetGetStatus")
        config = client.admin.command("replSetGetConfig")["config"]
    except OperationFailure as exc:
        if exc.code == NOT_YET_INITIALIZED:
            module.exit_json(changed=False, initialized=False)
        module.fail_json(msg=f"{p['login_host']}:{p['login_port']} refused replSetGetStatus: {exc}")
    except PyMongoError as exc:
        module.fail_json(msg=f"cannot reach mongod at {p['login_host']}:{p['login_port']}: {exc}")
    finally:
        client.close()
    module.exit_json(
        changed=False, initialized=True, set=status.get("set"),
        members=merge_members(status, config),
    )


if __name__ == "__main__":
    main()
