#!/usr/bin/python
# -*- coding: utf-8 -*-
# Managed by celery-stack (roles/mongodb).
"""Tell whether a user's password logs in to MongoDB, without changing anything."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mongodb_login_check
short_description: Check whether a MongoDB user and password authenticate
description:
  - Connects and authenticates (SCRAM) as I(login_user), then runs C(ping).
    Returns I(authenticated) C(true) or C(false); never changes anything.
  - MongoDB answers an unknown user and a wrong password alike
    (AuthenticationFailed, code 18); both give C(false).
  - Any other error (mongod unreachable, no primary, TLS) fails the task:
    a password is only called wrong when the server said so.
  - Why: community.mongodb.mongodb_user cannot compare passwords, and its
    C(update_password=always) runs updateUser and reports C(changed) on every
    run. roles/mongodb checks first and updates only a password that no
    longer logs in, so that a second converge changes nothing.
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
    description: The user to check.
    type: str
    required: true
  login_password:
    description: The password to check.
    type: str
    required: true
  login_database:
    description: The user's authentication database.
    type: str
    default: admin
  replica_set:
    description:
      - Replica set name. Given, the check authenticates against the
        primary (where user changes are written); else directly against
        I(login_host).
    type: str
  connect_timeout:
    description: Seconds to wait for the server (or the replica set's primary).
    type: int
    default: 30
requirements:
  - pymongo >= 4
author: celery-stack
"""

RETURN = r"""
authenticated:
  description: Whether the server accepted the user and password.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.celery_stack_mongodb import LOGIN_OPTIONS, OperationFailure, PyMongoError, mongo_client

AUTHENTICATION_FAILED = 18


def main():
    module = AnsibleModule(
        argument_spec=dict(LOGIN_OPTIONS, replica_set=dict(type="str"),
                           connect_timeout=dict(type="int", default=30)),
        supports_check_mode=True,
    )
    p = module.params
    where = {"replicaSet": p["replica_set"]} if p["replica_set"] else {"directConnection": True}
    client = mongo_client(module, **where)
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        if exc.code == AUTHENTICATION_FAILED:
            module.exit_json(changed=False, authenticated=False)
        module.fail_json(msg=f"unexpected answer while checking the login of {p['login_user']}: {exc}")
    except PyMongoError as exc:
        module.fail_json(msg=f"cannot reach mongod at {p['login_host']}:{p['login_port']}: {exc}")
    finally:
        client.close()
    module.exit_json(changed=False, authenticated=True)


if __name__ == "__main__":
    main()
