"""Container processes: cgroup v2 per container, netns + private mount/UTS namespace, log file.

Every container's process tree lives in /sys/fs/cgroup/unified/cogwork/<pod-uid>/<container>,
joined before exec, so `cgroup.kill` reaches grandchildren that called setsid (torchrun's
workers) and nothing survives its pod.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path(os.environ.get("COGWORK_CGROUP_ROOT", "/sys/fs/cgroup/unified/cogwork"))
SH = "/bin/sh"
IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
MOUNT = shutil.which("mount") or "/usr/bin/mount"
UMOUNT = shutil.which("umount") or "/usr/bin/umount"
MKDIR = shutil.which("mkdir") or "/usr/bin/mkdir"
TOUCH = shutil.which("touch") or "/usr/bin/touch"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where a container's mount sources are bound before any target is mounted (a tmpfs of its
# private mount namespace; only the empty directory exists on the host).
STAGE = Path("/run/cogwork-mounts")

# $0 is the cgroup dir: the shell joins it, then becomes (exec) the namespaced command, so the
# pid Popen holds is the container's main process and its exit status is the container's.
JOIN_AND_EXEC = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def pod_cgroup(uid: str) -> Path:
    return CGROUP_ROOT / uid


@dataclass
class Mount:
    src: Path
    dst: str
    read_only: bool = False


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    netns: str
    hostname: str
    cgroup: Path
    log: Path
    script: Path
    workdir: str | None = None
    mounts: list[Mount] = field(default_factory=list)


def _host_path(dst: str, mounts: list[Mount]) -> Path:
    """Where a container path lives on the host: inside the deepest other mount covering it."""
    best: Mount | None = None
    for m in mounts:
        parent = m.dst.rstrip("/")
        if dst.startswith(parent + "/") and (best is None or len(parent) > len(best.dst)):
            best = m
    if best is None:
        return Path(dst)
    return best.src / os.path.relpath(dst, best.dst.rstrip("/"))


def _prepare_mountpoints(mounts: list[Mount]) -> None:
    """Bind mounts need an existing target of the same kind; create it where it will be seen."""
    for m in mounts:
        target = _host_path(m.dst, [o for o in mounts if o is not m])
        if m.src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def keep_visible(mounts: list[Mount], host_paths: list[Path]) -> list[Mount]:
    """Read-only binds of `host_paths` at themselves, for those a mount would hide.

    Our "images" are host directories (a venv, the repository's source): a real runtime never
    shows the host's tree inside a container, so a volume at /tmp (a read-only root
    filesystem's scratch space) could not hide an image's files there; here it would when the
    repository lives under /tmp (a CI clone), so such paths are bound again on top."""
    extra = []
    for path in dict.fromkeys(p.resolve() for p in host_paths):
        if any(path.is_relative_to(m.dst) for m in mounts if m.dst != "/"):
            extra.append(Mount(path, str(path), read_only=True))
    return extra


def render_script(spec: LaunchSpec) -> str:
    lines = ["set -e", f"echo {shlex.quote(spec.hostname[:63])} > /proc/sys/kernel/hostname"]
    # Parents before children so a mount at /a/b is not hidden by a later mount at /a.
    ordered = sorted(spec.mounts, key=lambda m: m.dst.rstrip("/").count("/"))
    if ordered:
        # Every source is bound into the stage first: a mount at /tmp (an emptyDir of a pod
        # with a read-only root filesystem) would otherwise hide the later sources that live
        # under the agent's work dir in /tmp, as a real runtime's host paths never are.
        stage = shlex.quote(str(STAGE))
        lines.append(f"{MOUNT} -t tmpfs -o mode=0700,size=64k cogwork-stage {stage}")
        for i, m in enumerate(ordered):
            make = MKDIR if m.src.is_dir() else TOUCH
            lines.append(f"{make} {stage}/{i}")
            lines.append(f"{MOUNT} --bind {shlex.quote(str(m.src))} {stage}/{i}")
    for i, m in enumerate(ordered):
        dst = shlex.quote(m.dst)
        lines.append(f"{MOUNT} --bind {shlex.quote(str(STAGE))}/{i} {dst}")
        if m.read_only:
            lines.append(f"{MOUNT} -o remount,bind,ro {dst}")
    if ordered:
        lines.append(f"{UMOUNT} -l {shlex.quote(str(STAGE))}")
    lines.append(f"cd {shlex.quote(spec.workdir or '/')}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in spec.argv))
    return "\n".join(lines) + "\n"


def launch(spec: LaunchSpec) -> subprocess.Popen[bytes]:
    spec.cgroup.mkdir(parents=True, exist_ok=True)
    STAGE.mkdir(parents=True, exist_ok=True)
    _prepare_mountpoints(spec.mounts)
    spec.script.parent.mkdir(parents=True, exist_ok=True)
    spec.script.write_text(render_script(spec))
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with spec.log.open("ab") as logf:
        return subprocess.Popen(
            [SH, "-c", JOIN_AND_EXEC, str(spec.cgroup),
             IP, "netns", "exec", spec.netns,
             UNSHARE, "--mount", "--uts", "--propagation", "private", SH, str(spec.script)],
            env=spec.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd="/",
        )


def exit_info(returncode: int) -> tuple[int, int | None]:
    """(exitCode, signal) as a container runtime reports them: killed by N → 128+N."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


# -- cgroups --------------------------------------------------------------------------------
def _procs(cg: Path) -> list[int]:
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(cg):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()]
    return pids


def signal_cgroup(cg: Path, sig: int = signal.SIGTERM) -> None:
    for pid in _procs(cg):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def populated(cg: Path) -> bool:
    try:
        return "populated 1" in (cg / "cgroup.events").read_text()
    except OSError:
        return False


def kill_cgroup(cg: Path) -> None:
    """SIGKILL every process in cg and its descendants, atomically w.r.t. forks."""
    try:
        (cg / "cgroup.kill").write_text("1")
    except FileNotFoundError:
        return
    except OSError:
        signal_cgroup(cg, signal.SIGKILL)  # kernels without cgroup.kill


def wait_empty(cg: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while populated(cg):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def remove_cgroup(cg: Path) -> None:
    if not cg.exists():
        return
    kill_cgroup(cg)
    wait_empty(cg, 5)
    for dirpath, _dirs, _files in sorted(os.walk(cg), key=lambda e: -len(e[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def remove_pod_cgroup(uid: str) -> None:
    remove_cgroup(pod_cgroup(uid))
