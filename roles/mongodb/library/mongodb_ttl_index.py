#!/usr/bin/python
# -*- coding: utf-8 -*-
# Managed by celery-stack (roles/mongodb).
"""Keep a TTL index at the expiry the inventory asks for."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mongodb_ttl_index
short_description: Create a TTL index, or change its expiry with collMod
description:
  - Creates the single-field TTL index I(name) on I(field) of
    I(database).I(collection) when it is missing, and changes its
    C(expireAfterSeconds) with C(collMod) when it differs
    (U(https://www.mongodb.com/docs/manual/core/index-ttl/#change-the-expireafterseconds-value-for-a-ttl-index)).
  - Refuses an index of that name on other keys, or one without a TTL;
    dropping an index is left to the operator.
  - Why? community.mongodb.mongodb_index compares indexes by name only, so
    it never changes an expiry, and its shell module passes the password on
    mongosh's command line.
options:
  login_host:
    description: Host of mongod (or seed of the replica set).
    type: str
    default: 127.0.0.1
  login_port:
    description: Port of mongod.
    type: int
    default: 27017
  login_user:
    description: A user allowed to create indexes and run collMod.
    type: str
    required: true
  login_password:
    description: Its password.
    type: str
    required: true
  login_database:
    description: Its authentication database.
    type: str
    default: admin
  replica_set:
    description: Replica set name; given, the change goes to its primary.
    type: str
  connect_timeout:
    description: Seconds to wait for the server (or the replica set's primary).
    type: int
    default: 30
  database:
    description: Database of the collection.
    type: str
    required: true
  collection:
    description: The collection.
    type: str
    required: true
  name:
    description: Name of the index.
    type: str
    required: true
  field:
    description: The indexed date field.
    type: str
    required: true
  direction:
    description: Order of the index key.
    type: int
    choices: [1, -1]
    default: 1
  expire_after_seconds:
    description: Seconds after the field's date at which a document expires.
    type: int
    required: true
requirements:
  - pymongo >= 4
author: celery-stack
"""

RETURN = r"""
action:
  description: C(keep), C(create) or C(change).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_stack_mongodb import LOGIN_OPTIONS, PyMongoError, mongo_client, ttl_index_plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            LOGIN_OPTIONS,
            replica_set=dict(type="str"),
            connect_timeout=dict(type="int", default=30),
            database=dict(type="str", required=True),
            collection=dict(type="str", required=True),
            name=dict(type="str", required=True),
            field=dict(type="str", required=True),
            direction=dict(type="int", choices=[1, -1], default=1),
            expire_after_seconds=dict(type="int", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["expire_after_seconds"] < 0:
        module.fail_json(msg=f"expire_after_seconds must be 0 or more, got {p['expire_after_seconds']}")
    where = {"replicaSet": p["replica_set"]} if p["replica_set"] else {"directConnection": True}
    client = mongo_client(module, **where)
    key = [(p["field"], p["direction"])]
    try:
        collection = client[p["database"]][p["collection"]]
        try:
            action, why = ttl_index_plan(collection.index_information(), p["name"], key, p["expire_after_seconds"])
        except ValueError as exc:
            module.fail_json(msg=f"{p['database']}.{p['collection']}: {exc}")
        if action != "keep" and not module.check_mode:
            if action == "create":
                collection.create_index(key, name=p["name"], expireAfterSeconds=p["expire_after_seconds"])
            else:
                client[p["database"]].command("collMod", p["collection"], index={
                    "name": p["name"], "expireAfterSeconds": p["expire_after_seconds"]})
    except PyMongoError as exc:
        module.fail_json(msg=f"{p['database']}.{p['collection']} index {p['name']}: {exc}")
    finally:
        client.close()
    module.exit_json(changed=action != "keep", action=action, msg=why)


if __name__ == "__main__":
    main()
