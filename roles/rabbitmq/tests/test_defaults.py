"""The role's defaults, argument spec and README agree.

Read-only checks of the role's files; they run no playbook.
"""

from __future__ import annotations

import pathlib

import yaml

ROLE = pathlib.Path(__file__).resolve().parents[1]


def test_default_team_pins_are_the_newest_series_and_a_supported_erlang():
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]
    assert defaults["rabbitmq_team_version"] == "4.3.*"
    assert defaults["rabbitmq_team_erlang_version"] == "1:28.*"
    for name in ("rabbitmq_team_version", "rabbitmq_team_erlang_version"):
        assert spec["main"]["options"][name]["default"] == defaults[name]
    readme = (ROLE / "README.md").read_text()
    assert "| `rabbitmq_team_version` | `4.3.*` |" in readme
    assert "| `rabbitmq_team_erlang_version` | `1:28.*` |" in readme


def test_every_default_is_documented_in_the_spec():
    """Every default has a spec entry; the rest of the spec are required secrets."""
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) <= set(options), set(defaults) - set(options)
    assert all(options[name].get("required") for name in set(options) - set(defaults))
