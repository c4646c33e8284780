"""CPython 3.14 from Debian sid, for the in-process agent's interpreter matrix
(tests/workload/test_agent_versions.py): pyenv here stops at 3.13, and no other 3.14 build is reachable.

- Verified by apt itself, through a private configuration (APT_CONFIG; its own sources list naming sid, signed by
  Debian's archive keyring; its own lists, cache and an empty dpkg status; the system's /etc/apt is neither read nor
  written): `apt-get update` checks InRelease's signature, `apt-get download` checks each .deb against the SHA256 of
  the signed Packages index.
- Not pinned: sid removes old versions from its pool, so the versions are those its index names now, resolved by
  apt for python3.14-minimal and libpython3.14-stdlib with their dependencies (recommends left out). The extracted
  tree is cached by that (package, version) list: an unchanged sid downloads nothing, a changed one gives a new
  tree (the older is removed), and with no network the last index and its tree serve.
- Run without a chroot, through sid's own dynamic loader (sid's python needs sid's glibc, newer than the host's):
  `<tree>/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path <tree's lib dirs> <tree>/usr/bin/python3.14`
  with PYTHONHOME=<tree>/usr, in a wrapper script beside the tree. A process that this Python starts from
  sys.executable gets the host's loader and fails: run nothing that re-executes itself under it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .build import cache_root, log
from .images import DEBIAN_MIRROR

VERSION = "3.14"
PACKAGES = (f"python{VERSION}-minimal", f"libpython{VERSION}-stdlib")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
CACHE = cache_root() / "debian-sid-python"
TRIPLET = "x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"
REFRESH = 24 * 3600  # sid's index is read again once a day
# The Debian mirror reached here serves a snapshot whose Valid-Until (a week after its Date) can have passed (on
# 2026-12-06: dated 2026-10-30, valid until 11-06): apt takes it as valid for a year after its Date instead, its
# signature checked all the same.
MIN_VALID = 365 * 24 * 3600
PROBE = "import sys, ssl, sqlite3, ctypes, zlib, json, hashlib; print(sys.prefix); print(sys.version.split()[0])"


def python_command() -> list[str]:
    """The argv prefix that runs CPython 3.14 from Debian sid: fetched, verified and extracted on first use."""
    return [str(ensure())]


def ensure() -> Path:
    """The wrapper script running sid's current python3.14 (its tree built when sid's versions changed)."""
    if platform.machine() != "x86_64":
        raise RuntimeError(f"python{VERSION} from Debian sid: amd64 only, this machine is {platform.machine()}")
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    missing += [] if KEYRING.exists() else [str(KEYRING)]
    if missing:
        raise RuntimeError(f"python{VERSION} from Debian sid needs {', '.join(missing)} (Debian's apt, dpkg and "
                           "debian-archive-keyring)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refresh_index()
        versions = resolve()
        listing = "".join(f"{package}={version}\n" for package, version in versions)
        key = hashlib.sha256(listing.encode()).hexdigest()[:12]
        main = dict(versions)[PACKAGES[0]].replace(":", "_")  # no ':' in --library-path's directories
        home = CACHE / "trees" / f"python{VERSION}_{main}-{key}"
        if not (home / "packages").exists():  # written last: a tree without it is unfinished
            build_tree(home, versions)
            (home / "packages").write_text(listing)
            for old in (CACHE / "trees").iterdir():
                if old != home:
                    shutil.rmtree(old, ignore_errors=True)
        return home / f"python{VERSION}"


def apt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", "--quiet", *args], cwd=cwd, env={**os.environ, "APT_CONFIG": str(config())},
                          capture_output=True, text=True, timeout=900)


def config() -> Path:
    """The private apt configuration: every directory apt reads or writes is under CACHE/apt."""
    base = CACHE / "apt"
    for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "etc/trusted.gpg.d",
                "state/lists/partial", "cache/archives/partial", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "state/status").touch()  # nothing installed: apt resolves every dependency from sid
    (base / "etc/sources.list").write_text(f"deb [arch=amd64 signed-by={KEYRING}] {DEBIAN_MIRROR} sid main\n")
    # No binary caches of the index (100 MB): apt reads the index only when it changed (resolve()).
    settings = {"Dir::Etc": base / "etc", "Dir::State": base / "state", "Dir::State::status": base / "state/status",
                "Dir::Cache": base / "cache", "Dir::Cache::pkgcache": "", "Dir::Cache::srcpkgcache": "",
                "Dir::Log": base / "log", "APT::Architecture": "amd64",
                "Acquire::Languages": "none", "Acquire::Retries": 3, "Acquire::Min-ValidTime": MIN_VALID,
                "APT::Install-Recommends": "false", "APT::Sandbox::User": "root"}
    path = base / "apt.conf"  # apt reads this instead of /etc/apt/apt.conf, and Dir::Etc's (empty) parts
    path.write_text("".join(f'{name} "{value}";\n' for name, value in settings.items())
                    + 'APT::Architectures { "amd64"; };\n')
    return path


def refresh_index() -> None:
    """sid's InRelease and Packages, fetched and verified by apt once a day; the last ones serve when it fails."""
    stamp = CACHE / "apt" / "updated"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < REFRESH:
        return
    done = apt("update", "--error-on=any")
    if done.returncode == 0:
        stamp.touch()
        return
    if any((CACHE / "apt/state/lists").glob("*_Packages")):
        log(f"python{VERSION}: Debian sid's index not refreshed, the last one serves: {done.stderr.strip()}")
        return
    raise RuntimeError(f"apt-get update of Debian sid from {DEBIAN_MIRROR} failed:\n{done.stdout}{done.stderr}")


def resolve() -> list[tuple[str, str]]:
    """(package, version) of python3.14 and everything it depends on, as sid's index names them now (apt's answer
    is kept beside the signed InRelease it came from, so an unchanged index is not read again)."""
    release = next((CACHE / "apt/state/lists").glob("*_InRelease"))
    digest = hashlib.sha256(release.read_bytes() + " ".join(PACKAGES).encode()).hexdigest()
    answer = CACHE / "apt" / "resolved"
    if answer.exists() and answer.read_text().startswith(digest + "\n"):
        return [tuple(line.split("=", 1)) for line in answer.read_text().split()[1:]]
    done = apt("install", "--simulate", *PACKAGES)
    found = sorted(re.findall(r"^Inst (\S+) \((\S+) ", done.stdout, re.MULTILINE))
    if done.returncode or PACKAGES[0] not in dict(found):
        raise RuntimeError(f"Debian sid's index has no installable {' '.join(PACKAGES)}:\n{done.stdout}{done.stderr}")
    answer.write_text(digest + "\n" + "".join(f"{package}={version}\n" for package, version in found))
    return found


def build_tree(home: Path, versions: list[tuple[str, str]]) -> None:
    """Download the packages (apt checks each against the signed index), extract them into home/tree, write the
    wrapper home/python3.14 and check that it runs with its standard library's C extensions."""
    shutil.rmtree(home, ignore_errors=True)
    debs, tree = home / "debs", home / "tree"
    debs.mkdir(parents=True)
    started = time.monotonic()
    done = apt("download", *(f"{package}={version}" for package, version in versions), cwd=debs)
    if done.returncode:
        raise RuntimeError(f"apt-get download from Debian sid failed:\n{done.stdout}{done.stderr}")
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=300)
    shutil.rmtree(debs)
    for link in [p for p in tree.rglob("*") if p.is_symlink() and os.readlink(p).startswith("/")]:
        # Absolute links (sitecustomize.py -> /etc/python3.14/...) point into the tree, as under a chroot.
        target = tree / os.readlink(link).lstrip("/")
        link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))
    libs = [tree / d / TRIPLET for d in ("usr/lib", "lib") if (tree / d / TRIPLET).is_dir()]
    loader = next((d / LOADER for d in libs if (d / LOADER).exists()), None)
    if loader is None:
        raise RuntimeError(f"no {LOADER} in {' '.join(map(str, libs))}")
    wrapper = home / f"python{VERSION}"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"# CPython {VERSION} of Debian sid ({', '.join(f'{p} {v}' for p, v in versions if 'python' in p)}),\n"
        "# run through sid's own dynamic loader and libraries (localcluster.sidpython).\n"
        f"export PYTHONHOME={shlex.quote(str(tree / 'usr'))}\n"
        f"exec {shlex.quote(str(loader))} --library-path {shlex.quote(':'.join(map(str, libs)))} "
        f"{shlex.quote(str(tree / 'usr/bin' / f'python{VERSION}'))} \"$@\"\n")
    wrapper.chmod(0o755)
    probe = subprocess.run([str(wrapper), "-c", PROBE], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                           capture_output=True, text=True, timeout=120)
    lines = probe.stdout.split()
    if probe.returncode or lines[:1] != [str(tree / "usr")] or not lines[1].startswith(VERSION + "."):
        raise RuntimeError(f"{wrapper} does not run as CPython {VERSION} with prefix {tree / 'usr'}: "
                           f"{probe.stdout}{probe.stderr}")
    log(f"python{VERSION} {lines[1]} from Debian sid: {len(versions)} packages in {time.monotonic() - started:.0f} s")
