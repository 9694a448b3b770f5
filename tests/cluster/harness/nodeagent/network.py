"""Pod networking: one bridge on the host, a netns + veth per pod, file-locked IP allocation.

Several agents (a test session and `make cluster`) may share this machine, so the bridge is
shared and every allocated IP is an O_EXCL file under STATE_DIR naming the owning agent's pid;
entries of dead agents are reclaimed (with their netns and cgroups) at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from . import runtime

log = logging.getLogger("nodeagent.network")

BRIDGE = "cwbr0"
BRIDGE_IP = "10.244.0.1"
BRIDGE_MAC = "02:63:77:00:00:01"  # locally administered, fixed (see ensure_bridge)
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
STATE_DIR = Path("/run/cogwork/ipam")
AGENTS_DIR = Path("/run/cogwork/agents")  # one file per live agent: the bridge's users
NETNS_ETC = Path("/etc/netns")
IP = shutil.which("ip") or "/usr/sbin/ip"

# Nothing listens on 127.0.0.1:53 inside a pod's netns, so DNS fails at once (ECONNREFUSED)
# instead of timing out: every name a pod needs is in its hosts file.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def ip_cmd(*args: str, netns: str | None = None, check: bool = True,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [IP, *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PodNet:
    uid: str
    ip: str
    netns: str
    veth: str


class Network:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = 256  # first offset tried: 10.244.1.0; offsets < 256 stay for the host side
        self.size = POD_CIDR.num_addresses

    # -- bridge -------------------------------------------------------------------------
    def ensure_bridge(self) -> None:
        # Register first: an agent stopping now sees us and leaves the bridge in place.
        AGENTS_DIR.mkdir(parents=True, exist_ok=True)
        (AGENTS_DIR / str(os.getpid())).touch()
        if ip_cmd("link", "show", BRIDGE, check=False).returncode != 0:
            created = ip_cmd("link", "add", BRIDGE, "type", "bridge", check=False)
            if created.returncode != 0 and "exists" not in created.stderr:
                raise RuntimeError(f"creating {BRIDGE}: {created.stderr.strip()}")
        # A bridge without an address of its own takes the lowest MAC among its ports, so it
        # changed whenever a pod came or went, and pods' ARP entries for the gateway pointed at
        # a MAC no longer there for up to ~45 s (their reports to the operator timed out).
        ip_cmd("link", "set", BRIDGE, "address", BRIDGE_MAC)
        addrs = ip_cmd("-o", "addr", "show", "dev", BRIDGE).stdout
        if f"{BRIDGE_IP}/" not in addrs:
            ip_cmd("addr", "add", f"{BRIDGE_IP}/{POD_CIDR.prefixlen}", "dev", BRIDGE, check=False)
        ip_cmd("link", "set", BRIDGE, "up")
        STATE_DIR.mkdir(parents=True, exist_ok=True)

    def remove_bridge_if_unused(self) -> None:
        (AGENTS_DIR / str(os.getpid())).unlink(missing_ok=True)
        others = [p for p in AGENTS_DIR.glob("*") if p.name.isdigit() and _pid_alive(int(p.name))]
        ports = ip_cmd("-o", "link", "show", "master", BRIDGE, check=False).stdout.strip()
        if not others and not ports and not any(STATE_DIR.glob("*")):
            ip_cmd("link", "del", BRIDGE, check=False)

    # -- IPAM ---------------------------------------------------------------------------
    def allocate(self, uid: str) -> PodNet:
        with self.lock:
            for _ in range(self.size):
                offset = self.cursor
                self.cursor = self.cursor + 1 if self.cursor + 1 < self.size - 1 else 256
                if offset % 256 in (0, 255):  # legal in a /16, but x.y.z.0/255 confuse tools
                    continue
                ip = str(POD_CIDR.network_address + offset)
                netns = f"cw-{uid}"
                veth = f"cwv{offset:05x}"  # unique while the IP is held: 8 chars < IFNAMSIZ
                try:
                    fd = os.open(STATE_DIR / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(f"{os.getpid()} {uid} {netns} {veth}\n")
                return PodNet(uid, ip, netns, veth)
        raise RuntimeError("pod CIDR exhausted")

    def release(self, net: PodNet) -> None:
        (STATE_DIR / net.ip).unlink(missing_ok=True)

    def reclaim_stale(self) -> None:
        """Undo what dead agents left behind: processes, netns, hosts dirs, IPs."""
        for entry in list(STATE_DIR.glob("*")) if STATE_DIR.exists() else []:
            try:
                pid_s, uid, netns, veth = entry.read_text().split()
            except (OSError, ValueError):
                entry.unlink(missing_ok=True)
                continue
            if _pid_alive(int(pid_s)) and int(pid_s) != os.getpid():
                continue
            log.info("reclaiming %s of dead agent %s (pod %s)", entry.name, pid_s, uid)
            runtime.remove_pod_cgroup(uid)
            self.teardown(PodNet(uid, entry.name, netns, veth))

    # -- per pod ------------------------------------------------------------------------
    def setup(self, net: PodNet, hosts: str) -> None:
        etc = NETNS_ETC / net.netns
        etc.mkdir(parents=True, exist_ok=True)
        write_atomic(etc / "hosts", hosts)
        write_atomic(etc / "resolv.conf", RESOLV_CONF)
        ip_cmd("netns", "del", net.netns, check=False)  # leftovers of a crashed run
        ip_cmd("link", "del", net.veth, check=False)
        ip_cmd("netns", "add", net.netns)
        ip_cmd("link", "add", net.veth, "type", "veth", "peer", "name", "eth0",
               "netns", net.netns)
        ip_cmd("link", "set", net.veth, "master", BRIDGE, "up")
        ip_cmd("-batch", "-", netns=net.netns, stdin="\n".join([
            f"addr add {net.ip}/{POD_CIDR.prefixlen} dev eth0",
            "link set eth0 up",
            "link set lo up",
            f"route add default via {BRIDGE_IP}",
        ]) + "\n")

    def teardown(self, net: PodNet) -> None:
        # Deleting the netns destroys eth0 and with it the host-side veth peer.
        ip_cmd("netns", "del", net.netns, check=False)
        ip_cmd("link", "del", net.veth, check=False)
        shutil.rmtree(NETNS_ETC / net.netns, ignore_errors=True)
        self.release(net)


def write_atomic(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


def update_in_place(path: Path, content: str) -> bool:
    """Rewrite a file keeping its inode; returns whether it changed.

    `ip netns exec` bind-mounts /etc/netns/<ns>/hosts onto /etc/hosts, which pins the inode a
    running container sees: a rename-replace would leave running pods with the stale file. So
    the new bytes go in with one pwrite() followed by a truncate, which is as close to atomic as
    an in-place update gets (readers of a ~1 KiB file see the old or the new bytes).
    """
    data = content.encode()
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # the pod is being torn down
    try:
        old = os.pread(fd, max(len(data), os.fstat(fd).st_size) + 1, 0)
        if old == data:
            return False
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return True
    finally:
        os.close(fd)
