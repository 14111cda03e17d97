"""playbooks/smoke.yml (what `harness/cluster up` runs after converging) passes on this
cluster with the scenario's own inventory."""

import os
import pathlib
import subprocess


def test_smoke_playbook_passes():
    inventory = pathlib.Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    project = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(project / "playbooks" / "smoke.yml")],
        capture_output=True, text=True, cwd=project, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "every pool answered through HAProxy" in proc.stdout
    assert "health answered through HAProxy" in proc.stdout
