# Managed by celery-stack (roles/mongodb).
"""Pure functions behind the rolling restart of a replica set (tasks/restart.yml).

They decide, from the members' states as replSetGetStatus reports them
(https://www.mongodb.com/docs/manual/reference/command/replSetGetStatus/),
whether the set may lose one member for a restart, and in which order the
members the play restarts go, following MongoDB's maintenance procedure
(https://www.mongodb.com/docs/manual/tutorial/perform-maintenance-on-replica-set-members/):
secondaries one at a time, then the primary after it stepped down.

Filters:

- ``mongodb_replset_member_hosts(member_names, addresses)``: which inventory
  host each member (``host:port``, as in the role's member specs) is.
- ``mongodb_replset_problems(members, max_lag_seconds)``: what keeps the set
  from being healthy, one sentence per problem (empty list: healthy).
- ``mongodb_restart_order(members, member_hosts, hosts, max_lag_seconds)``:
  the hosts to restart, in order; raises for an unhealthy set.

``members`` is either the list of member documents of replSetGetStatus (keys
``name``, ``stateStr``, ``health``, ``optimeDate``, ``self``), optionally
merged with the member's replSetGetConfig settings (``arbiterOnly``,
``hidden``, ``secondaryDelaySecs``, ``priority``), as the role's
``mongodb_replset_state`` module returns them, or the ``replicaset`` dict of
community.mongodb.mongodb_status (member name to state). The latter carries
no health, optime or configuration, so lag and hidden members are then not
known.
"""

from __future__ import annotations

import datetime
from typing import Any

from ansible.errors import AnsibleFilterError

HEALTHY_STATES = ("PRIMARY", "SECONDARY", "ARBITER")


def _normalise(members: Any) -> list[dict[str, Any]]:
    """Member documents as a list of dicts, from either accepted input form."""
    if isinstance(members, dict):
        return [{"name": name, "stateStr": state} for name, state in members.items()]
    if not isinstance(members, list) or not all(isinstance(m, dict) and "name" in m for m in members):
        raise AnsibleFilterError(
            "mongodb_replset: members must be replSetGetStatus's member list or mongodb_status's replicaset dict"
        )
    return list(members)


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch of an optimeDate (datetime, ISO 8601 text or number)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise AnsibleFilterError(f"mongodb_replset: optimeDate {value!r} is not a date") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _host_part(member_name: str) -> str:
    """``host`` of ``host:port`` (``[v6]:port`` too); the whole name without a port."""
    if member_name.startswith("["):
        return member_name[1:].split("]", 1)[0]
    if member_name.count(":") == 1:
        return member_name.rsplit(":", 1)[0]
    return member_name


def mongodb_replset_member_hosts(member_names: list[str], addresses: dict[str, Any]) -> dict[str, str]:
    """Map member names (``host:port``) to inventory hosts.

    ``addresses`` maps each inventory host to its ``ansible_host`` (or an empty
    value). A member is the inventory host whose name, else whose
    ``ansible_host``, is the member's host part. Members that match no host
    are left out; a member that matches two hosts is an error.
    """
    mapping: dict[str, str] = {}
    for name in member_names:
        host = _host_part(str(name))
        if host in addresses:
            mapping[str(name)] = host
            continue
        matches = [inv for inv, address in addresses.items() if address and str(address) == host]
        if len(matches) > 1:
            raise AnsibleFilterError(
                f"mongodb_replset: member {name} matches the ansible_host of several inventory hosts: "
                + ", ".join(sorted(matches))
            )
        if matches:
            mapping[str(name)] = matches[0]
    return mapping


def _delay(member: dict[str, Any]) -> float:
    # secondaryDelaySecs since 5.0; slaveDelay before.
    return float(member.get("secondaryDelaySecs", member.get("slaveDelay", 0)) or 0)


def mongodb_replset_problems(members: Any, max_lag_seconds: float = 10) -> list[str]:
    """Say what keeps the replica set from losing one member safely.

    Healthy means: every member reachable (``health`` 1) and PRIMARY,
    SECONDARY or ARBITER; exactly one PRIMARY; and every data-bearing
    secondary at most ``max_lag_seconds`` behind the primary's optime, not
    counting a delayed member's configured delay. Returns one sentence per
    problem, each naming the member; an empty list when the set is healthy.
    """
    docs = _normalise(members)
    problems: list[str] = []
    for member in docs:
        state = str(member.get("stateStr", "UNKNOWN"))
        health = member.get("health", 1)
        if state not in HEALTHY_STATES or (health is not None and float(health) != 1):
            detail = f"{member['name']} is {state}"
            if health is not None and float(health) != 1:
                detail += " (unreachable: health 0)"
            message = member.get("lastHeartbeatMessage") or member.get("infoMessage")
            if message:
                detail += f": {message}"
            problems.append(detail)
    primaries = [m for m in docs if m.get("stateStr") == "PRIMARY"]
    if not primaries:
        problems.append("no member is PRIMARY")
        return problems
    if len(primaries) > 1:
        problems.append("several members report PRIMARY: " + ", ".join(str(m["name"]) for m in primaries))
        return problems
    primary_optime = _epoch(primaries[0].get("optimeDate"))
    if primary_optime is None:
        return problems
    for member in docs:
        if member.get("stateStr") != "SECONDARY":
            continue
        optime = _epoch(member.get("optimeDate"))
        if optime is None:
            continue
        lag = primary_optime - optime - _delay(member)
        if lag > float(max_lag_seconds):
            problems.append(
                f"{member['name']} is {lag:.0f} s behind the primary (more than {max_lag_seconds} s)"
            )
    return problems


def _rank(member: dict[str, Any]) -> int:
    """0: hidden or delayed secondary, 1: other secondary, 2: primary, 3: arbiter."""
    state = member.get("stateStr")
    if member.get("arbiterOnly") or state == "ARBITER":
        return 3
    if state == "PRIMARY":
        return 2
    if member.get("hidden") or _delay(member) > 0:
        return 0
    return 1


def mongodb_restart_order(
    members: Any,
    member_hosts: dict[str, str],
    hosts: list[str],
    max_lag_seconds: float = 10,
) -> list[str]:
    """Order the restart of ``hosts`` (inventory names) in a healthy set.

    - Hidden and delayed secondaries first (they serve no application
      reads), then the other secondaries in the set's member order, then the
      primary (which tasks/restart.yml steps down first), and arbiters last:
      an arbiter holds no data but is a vote, so it stays up for the
      election the primary's step-down starts.
    - Hosts that are no member of the set are an error (their member name
      matches no inventory host, see mongodb_replset_member_hosts); members
      whose host is not in ``hosts`` are not restarted, but their health
      counts.
    - Raises AnsibleFilterError naming the unhealthy members, or saying there
      is no primary, instead of returning an order.
    """
    docs = _normalise(members)
    problems = mongodb_replset_problems(docs, max_lag_seconds)
    if problems:
        raise AnsibleFilterError("the replica set is not healthy: " + "; ".join(problems))
    by_host = {member_hosts[m["name"]]: m for m in docs if m["name"] in member_hosts}
    strangers = [h for h in hosts if h not in by_host]
    if strangers:
        raise AnsibleFilterError(
            "no member of the replica set is " + ", ".join(strangers)
            + " (members: " + ", ".join(str(m["name"]) for m in docs) + ")"
        )
    position = {m["name"]: i for i, m in enumerate(docs)}
    chosen = [by_host[h] for h in dict.fromkeys(hosts)]
    chosen.sort(key=lambda m: (_rank(m), position[m["name"]]))
    return [member_hosts[m["name"]] for m in chosen]


class FilterModule:
    """The role's replica set filters."""

    def filters(self) -> dict[str, Any]:
        """Filter names to functions."""
        return {
            "mongodb_replset_member_hosts": mongodb_replset_member_hosts,
            "mongodb_replset_problems": mongodb_replset_problems,
            "mongodb_restart_order": mongodb_restart_order,
        }
