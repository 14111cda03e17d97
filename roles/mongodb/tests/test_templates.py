"""The role's templates, rendered by Ansible with the role's own defaults and
vars plus a given installed version, are exactly what mongod and systemd
should get for that version.

mongod.conf is compared, as parsed YAML, to the whole expected document: an
option that should not be there (storage.journal on >= 6.1) fails the test
as surely as a missing one.
"""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

ROLE = pathlib.Path(__file__).resolve().parents[1]

BASE_CONF = {
    "storage": {"dbPath": "/var/lib/mongodb"},
    "systemLog": {
        "destination": "file",
        "path": "/var/log/mongodb/mongod.log",
        "logAppend": True,
        "logRotate": "reopen",
    },
    "net": {"port": 27017, "bindIp": "127.0.0.1"},
    "processManagement": {"timeZoneInfo": "/usr/share/zoneinfo"},
    "security": {"authorization": "enabled"},
    "operationProfiling": {"mode": "off", "slowOpThresholdMs": 100},
}


def conf(**changes):
    document = copy.deepcopy(BASE_CONF)
    for path, value in changes.items():
        node = document
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return document


RS_KEY = "c2VjcmV0LWtleWZpbGUtZm9yLXVuaXQtdGVzdHM="

CASES = {
    # Every supported series, with the role's defaults.
    "8.0-defaults": ({"_mongodb_installed_version": "8.0.17"}, conf()),
    "7.0-defaults": ({"_mongodb_installed_version": "7.0.26", "mongodb_series": "7.0"}, conf()),
    # "No journaling" (an old speed tip): MongoDB >= 6.1 has no such option.
    "8.0-no-journal": (
        {"_mongodb_installed_version": "8.0.17", "mongodb_journal_enabled": False}, conf()),
    "7.0-no-journal": (
        {"_mongodb_installed_version": "7.0.26", "mongodb_series": "7.0",
         "mongodb_journal_enabled": False}, conf()),
    # Gating is on the installed version: a 6.0 server still had the option.
    "6.0-no-journal": (
        {"_mongodb_installed_version": "6.0.20", "mongodb_journal_enabled": False},
        conf(storage__journal={"enabled": False})),
    # Nothing installed yet: the requested version decides.
    "8.0-requested-only": ({"mongodb_version": "8.0.17"}, conf()),
    "8.0-everything": (
        {
            "_mongodb_installed_version": "8.0.17",
            "mongodb_port": 27018,
            "mongodb_bind_ip": ["127.0.0.1", "10.0.0.5", "127.0.0.1"],
            "mongodb_storage_dbpath": "/srv/mongodb",
            "mongodb_log_path": "/srv/log/mongod.log",
            "mongodb_wiredtiger_cache_size_gb": 1.5,
            "mongodb_profiling_mode": "slowOp",
            "mongodb_slow_op_threshold_ms": 250,
            "mongodb_replset_enabled": True,
            "mongodb_replset_name": "celery",
            "mongodb_replset_keyfile_content": RS_KEY,
            "mongodb_config_extra": {"setParameter": {"diagnosticDataCollectionEnabled": False}},
        },
        {
            "storage": {"dbPath": "/srv/mongodb",
                        "wiredTiger": {"engineConfig": {"cacheSizeGB": 1.5}}},
            "systemLog": {"destination": "file", "path": "/srv/log/mongod.log",
                          "logAppend": True, "logRotate": "reopen"},
            "net": {"port": 27018, "bindIp": "127.0.0.1,10.0.0.5"},
            "processManagement": {"timeZoneInfo": "/usr/share/zoneinfo"},
            "security": {"authorization": "enabled", "keyFile": "/etc/mongod.keyfile"},
            "operationProfiling": {"mode": "slowOp", "slowOpThresholdMs": 250},
            "replication": {"replSetName": "celery"},
            "setParameter": {"diagnosticDataCollectionEnabled": False},
        },
    ),
}

TEMPLATES = {
    "mongod.conf": "mongod.conf.j2",
    "hugepages.service": "mongodb-hugepages.service.j2",
    "override.conf": "mongod-override.conf.j2",
    "logrotate": "logrotate.j2",
}


@pytest.fixture(scope="module")
def rendered(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    tasks = []
    for case, (case_vars, _) in CASES.items():
        for name, template in TEMPLATES.items():
            tasks.append({
                "name": f"{case} {name}",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / template),
                    "dest": str(out / f"{case}.{name}"),
                    "mode": "0644",
                },
                "vars": case_vars,
            })
    plays = [{
        "name": "Render the role's templates",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
        "vars": {"ansible_play_hosts_all": ["localhost"]},
        "tasks": tasks,
    }]
    proc = run_playbook(plays, "templates")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lambda case, name: (out / f"{case}.{name}").read_text()


@pytest.mark.parametrize("case", list(CASES))
def test_mongod_conf_is_exactly_the_intended_yaml(rendered, case):
    text = rendered(case, "mongod.conf")
    assert text.splitlines()[0].startswith("# "), "no managed-by line"
    assert yaml.safe_load(text) == CASES[case][1]


@pytest.mark.parametrize("case", ["8.0-no-journal", "7.0-no-journal"])
def test_journal_off_is_a_documented_no_op(rendered, case):
    text = rendered(case, "mongod.conf")
    assert "journal" not in yaml.safe_load(text)["storage"]
    assert "always journals" in text and "ignored" in text


def test_journal_comment_only_when_asked(rendered):
    assert "always journals" not in rendered("8.0-defaults", "mongod.conf")


def test_role_warns_about_journal_off():
    """configure.yml warns (a debug task) under the same condition."""
    tasks = yaml.safe_load((ROLE / "tasks/configure.yml").read_text())
    warning = next(t for t in tasks if t["name"] == "Warn that journaling cannot be turned off")
    assert "WARNING" in warning["ansible.builtin.debug"]["msg"]
    assert warning["when"] == [
        "not (mongodb_journal_enabled | bool)",
        "_mongodb_effective_version is version('6.1', '>=')",
    ]


@pytest.mark.parametrize(
    ("case", "mode"),
    [("8.0-defaults", "always"), ("8.0-requested-only", "always"), ("7.0-defaults", "never")],
)
def test_hugepages_follow_the_production_notes(rendered, case, mode):
    unit = rendered(case, "hugepages.service")
    assert f"echo {mode} > /sys/kernel/mm/transparent_hugepage/enabled" in unit
    assert "Before=mongod.service" in unit and "Type=oneshot" in unit
    if mode == "always":
        assert "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag" in unit
        assert "echo 0 > /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none" in unit
    else:
        assert "echo never > /sys/kernel/mm/transparent_hugepage/defrag" in unit
        assert "max_ptes_none" not in unit


@pytest.mark.parametrize(("case", "rseq"), [("8.0-defaults", True), ("7.0-defaults", False)])
def test_service_drop_in(rendered, case, rseq):
    text = rendered(case, "override.conf")
    assert "LimitNOFILE=64000" in text and "LimitNPROC=64000" in text
    assert ("Environment=GLIBC_TUNABLES=glibc.pthread.rseq=0" in text) is rseq
    assert "After=mongodb-hugepages.service" in text


def test_logrotate_reopens(rendered):
    text = rendered("8.0-everything", "logrotate")
    assert "/srv/log/mongod.log {" in text
    assert "daily" in text and "rotate 14" in text
    assert "create 0640 mongodb mongodb" in text
    assert "systemctl kill --signal=SIGUSR1 --kill-whom=main mongod.service" in text
