#!/usr/bin/python
# -*- coding: utf-8 -*-
# Managed by celery-stack (roles/celery_worker).
"""Build a wheelhouse on the controller, once per target Python."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_worker_wheelhouse
short_description: Build offline wheelhouses for Python applications on the controller
description:
  - Builds the application (a local source tree) into a wheel with the
    controller's Python, then downloads every dependency as binary wheels
    for each target (Python version, machine, glibc), so that the target
    installs with C(pip install --no-index).
  - Results are cached under I(cache_dir) by a content hash of the source,
    the constraints and the target: unchanged input is never rebuilt.
  - Each target gets a tar archive holding the wheels and C(install.txt),
    the requirements to install from them.
options:
  source:
    description:
      - Where the code comes from. C(type) is one of C(path) (a source tree
        to build), C(wheel) (a prebuilt wheel of the application),
        C(wheelhouse) (a directory of wheels used as is; C(package) names
        what to install), C(requirements) (a requirements file, hashes
        honoured) or C(packages) (a list of requirement strings).
    type: dict
    required: true
  constraints:
    description: A pip constraints file applied when resolving dependencies.
    type: path
  targets:
    description:
      - Target interpreters, each a dict with C(python) ("3.13"),
        C(machine) ("x86_64") and C(glibc) ("2.41").
    type: list
    elements: dict
    required: true
  extra:
    description:
      - Requirement strings installed beside the application (e.g. C(flower==2.2.0)),
        resolved together with it.
    type: list
    elements: str
    default: []
  cache_dir:
    description: Directory on the controller holding the cached wheelhouses.
    type: path
    required: true
  python:
    description: The controller's Python used to run pip.
    type: path
    required: true
  keep:
    description: Cached wheelhouses kept per cache directory (least recently used are removed).
    type: int
    default: 10
author: celery-stack
"""

RETURN = r"""
targets:
  description: Per target name ("cp313-x86_64-glibc2.41"), the release id and archive path.
  type: dict
  returned: always
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

FORMAT = "1"  # bump to invalidate every cached wheelhouse
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox",
             ".nox", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache",
             "node_modules"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def tree_digest(path: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
        for name in sorted(files):
            if name.endswith(SKIP_SUFFIXES):
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            digest.update(rel.encode() + b"\0")
            if os.path.islink(full):
                digest.update(b"L" + os.readlink(full).encode())
            else:
                with open(full, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _ignore(_directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP_DIRS or n.endswith(SKIP_SUFFIXES)}


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def platforms_for(machine: str, glibc: str) -> list[str]:
    """manylinux tags a glibc-based target accepts, newest first."""
    try:
        major, minor = (int(part) for part in glibc.split(".")[:2])
    except ValueError:
        major, minor = 2, 17
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for m, name in sorted(legacy.items(), reverse=True) if m <= minor]
    tags.append(f"linux_{machine}")
    return tags


class Builder:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.python = self.params["python"]
        self.cache = self.params["cache_dir"]
        self.log: list[str] = []

    def run(self, args: list[str], check: bool = True):
        self.log.append(" ".join(args))
        proc = subprocess.run(args, capture_output=True, text=True)
        if not check:
            return proc
        if proc.returncode != 0:
            self.module.fail_json(
                msg=f"command failed ({proc.returncode}): {' '.join(args)}",
                stdout=proc.stdout[-4000:], stderr=proc.stderr[-4000:], commands=self.log)
        return proc.stdout

    def pip(self, *args: str, check: bool = True):
        return self.run([self.python, "-m", "pip", "--disable-pip-version-check",
                         "--no-input", *args], check=check)

    # --- inputs -----------------------------------------------------------
    def source_digest(self) -> str:
        source = self.params["source"]
        kind = source.get("type")
        path = source.get("path")
        digest = hashlib.sha256(f"{FORMAT}:{kind}:".encode())
        if kind in ("path", "wheelhouse"):
            if not path or not os.path.isdir(path):
                self.module.fail_json(msg=f"source.path {path!r} is not a directory on the controller")
            digest.update(tree_digest(path).encode())
        elif kind in ("wheel", "requirements"):
            if not path or not os.path.isfile(path):
                self.module.fail_json(msg=f"source.path {path!r} is not a file on the controller")
            digest.update(os.path.basename(path).encode() + b":" + file_digest(path).encode())
        elif kind == "packages":
            packages = source.get("packages") or []
            if not packages:
                self.module.fail_json(msg="source.packages is empty")
            digest.update(json.dumps(sorted(packages)).encode())
        else:
            self.module.fail_json(msg=f"unknown source type {kind!r}")
        if kind == "wheelhouse":
            digest.update(str(source.get("package", "")).encode())
        digest.update(("extra:" + json.dumps(sorted(self.params["extra"]))).encode())
        constraints = self.params.get("constraints")
        if constraints:
            if not os.path.isfile(constraints):
                self.module.fail_json(msg=f"constraints file {constraints!r} not found")
            digest.update(b"constraints:" + file_digest(constraints).encode())
        return digest.hexdigest()

    # --- building ---------------------------------------------------------
    def app_wheel(self, work: str) -> str:
        """The application's wheel: built from source or given."""
        source = self.params["source"]
        if source["type"] == "wheel":
            return source["path"]
        out = os.path.join(work, "app")
        os.makedirs(out)
        # Build from a clean copy: no stale build/ or *.egg-info of the tree
        # leaks into the wheel, and the user's tree is never written to.
        tree = os.path.join(work, "src")
        shutil.copytree(source["path"], tree, symlinks=True, ignore=_ignore)
        self.pip("wheel", "--no-deps", "--wheel-dir", out, tree)
        wheels = [w for w in os.listdir(out) if w.endswith(".whl")]
        if len(wheels) != 1:
            self.module.fail_json(msg=f"building {source['path']} gave {wheels}", commands=self.log)
        return os.path.join(out, wheels[0])

    def check_pure(self, wheel: str) -> None:
        match = WHEEL_RE.match(os.path.basename(wheel))
        if not match or match.group("abi") != "none" or match.group("plat") != "any":
            self.module.fail_json(
                msg=(f"the application wheel {os.path.basename(wheel)} is not pure Python: "
                     "it cannot serve targets with another Python version; build it per "
                     "target and use source type 'wheelhouse'"))

    def download(self, target: dict, dest: str, requirements: list[str],
                 find_links: list[str], check: bool = True):
        args = ["download", "--only-binary=:all:", "--dest", dest,
                "--python-version", target["python"], "--implementation", "cp"]
        for platform in platforms_for(target["machine"], target["glibc"]):
            args += ["--platform", platform]
        for link in find_links:
            args += ["--find-links", link]
        if self.params.get("constraints"):
            args += ["--constraint", self.params["constraints"]]
        return self.pip(*args, *requirements, check=check)

    def controller_wheels(self, requirements: list[str], shared: dict) -> str:
        """Wheels built with the controller's Python, for dependencies that
        PyPI offers only as source: pure-Python ones then resolve for any
        target through --find-links."""
        if "controller" not in shared:
            out = tempfile.mkdtemp(prefix=".controller-wheels.", dir=self.cache)
            args = ["wheel", "--wheel-dir", out]
            if self.params.get("constraints"):
                args += ["--constraint", self.params["constraints"]]
            self.pip(*args, *requirements)
            shared["controller"] = out
        return shared["controller"]

    def build_target(self, target: dict, key: str, shared: dict) -> str:
        source = self.params["source"]
        kind = source["type"]
        final = os.path.join(self.cache, key)
        work = tempfile.mkdtemp(prefix=f".{key}.", dir=self.cache)
        wheelhouse = os.path.join(work, "wheelhouse")
        os.makedirs(wheelhouse)
        if kind == "wheelhouse":
            for name in os.listdir(source["path"]):
                full = os.path.join(source["path"], name)
                if os.path.isfile(full):
                    shutil.copy2(full, wheelhouse)
            install = [source["package"]]
        else:
            if kind in ("path", "wheel"):
                if "app" not in shared:
                    shared["app_dir"] = tempfile.mkdtemp(prefix=".app.", dir=self.cache)
                    shared["app"] = self.app_wheel(shared["app_dir"])
                    self.check_pure(shared["app"])
                app = shared["app"]
                shutil.copy2(app, wheelhouse)
                match = WHEEL_RE.match(os.path.basename(app))
                install = [f"{match.group('name')}=={match.group('version')}"]
                requirements = [os.path.join(wheelhouse, os.path.basename(app))]
            elif kind == "requirements":
                shutil.copy2(source["path"], os.path.join(wheelhouse, "requirements.txt"))
                install = ["-r requirements.txt"]
                requirements = ["--requirement", source["path"]]
            else:  # packages
                install = list(source["packages"])
                requirements = list(source["packages"])
            install += list(self.params["extra"])
            requirements += list(self.params["extra"])
            proc = self.download(target, wheelhouse, requirements, [wheelhouse], check=False)
            if proc.returncode != 0:
                # a dependency without a binary wheel: build it here and retry
                local = self.controller_wheels(requirements, shared)
                self.download(target, wheelhouse, requirements, [wheelhouse, local])
        with open(os.path.join(wheelhouse, "install.txt"), "w") as handle:
            handle.write("\n".join(install) + "\n")
        wheels = sorted(n for n in os.listdir(wheelhouse) if n.endswith(".whl"))
        manifest = {
            "id": key, "target": target, "source_type": kind, "install": install,
            "wheels": {n: file_digest(os.path.join(wheelhouse, n)) for n in wheels},
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(os.path.join(wheelhouse, "manifest.json"), "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        archive = os.path.join(work, "wheelhouse.tar")
        with tarfile.open(archive, "w") as tar:
            for name in sorted(os.listdir(wheelhouse)):
                info = tar.gettarinfo(os.path.join(wheelhouse, name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                info.mode = 0o644
                with open(os.path.join(wheelhouse, name), "rb") as handle:
                    tar.addfile(info, handle)
        shutil.rmtree(wheelhouse)
        for extra in os.listdir(work):
            if extra != "wheelhouse.tar":
                shutil.rmtree(os.path.join(work, extra), ignore_errors=True)
        with open(os.path.join(work, "manifest.json"), "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        os.rename(work, final)  # atomic: a cache entry is complete or absent
        return final

    def prune(self, used: set[str]) -> None:
        entries = []
        for name in os.listdir(self.cache):
            full = os.path.join(self.cache, name)
            if name.startswith("."):
                # leftovers of interrupted builds older than a day
                if time.time() - os.path.getmtime(full) > 86400:
                    shutil.rmtree(full, ignore_errors=True)
                continue
            if name not in used and os.path.isdir(full):
                entries.append((os.path.getmtime(full), full))
        entries.sort(reverse=True)
        for _, full in entries[max(self.params["keep"] - len(used), 0):]:
            shutil.rmtree(full, ignore_errors=True)


def target_name(target: dict) -> str:
    return f"cp{target['python'].replace('.', '')}-{target['machine']}-glibc{target['glibc']}"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "dict", "required": True},
            "constraints": {"type": "path"},
            "targets": {"type": "list", "elements": "dict", "required": True},
            "extra": {"type": "list", "elements": "str", "default": []},
            "cache_dir": {"type": "path", "required": True},
            "python": {"type": "path", "required": True},
            "keep": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    builder = Builder(module)
    source = module.params["source"]
    if source.get("type") == "wheelhouse" and not source.get("package"):
        module.fail_json(msg="source type 'wheelhouse' needs 'package': the requirement to install")
    if source.get("type") in ("path", "wheel", "wheelhouse", "requirements") and source.get("path"):
        source["path"] = os.path.abspath(os.path.expanduser(source["path"]))
    os.makedirs(builder.cache, exist_ok=True)
    digest = builder.source_digest()
    results, shared, changed = {}, {}, False
    targets = {target_name(t): t for t in module.params["targets"]}
    for name, target in sorted(targets.items()):
        for field in ("python", "machine", "glibc"):
            if not target.get(field):
                module.fail_json(msg=f"target {target} lacks {field!r}")
        key = hashlib.sha256(f"{digest}:{name}".encode()).hexdigest()[:16]
        final = os.path.join(builder.cache, key)
        if not os.path.isfile(os.path.join(final, "manifest.json")):
            changed = True
            if not module.check_mode:
                builder.build_target(target, key, shared)
        elif not module.check_mode:
            os.utime(final)  # recently used: kept by the pruning
        results[name] = {"id": key, "archive": os.path.join(final, "wheelhouse.tar"),
                         "dir": final}
    for temporary in ("controller", "app_dir"):
        if temporary in shared:
            shutil.rmtree(shared[temporary], ignore_errors=True)
    if not module.check_mode:
        builder.prune({r["id"] for r in results.values()})
    module.exit_json(changed=changed, targets=results, source_digest=digest,
                     commands=builder.log)


if __name__ == "__main__":
    main()
