"""feature_flags.yml enables stable feature flags once, only when one is
disabled and every node runs the same version, and reports deprecated
features in use without failing.

No broker: `rabbitmqctl` and `rabbitmq-diagnostics` are small fake scripts
put first on PATH; they answer like the real commands and log their calls.
"""

from __future__ import annotations

import os
import pathlib
import re
import textwrap

import pytest

FLAGS_DISABLED = (
    '[{"name":"quorum_queue","state":"enabled","stability":"required"},'
    '{"name":"stream_filtering","state":"disabled","stability":"stable"},'
    '{"name":"khepri_db","state":"disabled","stability":"experimental"}]'
)
FLAGS_ENABLED = FLAGS_DISABLED.replace('"stream_filtering","state":"disabled"', '"stream_filtering","state":"enabled"')


def fake_tools(bindir: pathlib.Path) -> None:
    bindir.mkdir()
    (bindir / "rabbitmqctl").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "rabbitmqctl $*" >> "{bindir}/calls"
        case "$*" in
          *list_feature_flags*)
            if [ -f "{bindir}/enabled" ]; then echo '{FLAGS_ENABLED}'; else echo '{FLAGS_DISABLED}'; fi ;;
          *"enable_feature_flag all"*) touch "{bindir}/enabled" ;;
        esac
        """))
    (bindir / "rabbitmq-diagnostics").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "rabbitmq-diagnostics $*" >> "{bindir}/calls"
        echo "Cluster reported deprecated features in use" >&2
        printf 'transient_nonexcl_queues\\nglobal_qos\\n'
        exit 69
        """))
    for tool in bindir.iterdir():
        tool.chmod(0o755)


def play(name: str, version: str, **extra) -> dict:
    return {
        "name": f"case {name}",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": extra,
        "tasks": [
            {"ansible.builtin.set_fact": {"rabbitmq_version": version}},
            {"ansible.builtin.include_role": {"name": "rabbitmq", "tasks_from": "feature_flags"}},
        ],
    }


@pytest.fixture(scope="module")
def run(run_playbook, tmp_path_factory):
    base = tmp_path_factory.mktemp("feature_flags")
    bindir = base / "bin"
    fake_tools(bindir)
    plays = [
        play("first", "4.0.5"),
        play("second", "4.0.5"),
        play("old_broker", "3.10.8"),
        # A second broker of the group that is not in the play (--limit):
        # the versions cannot be compared, so nothing is enabled.
        {"name": "Add a broker outside the play", "hosts": "localhost", "gather_facts": False,
         "tasks": [
             {"ansible.builtin.add_host": {"name": "localhost", "groups": ["brokers"]}},
             {"ansible.builtin.add_host": {"name": "other-broker", "groups": ["brokers"],
                                           "rabbitmq_version": "4.0.4"}},
         ]},
        play("mixed", "4.0.5", rabbitmq_cluster_group="brokers"),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        proc = run_playbook(plays, "ff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = dict(re.findall(r"PLAY \[case (\S+)\] \*+\n(.*?)(?=\nPLAY |\Z)", proc.stdout, re.S))
    calls = (bindir / "calls").read_text().splitlines()
    return sections, calls


def test_stable_flags_enabled_once_and_only_when_one_is_disabled(run):
    sections, calls = run
    assert calls.count("rabbitmqctl enable_feature_flag all") == 1
    assert re.search(r"changed: \[localhost\]", sections["first"].split("Enable all stable feature flags")[1]
                     .split("TASK [")[0])
    # The second converge finds every stable flag enabled: nothing to change.
    assert "Enable all stable feature flags" in sections["second"]
    assert not re.search(r"^changed:", sections["second"], re.M), sections["second"]


def test_deprecated_features_named_in_a_warning_without_failing(run):
    sections, _ = run
    text = " ".join(sections["first"].split())
    assert "WARNING: the cluster of localhost (RabbitMQ 4.0.5) uses deprecated features: " \
           "transient_nonexcl_queues, global_qos." in text
    assert "https://www.rabbitmq.com/docs/deprecated-features" in text


def test_no_deprecated_check_before_3_13(run):
    sections, calls = run
    assert "uses deprecated features" not in sections["old_broker"]
    diagnostics = [c for c in calls if c.startswith("rabbitmq-diagnostics")]
    # first, second, mixed: three runs on 4.0.5; none on 3.10.8.
    assert len(diagnostics) == 3
    assert all(c == "rabbitmq-diagnostics -q check_if_any_deprecated_features_are_used" for c in diagnostics)


def test_flags_wait_while_a_broker_of_the_group_is_outside_the_play(run):
    sections, calls = run
    text = " ".join(sections["mixed"].split())
    assert "Stable feature flags are not enabled in this run" in text
    assert '"other-broker": "4.0.4"' in text
    assert calls.count("rabbitmqctl -q list_feature_flags name state stability --formatter json") == 3
