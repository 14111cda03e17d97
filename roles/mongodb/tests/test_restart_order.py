"""The rolling restart's order and health checks (filter_plugins/mongodb_replset.py).

Pure functions, called with member documents shaped as replSetGetStatus
(merged with replSetGetConfig settings) returns them; no mongod needed.
"""

from __future__ import annotations

import datetime
import importlib.util
import pathlib

import pytest
from ansible.errors import AnsibleFilterError

_PATH = pathlib.Path(__file__).resolve().parents[1] / "filter_plugins" / "mongodb_replset.py"
_SPEC = importlib.util.spec_from_file_location("mongodb_replset", _PATH)
assert _SPEC and _SPEC.loader
plugin = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plugin)

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)
HOSTS = {"mongo1:27017": "mongo1", "mongo2:27017": "mongo2", "mongo3:27017": "mongo3"}


def member(name, state, behind=0.0, health=1, **config):
    doc = {
        "name": name,
        "stateStr": state,
        "health": health,
        "optimeDate": (NOW - datetime.timedelta(seconds=behind)).isoformat(),
    }
    doc.update(config)
    return doc


def three(primary="mongo1"):
    return [member(n, "PRIMARY" if h == primary else "SECONDARY") for n, h in HOSTS.items()]


def test_secondaries_first_primary_last():
    order = plugin.mongodb_restart_order(three("mongo1"), HOSTS, ["mongo1", "mongo2", "mongo3"])
    assert order == ["mongo2", "mongo3", "mongo1"]


def test_primary_elsewhere_after_a_failover():
    order = plugin.mongodb_restart_order(three("mongo2"), HOSTS, ["mongo1", "mongo2", "mongo3"])
    assert order == ["mongo1", "mongo3", "mongo2"]


def test_only_the_hosts_asked_for():
    assert plugin.mongodb_restart_order(three(), HOSTS, ["mongo1"]) == ["mongo1"]
    assert plugin.mongodb_restart_order(three(), HOSTS, ["mongo3", "mongo2"]) == ["mongo2", "mongo3"]
    assert plugin.mongodb_restart_order(three(), HOSTS, []) == []


def test_members_outside_the_play_are_skipped_but_count_for_health():
    members = three() + [member("mongo4:27017", "SECONDARY"), member("mongo5:27017", "SECONDARY")]
    assert plugin.mongodb_restart_order(members, HOSTS, ["mongo1", "mongo2"]) == ["mongo2", "mongo1"]
    members[-1]["stateStr"] = "RECOVERING"
    with pytest.raises(AnsibleFilterError, match="mongo5:27017 is RECOVERING"):
        plugin.mongodb_restart_order(members, HOSTS, ["mongo1", "mongo2"])


def test_hidden_and_delayed_members_go_first():
    hosts = {**HOSTS, "mongo4:27017": "mongo4", "mongo5:27017": "mongo5"}
    members = three() + [
        member("mongo4:27017", "SECONDARY", hidden=True, priority=0),
        member("mongo5:27017", "SECONDARY", behind=3600, hidden=True, priority=0, secondaryDelaySecs=3600),
    ]
    order = plugin.mongodb_restart_order(members, hosts, list(hosts.values()))
    assert order == ["mongo4", "mongo5", "mongo2", "mongo3", "mongo1"]


def test_a_delayed_member_is_caught_up_within_its_delay():
    members = three() + [member("mongo4:27017", "SECONDARY", behind=3605, secondaryDelaySecs=3600)]
    assert plugin.mongodb_replset_problems(members, 10) == []
    members[-1]["optimeDate"] = (NOW - datetime.timedelta(seconds=3700)).isoformat()
    assert plugin.mongodb_replset_problems(members, 10) == [
        "mongo4:27017 is 100 s behind the primary (more than 10 s)"
    ]


def test_arbiters_last():
    hosts = {**HOSTS, "arb:27017": "arb"}
    members = three() + [member("arb:27017", "ARBITER", arbiterOnly=True)]
    order = plugin.mongodb_restart_order(members, hosts, ["arb", "mongo1", "mongo2"])
    assert order == ["mongo2", "mongo1", "arb"]


def test_an_arbiter_has_no_lag():
    members = three() + [member("arb:27017", "ARBITER", behind=100000, arbiterOnly=True)]
    assert plugin.mongodb_replset_problems(members) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"stateStr": "RECOVERING"}, "mongo3:27017 is RECOVERING"),
        ({"stateStr": "STARTUP2"}, "mongo3:27017 is STARTUP2"),
        ({"stateStr": "(not reachable/healthy)", "health": 0, "lastHeartbeatMessage": "Connection refused"},
         "mongo3:27017 is (not reachable/healthy) (unreachable: health 0): Connection refused"),
        ({"stateStr": "SECONDARY", "health": 0}, "mongo3:27017 is SECONDARY (unreachable: health 0)"),
    ],
)
def test_an_unhealthy_member_refuses_the_restart(change, expected):
    members = three()
    members[2].update(change)
    assert expected in plugin.mongodb_replset_problems(members)
    with pytest.raises(AnsibleFilterError, match="not healthy") as err:
        plugin.mongodb_restart_order(members, HOSTS, ["mongo1"])
    assert expected in str(err.value)


def test_a_lagging_secondary_refuses_the_restart():
    members = three()
    members[1]["optimeDate"] = (NOW - datetime.timedelta(seconds=45)).isoformat()
    with pytest.raises(AnsibleFilterError, match=r"mongo2:27017 is 45 s behind the primary"):
        plugin.mongodb_restart_order(members, HOSTS, ["mongo3"])
    assert plugin.mongodb_restart_order(members, HOSTS, ["mongo3"], 60) == ["mongo3"]


def test_no_primary_refuses_the_restart():
    members = [member(n, "SECONDARY") for n in HOSTS]
    assert plugin.mongodb_replset_problems(members) == ["no member is PRIMARY"]
    with pytest.raises(AnsibleFilterError, match="no member is PRIMARY"):
        plugin.mongodb_restart_order(members, HOSTS, ["mongo2"])


def test_two_primaries_refuse_the_restart():
    members = three()
    members[1]["stateStr"] = "PRIMARY"
    assert plugin.mongodb_replset_problems(members) == [
        "several members report PRIMARY: mongo1:27017, mongo2:27017"
    ]


def test_a_host_that_is_no_member_is_an_error():
    with pytest.raises(AnsibleFilterError, match=r"no member of the replica set is mongo9 \(members: mongo1:27017"):
        plugin.mongodb_restart_order(three(), HOSTS, ["mongo9"])


def test_mongodb_status_form_is_accepted():
    status = {"mongo1:27017": "PRIMARY", "mongo2:27017": "SECONDARY", "mongo3:27017": "SECONDARY"}
    assert plugin.mongodb_restart_order(status, HOSTS, ["mongo1", "mongo3"]) == ["mongo3", "mongo1"]
    status["mongo2:27017"] = "DOWN"
    assert plugin.mongodb_replset_problems(status) == ["mongo2:27017 is DOWN"]


def test_optime_forms():
    members = three()
    members[0]["optimeDate"] = NOW
    members[1]["optimeDate"] = NOW.timestamp() - 20
    members[2]["optimeDate"] = "2026-12-03T12:00:00Z"
    assert plugin.mongodb_replset_problems(members, 10) == [
        "mongo2:27017 is 20 s behind the primary (more than 10 s)"
    ]
    members[2]["optimeDate"] = "yesterday"
    with pytest.raises(AnsibleFilterError, match="is not a date"):
        plugin.mongodb_replset_problems(members)


def test_bad_input_is_an_error():
    with pytest.raises(AnsibleFilterError, match="members must be"):
        plugin.mongodb_replset_problems("mongo1")


def test_member_names_map_to_inventory_hosts():
    addresses = {"mongo1": "", "mongo2": "10.0.0.12", "db3": "mongo3.example.net"}
    names = ["mongo1:27017", "10.0.0.12:27017", "mongo3.example.net:27017", "elsewhere:27017", "[::1]:27017"]
    assert plugin.mongodb_replset_member_hosts(names, addresses) == {
        "mongo1:27017": "mongo1",
        "10.0.0.12:27017": "mongo2",
        "mongo3.example.net:27017": "db3",
    }


def test_a_member_matching_two_hosts_is_an_error():
    with pytest.raises(AnsibleFilterError, match="several inventory hosts: a, b"):
        plugin.mongodb_replset_member_hosts(["10.0.0.1:27017"], {"a": "10.0.0.1", "b": "10.0.0.1"})


def test_the_filters_are_exported():
    assert set(plugin.FilterModule().filters()) == {
        "mongodb_replset_member_hosts", "mongodb_replset_problems", "mongodb_restart_order",
    }


def test_the_role_maps_its_member_specs_to_inventory_hosts(run_playbook, tmp_path):
    """vars/main.yml's mapping and the filters, as a play with the role sees them."""
    out = tmp_path / "mapping.json"
    plays = [{
        "name": "mapping",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "mongodb_admin_password": "unit-test-admin",
            "mongodb_app_password": "unit-test-app",
            "mongodb_monitor_password": "unit-test-monitor",
            "mongodb_install_source": "directory",
            "mongodb_deb_directory": "/srv/debs",
            "mongodb_replset_members": ["localhost:27017", "127.0.0.1:27018", "db3:27017"],
        },
        "tasks": [
            # An inventory's ansible_host (play vars are not in hostvars).
            {"ansible.builtin.set_fact": {"ansible_host": "127.0.0.1"}},
            {"ansible.builtin.include_role": {"name": "mongodb", "tasks_from": "assert", "public": True}},
            {"ansible.builtin.copy": {
                "content": "{{ {'hosts': _mongodb_replset_member_hosts, 'order': members"
                           " | mongodb_restart_order(_mongodb_replset_member_hosts, ['localhost'])} | to_json }}",
                "dest": str(out), "mode": "0644"},
             "vars": {"members": [
                 {"name": "localhost:27017", "stateStr": "SECONDARY", "health": 1},
                 {"name": "127.0.0.1:27018", "stateStr": "PRIMARY", "health": 1},
                 {"name": "db3:27017", "stateStr": "SECONDARY", "health": 1},
             ]}},
        ],
    }]
    proc = run_playbook(plays, "mapping")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    # localhost's inventory name matches the first member, its ansible_host
    # the second; db3 is no host of the play.
    assert json.loads(out.read_text()) == {
        "hosts": {"localhost:27017": "localhost", "127.0.0.1:27018": "localhost"},
        "order": ["localhost"],
    }
