"""The version rules accept and refuse the right RabbitMQ / Erlang pairs and
upgrade steps, with messages that say why.

Every case runs the role's `version_rules` entry point on localhost with
plain inputs (no broker, no apt): Ansible validates them against
meta/argument_specs.yml, then the rules check the pair against the
compatibility matrix and the upgrade step against the series order (both in
vars/main.yml). Each case is one play of a single ansible-playbook run; its
outcome (the decision the rules recorded, or the failure message) is written
to a file the test reads.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

ROLE = pathlib.Path(__file__).resolve().parents[1]
WHICH_ERLANG = "https://www.rabbitmq.com/docs/which-erlang"
UPGRADE = "https://www.rabbitmq.com/docs/upgrade"


def case(version, erlang, installed="", origin="installed"):
    return {
        "rabbitmq_rules_version": version,
        "rabbitmq_rules_erlang_version": erlang,
        "rabbitmq_rules_installed_version": installed,
        "rabbitmq_rules_origin": origin,
    }


# name: (inputs, expected decision keys (accepted) or message fragments (refused))
ACCEPTED = {
    "team_pins_4.3_erlang_28": (
        case("4.3.*", "1:28.*", origin="team"),
        {"rabbitmq": "4.3", "series": "4.3", "erlang": "28", "upgrade": "fresh", "exception": ""},
    ),
    "team_pins_4.1_erlang_27": (
        case("4.1.*", "1:27.*", origin="team"),
        {"rabbitmq": "4.1", "erlang": "27", "in_matrix": True},
    ),
    "bookworm_3.10.8_erlang_25.2.3": (
        case("3.10.8-1.1", "1:25.2.3+dfsg-1", origin="distro"),
        {"rabbitmq": "3.10.8", "erlang": "25.2.3", "erlang_range": "24.2 to 25.2.x"},
    ),
    "trixie_4.0.5_erlang_27.3.4.1": (
        case("4.0.5-6+deb13u2", "1:27.3.4.1+dfsg-1"),
        {"rabbitmq": "4.0.5", "erlang": "27.3.4.1", "in_matrix": True},
    ),
    "4.3.7_erlang_29": (
        case("4.3.7", "29.0.2"),
        {"rabbitmq": "4.3.7", "in_matrix": True, "exception": ""},
    ),
    "4.4_erlang_29": (case("4.4.*", "1:29.*", origin="team"), {"in_matrix": True}),
    "forky_exception_4.3.6_erlang_29.1.1": (
        case("4.3.6-1", "1:29.1.1+dfsg-1", origin="distro"),
        {"rabbitmq": "4.3.6", "erlang": "29.1.1", "in_matrix": False},
    ),
    # Upgrade path: the same series, or the next one.
    "upgrade_4.0.5_to_4.1": (
        case("4.1.*", "1:27.*", installed="4.0.5-6+deb13u2", origin="team"),
        {"upgrade": "next_series", "installed": "4.0.5", "path": "4.0 -> 4.1"},
    ),
    "patch_upgrade_4.3.6_to_4.3.8": (
        case("4.3.8-1", "1:28.1-1", installed="4.3.6-1"),
        {"upgrade": "same_series"},
    ),
    "upgrade_3.10.8_to_3.11": (
        case("3.11.*", "1:25.*", installed="3.10.8-1.1", origin="team"),
        {"upgrade": "next_series"},
    ),
    "upgrade_3.13.7_to_4.0": (
        case("4.0.*", "1:27.*", installed="3.13.7-1", origin="team"),
        {"upgrade": "next_series"},
    ),
    "fresh_install_4.3": (case("4.3.*", "1:28.*", installed="", origin="team"), {"upgrade": "fresh"}),
}

REFUSED = {
    "4.3_erlang_25": (
        case("4.3.*", "1:25.*", origin="team"),
        [
            "RabbitMQ 4.3 with Erlang 25 is not a supported pair",
            "rabbitmq_team_version=4.3.* and rabbitmq_team_erlang_version=1:25.*",
            "needs Erlang 27.0 to 29.x",
            WHICH_ERLANG,
            "Set rabbitmq_team_erlang_version to a series in that range.",
        ],
    ),
    "4.2_erlang_29": (
        case("4.2.*", "1:29.*", origin="team"),
        ["RabbitMQ 4.2 with Erlang 29 is not a supported pair", "needs Erlang 27.0 to 27.x"],
    ),
    "4.3.6_erlang_29.2_not_the_exception": (
        case("4.3.6", "29.2"),
        ["RabbitMQ 4.3.6 with Erlang 29.2 is not a supported pair", "needs Erlang 27.0 to 28.x"],
    ),
    "3.10.8_erlang_26": (
        case("3.10.8", "26.2.5"),
        ["RabbitMQ 3.10.8 with Erlang 26.2.5 is not a supported pair", "needs Erlang 24.2 to 25.2.x"],
    ),
    "distro_pair_outside_the_matrix": (
        case("4.2.1-1", "1:29.0-1", origin="distro"),
        [
            "Debian (apt candidates rabbitmq-server 4.2.1-1, erlang-base 1:29.0-1)",
            "Debian offers rabbitmq-server 4.2.1-1 with erlang-base 1:29.0-1",
            "use rabbitmq_install_source=team",
            WHICH_ERLANG,
        ],
    ),
    "unknown_series": (
        case("3.9.*", "1:24.*", origin="team"),
        ["RabbitMQ 3.9 (from the team pins", "is not a release series this role knows",
         "3.10, 3.11, 3.12, 3.13, 4.0, 4.1, 4.2, 4.3, 4.4"],
    ),
    "pin_without_series": (
        case("latest", "1:28.*", origin="team"),
        ["Cannot read a RabbitMQ release series and an Erlang version",
         "rabbitmq_team_version=latest"],
    ),
    # Upgrade path.
    "skip_4.0.5_to_4.3": (
        case("4.3.*", "1:28.*", installed="4.0.5-6+deb13u2", origin="team"),
        [
            "rabbitmq-server 4.0.5 is installed",
            "would bring RabbitMQ 4.3",
            "skips release series; the supported path is 4.0 -> 4.1 -> 4.2 -> 4.3",
            "one minor series at a time",
            "all stable feature flags enabled before each step",
            "blue-green deployment",
            UPGRADE,
            "No variable skips this check.",
        ],
    ),
    "skip_3.10.8_to_4.3": (
        case("4.3.*", "1:28.*", installed="3.10.8-1.1", origin="team"),
        ["rabbitmq-server 3.10.8 is installed",
         "the supported path is 3.10 -> 3.11 -> 3.12 -> 3.13 -> 4.0 -> 4.1 -> 4.2 -> 4.3", UPGRADE],
    ),
    "downgrade_4.3_to_4.2": (
        case("4.2.*", "1:27.*", installed="4.3.6-1", origin="team"),
        ["rabbitmq-server 4.3.6 is installed", "downgrade of the release series (4.3 to 4.2)", UPGRADE],
    ),
    "3.11_before_3.11.18_to_3.12": (
        case("3.12.*", "1:26.*", installed="3.11.10-1", origin="team"),
        ["3.11 moves to the next series only from 3.11.18 on", UPGRADE],
    ),
    "installed_series_unknown": (
        case("3.10.*", "1:25.*", installed="3.9.29-1", origin="team"),
        ["rabbitmq-server 3.9.29 is installed", "has no upgrade path between these versions"],
    ),
    # A variable cannot bypass the upgrade rule.
    "skip_with_an_override_attempt": (
        {**case("4.3.*", "1:28.*", installed="4.0.5-6", origin="team"),
         "rabbitmq_allow_series_skip": True, "rabbitmq_upgrade_allow_skip": True},
        ["skips release series", UPGRADE],
    ),
    "spec_rejects_an_unknown_origin": (
        case("4.3.*", "1:28.*", origin="somewhere"),
        ["value of rabbitmq_rules_origin must be one of: team, distro, installed, got: somewhere"],
    ),
}

CASES = {**ACCEPTED, **REFUSED}
WARNING = re.compile(r"WARNING: RabbitMQ (\S+) with Erlang (\S+) is outside the compatibility matrix")


@pytest.fixture(scope="module")
def outcomes(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("outcomes")
    plays = []
    for name, (inputs, _) in CASES.items():
        plays.append({
            "name": f"case {name}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": inputs,
            "tasks": [{
                "block": [
                    {"ansible.builtin.include_role": {"name": "rabbitmq", "tasks_from": "version_rules"}},
                    {"ansible.builtin.copy": {
                        "content": "{{ {'ok': true, 'rules': _rabbitmq_rules} | to_json }}",
                        "dest": str(out / name), "mode": "0644"}},
                ],
                "rescue": [
                    {"ansible.builtin.copy": {
                        "content": "{{ {'ok': false, 'msg': ansible_failed_result.msg} | to_json }}",
                        "dest": str(out / name), "mode": "0644"}},
                ],
            }],
        })
    proc = run_playbook(plays, "version_rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The output of each play, to find the warnings it printed.
    sections = dict(re.findall(r"PLAY \[case (\S+)\] \*+\n(.*?)(?=\nPLAY |\Z)", proc.stdout, re.S))
    return {name: (json.loads((out / name).read_text()), sections.get(name, "")) for name in CASES}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted(outcomes, name):
    outcome, _ = outcomes[name]
    assert outcome["ok"], f"{name} was refused: {outcome.get('msg')}"
    rules = outcome["rules"]
    for key, value in ACCEPTED[name][1].items():
        got = rules[key]
        if isinstance(value, bool):
            got = str(got).lower() in ("true", "1")
        assert got == value, f"{key}: {got!r} != {value!r} in {rules}"


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_a_readable_message(outcomes, name):
    outcome, _ = outcomes[name]
    assert not outcome["ok"], f"{name} was accepted: {outcome.get('rules')}"
    message = " ".join(str(outcome["msg"]).split())
    for fragment in REFUSED[name][1]:
        assert fragment in message, message


def test_exception_is_accepted_with_a_warning_naming_pair_and_reason(outcomes):
    outcome, output = outcomes["forky_exception_4.3.6_erlang_29.1.1"]
    assert "forky" in outcome["rules"]["exception"]
    text = " ".join(output.split())
    assert WARNING.search(text), output
    assert WARNING.search(text).groups() == ("4.3.6", "29.1.1")
    assert "accepted as a documented exception" in text
    assert "Debian testing (forky) ships RabbitMQ 4.3.6 with Erlang 29.1.1" in text
    assert "upstream supports Erlang 29 only from 4.3.7 and 4.4.0" in text


@pytest.mark.parametrize("name", [n for n in ACCEPTED if not n.startswith("forky_")])
def test_no_warning_inside_the_matrix(outcomes, name):
    _, output = outcomes[name]
    assert "WARNING: RabbitMQ" not in output


def test_every_series_has_rows_in_order_and_in_the_upgrade_order():
    data = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    matrix = data["_rabbitmq_erlang_compat"]
    order = data["_rabbitmq_series_order"]
    assert list(matrix) == order
    for series, rows in matrix.items():
        froms = [tuple(int(p) for p in row["from"].split(".")) for row in rows]
        assert froms == sorted(froms), series
        assert all(row["from"].startswith(series + ".") for row in rows), series
    for exception in data["_rabbitmq_erlang_compat_exceptions"]:
        assert exception["reason"].strip()
