"""
Runs a command the way a systemd unit's sandbox would, where systemd is not PID 1.

    unshare --mount --propagation private -- python3 unitexec.py SPEC.json

(``tests.support.systemd.UnitProcess`` builds that line.) In the new mount namespace,
as root, it applies the mount settings of the unit named in SPEC, then becomes the
unit's user and ``execve``\\ s the command, so the server runs in the same pid:

- ``ProtectSystem=strict``: every mount read-only, but the API file systems
  (/proc, /sys, /dev), as systemd does;
- ``ReadWritePaths=``: those paths writable again (bind-mounted over themselves);
- ``PrivateTmp=yes``: empty /tmp and /var/tmp of its own;
- ``ProtectHome=yes``: /home, /root and /run/user empty and inaccessible;
- ``LimitNOFILE=`` (as far as this machine lets root raise it), ``UMask=``,
  ``WorkingDirectory=``;
- ``User=``/``Group=`` (no supplementary groups) and ``NoNewPrivileges=yes``.

Everything else systemd would add (seccomp filters, capability bounding, namespaces
for devices and kernel tunables, cgroups) is *not* emulated: this shows that the
server runs, writes where it may and nowhere else, as that user; not that the
unit's whole sandbox is right. The namespace is private: nothing here changes the
machine's own mounts. Standard library only, all imported before /root (where the
test's Python may live) is hidden.
"""

from __future__ import annotations

import ctypes
import grp
import json
import os
import pwd
import resource
import subprocess
import sys

PR_SET_NO_NEW_PRIVS = 38
API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")


def _say(message: str) -> None:
    print(f"[unitexec] {message}", file=sys.stderr, flush=True)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mountPoints() -> list[str]:
    points: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and the like escaped as \\ooo.
            raw = line.split()[4]
            point = raw.encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
            if point not in points:
                points.append(point)
    return points


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def protectSystemStrict() -> None:
    for point in _mountPoints():
        if _under(point, API_FILE_SYSTEMS):
            continue
        try:
            _mount("-o", "remount,bind,ro", point)
        except subprocess.CalledProcessError:
            if point == "/":
                raise
            _say(f"could not make {point} read-only; left as it is")


def readWritePaths(paths: list[str]) -> None:
    for path in paths:
        _mount("--bind", path, path)
        _mount("-o", "remount,bind,rw", path)


def privateTmp() -> None:
    for path in ("/tmp", "/var/tmp"):
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", path)


def protectHome() -> None:
    for path in ("/home", "/root", "/run/user"):
        if os.path.isdir(path):
            _mount("-t", "tmpfs", "-o", "ro,mode=000,nosuid,nodev,noexec", "tmpfs", path)


def limitNOFILE(limit: int) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    except ValueError:
        # Raising the hard limit needs CAP_SYS_RESOURCE, which systemd has and a
        # container's root may not: as far as this machine allows.
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        _say(f"LimitNOFILE={limit} is above this machine's hard limit for root ({hard}): using {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def becomeUser(user: str, group: str | None) -> None:
    account = pwd.getpwnam(user)
    gid = account.pw_gid
    if group:
        gid = grp.getgrnam(group).gr_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(account.pw_uid)


def noNewPrivileges() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def main(specPath: str) -> None:
    with open(specPath, encoding="utf-8") as file:
        spec = json.load(file)
    # Paths are resolved before anything is hidden (ProtectHome, PrivateTmp).
    argv: list[str] = spec["argv"]
    environment: dict[str, str] = spec["environment"]
    if spec.get("protectSystem") == "strict":
        protectSystemStrict()
    if spec.get("privateTmp"):
        privateTmp()
    if spec.get("protectHome"):
        protectHome()
    readWritePaths(spec.get("readWritePaths", []))
    if spec.get("limitNOFILE"):
        limitNOFILE(int(spec["limitNOFILE"]))
    if spec.get("umask"):
        os.umask(int(spec["umask"], 8))
    if spec.get("workingDirectory"):
        os.chdir(spec["workingDirectory"])
    if spec.get("user"):
        becomeUser(spec["user"], spec.get("group"))
    if spec.get("noNewPrivileges"):
        noNewPrivileges()
    os.execve(argv[0], argv, environment)


if __name__ == "__main__":
    main(sys.argv[1])
