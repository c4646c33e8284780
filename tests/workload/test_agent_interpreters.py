"""The in-process agent on every CPython it supports, 3.9 to 3.14: the script and checks of test_agent_versions.py
(the agent from the rendered ConfigMap) in each interpreter, with a library set installed for that interpreter
(wheels only, into a directory put on PYTHONPATH after the agent, cached by the interpreter's exact version and the
pinned list). 3.9 to 3.13 are pyenv's builds (in the base image of these machines), installed by their own pip;
3.14 is Debian sid's python3.14 run through sid's own loader (localcluster.sidpython), which ships no pip: the
suite's pip runs under it (`pip --python`). Either way the interpreter that will import the libraries is the one
that picks their wheels and evaluates their markers. An interpreter that cannot be had fails its case."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster import sidpython
from localcluster.publicapps import CACHE
from test_agent_versions import LIBRARIES, run_agent_script

pytestmark = pytest.mark.workload

# Each set on the oldest and the newest CPython it installs on, and one between: the oldest set's SQLAlchemy
# 1.4.54 has no wheel past 3.12, the newest set's SQLAlchemy 2.1 needs 3.11. (3.11 is also the suite's own
# interpreter, on which test_agent_versions.py runs both sets.)
INTERPRETERS = {"3.9": "oldest", "3.10": "oldest", "3.11": "newest", "3.12": "oldest", "3.13": "newest",
                "3.14": "newest"}


def interpreter(version: str) -> tuple[list[str], list[str]]:
    """(argv prefix running CPython `version`, argv prefix running a pip that installs for it)."""
    if version == sidpython.VERSION:
        try:
            python = sidpython.python_command()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            pytest.fail(f"CPython {version} from Debian sid could not be had: {error}")
        return python, [sys.executable, "-m", "pip", "--python", python[0]]
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = sorted((p for p in versions.glob(f"{version}.*") if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)),
                    key=lambda p: int(p.name.rsplit(".", 1)[1]))
    if not builds:
        pytest.fail(f"no CPython {version} under {versions}: the machines' base image has pyenv's 3.9 to 3.13 "
                    f"(`pyenv install {version}` adds it)")
    python = [str(builds[-1] / "bin" / "python")]
    return python, [*python, "-m", "pip"]


def installed(python: list[str], pip: list[str], libraries: str) -> Path:
    """A directory holding the set `libraries` for `python`, installed once by `pip` (wheels only)."""
    exact = subprocess.run([*python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                           timeout=60)
    assert exact.returncode == 0, f"{python} does not run: {exact.stderr}"
    pins = LIBRARIES[libraries]
    key = hashlib.sha256("\n".join(pins).encode() + exact.stdout.encode()).hexdigest()[:12]
    target = CACHE.parent / "venvs" / f"agent-{libraries}-py{exact.stdout.split()[0]}-{key}"
    if not (target / ".installed").exists():
        subprocess.run([*pip, "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore",
                        "--upgrade", "--only-binary=:all:", "--target", str(target), *pins], check=True, timeout=900)
        (target / ".installed").touch()
    return target


@pytest.mark.parametrize("version", [pytest.param(v, id=f"{v}-{s}") for v, s in INTERPRETERS.items()])
def test_the_agent_works_on_every_supported_interpreter(version, tmp_path):
    libraries = INTERPRETERS[version]
    python, pip = interpreter(version)
    result = run_agent_script(python, libraries, tmp_path, path=(str(installed(python, pip, libraries)),))
    assert result["python"].startswith(f"{version}."), result["python"]
    print(f"CPython {result['python']} ({' '.join(python)}), {libraries} libraries: {result['versions']}")
