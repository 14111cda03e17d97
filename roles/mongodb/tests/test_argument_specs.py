"""The role refuses bad input before it touches a host.

Every case runs the role's `assert` entry point (tasks_from: assert.yml) on
localhost: Ansible first validates the variables against
meta/argument_specs.yml (the same options as `main`), then assert.yml checks
what the spec cannot express. Each case is one play of a single
ansible-playbook run; its outcome (OK, or the failure message) is written
to a file the test reads.
"""

from __future__ import annotations

import pathlib

import pytest

VALID = {
    "mongodb_admin_password": "unit-test-admin",
    "mongodb_app_password": "unit-test-app",
    "mongodb_monitor_password": "unit-test-monitor",
}

CASES = {
    "valid": ({}, None),
    "valid_replset": (
        {
            "mongodb_replset_enabled": True,
            "mongodb_replset_keyfile_content": "c2VjcmV0LWtleWZpbGUtZm9yLXVuaXQtdGVzdHM=",
            "mongodb_replset_members": ["a:27017", "b:27017", "c:27017"],
            "mongodb_replset_primary": "a",
        },
        None,
    ),
    "valid_directory": (
        {"mongodb_install_source": "directory", "mongodb_deb_directory": "/srv/debs"},
        None,
    ),
    "missing_admin_password": (
        {"mongodb_admin_password": ""},
        "Missing secret(s): mongodb_admin_password.",
    ),
    "missing_all_passwords": (
        {"mongodb_admin_password": "", "mongodb_app_password": "", "mongodb_monitor_password": ""},
        "Missing secret(s): mongodb_admin_password, mongodb_app_password, mongodb_monitor_password.",
    ),
    "monitor_password_not_needed_when_disabled": (
        {"mongodb_monitor_enabled": False, "mongodb_monitor_password": ""},
        None,
    ),
    "port_not_a_number": (
        {"mongodb_port": "twenty-seven"},
        "argument 'mongodb_port' is of type str and we were unable to convert to int",
    ),
    "port_out_of_range": (
        {"mongodb_port": 70000},
        "mongodb_port must be between 1 and 65535 (it is 70000)",
    ),
    "replset_without_keyfile": (
        {"mongodb_replset_enabled": True, "mongodb_replset_members": ["a:1", "b:1", "c:1"]},
        "mongodb_replset_enabled needs mongodb_replset_keyfile_content",
    ),
    "replset_with_two_members": (
        {
            "mongodb_replset_enabled": True,
            "mongodb_replset_keyfile_content": "c2VjcmV0LWtleWZpbGU=",
            "mongodb_replset_members": ["a:1", "b:1"],
        },
        "an odd number (at least 3) of mongodb_replset_members",
    ),
    "bad_series": (
        {"mongodb_series": "9.9"},
        "value of mongodb_series must be one of: 7.0, 8.0, got: 9.9",
    ),
    "version_outside_series": (
        {"mongodb_series": "8.0", "mongodb_version": "7.0.26"},
        "mongodb_version 7.0.26 is not a 8.0.x release",
    ),
    "bad_install_source": (
        {"mongodb_install_source": "tarball"},
        "value of mongodb_install_source must be one of: repository, directory, got: tarball",
    ),
    "directory_without_directory": (
        {"mongodb_install_source": "directory"},
        'mongodb_install_source is "directory" but mongodb_deb_directory is empty.',
    ),
    "bad_profiling_mode": (
        {"mongodb_profiling_mode": "verbose"},
        "value of mongodb_profiling_mode must be one of",
    ),
    "config_extra_overlaps": (
        {"mongodb_config_extra": {"net": {"port": 1}, "setParameter": {"x": 1}}},
        "mongodb_config_extra may not set net",
    ),
    "app_database_admin": (
        {"mongodb_app_database": "admin"},
        "mongodb_app_database may not be admin, local or config",
    ),
    # The controller running the tests is Debian 12 ("bookworm"): pretend
    # MongoDB published the series for another suite only.
    "unsupported_suite": (
        {"mongodb_repo_supported_suites": {"8.0": ["noble"]}},
        "MongoDB publishes no 8.0 server packages for Debian bookworm (it does for: noble)",
    ),
    "previous_admin_password_accepted": (
        {"mongodb_admin_password_previous": "unit-test-old-admin"},
        None,
    ),
    "previous_admin_password_same_as_new": (
        {"mongodb_admin_password_previous": "unit-test-admin"},
        "mongodb_admin_password_previous is the same as mongodb_admin_password.",
    ),
    "stepdown_not_longer_than_catch_up": (
        {"mongodb_restart_stepdown_seconds": 10, "mongodb_restart_catch_up_seconds": 10},
        "mongodb_restart_stepdown_seconds (10) greater than mongodb_restart_catch_up_seconds (10)",
    ),
    "restart_timeout_too_short": (
        {"mongodb_restart_timeout": 1},
        "mongodb_restart_timeout must be at least 10 s",
    ),
    "unsupported_suite_with_explicit_suite": (
        {"mongodb_repo_supported_suites": {"8.0": ["noble"]}, "mongodb_repo_suite": "bookworm"},
        None,
    ),
}


@pytest.fixture(scope="module")
def outcomes(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("outcomes")
    plays = [{
        "name": "Gather the controller's facts once",
        "hosts": "localhost",
        "gather_facts": True,
        "gather_subset": ["min"],
        "tasks": [],
    }]
    for name, (overrides, _) in CASES.items():
        plays.append({
            "name": name,
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {**VALID, **overrides},
            "tasks": [{
                "block": [
                    {"ansible.builtin.include_role": {"name": "mongodb", "tasks_from": "assert"}},
                    {"ansible.builtin.copy": {"content": "OK", "dest": str(out / name), "mode": "0644"}},
                ],
                "rescue": [
                    {"ansible.builtin.copy": {
                        "content": "{{ ansible_failed_result.msg }}",
                        "dest": str(out / name), "mode": "0644"}},
                ],
            }],
        })
    proc = run_playbook(plays, "argspecs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: (out / name).read_text() for name in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_case(outcomes, case):
    expected = CASES[case][1]
    outcome = outcomes[case]
    if expected is None:
        assert outcome == "OK"
    else:
        assert outcome != "OK", f"{case} was accepted"
        assert expected in " ".join(outcome.split()), outcome


def test_every_default_is_documented_in_the_spec():
    import yaml

    role = pathlib.Path(__file__).resolve().parents[1]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(defaults) <= set(options), set(defaults) - set(options)
    # The rest are secrets without a default: required, or required with an
    # option (checked by assert.yml); never logged. A rotation's previous
    # password is the one optional secret.
    optional_secrets = {"mongodb_admin_password_previous"}
    for name in optional_secrets:
        assert options[name].get("no_log") and "default" not in options[name], name
        assert not options[name].get("required"), name
    for name in set(options) - set(defaults) - optional_secrets:
        assert options[name].get("no_log") and "default" not in options[name], name
        assert options[name].get("required") or "Required when" in str(options[name]["description"]) \
            or "Required with" in str(options[name]["description"]), name
    assert spec["argument_specs"]["assert"]["options"] == options
