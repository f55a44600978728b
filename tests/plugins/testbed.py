"""Test hosts: network namespaces on this machine, each a small SSH box.

Each host is a network namespace with one veth pair into the root namespace,
an address in the project's private subnet (10.213.SLOT.0/24, a /30 per host),
its own hostname (a UTS namespace), its own ordinary user (not root) with its
own home, and its own OpenSSH sshd on port 22. `ip link set HOST.veth down`
cuts a host off, as a pulled cable would.

Every testbed claims a slot with `flock`, so two test runs on one machine never
collide; claiming a slot first removes whatever a killed run left in it.
Everything is found again by name for removal (namespaces, links, users,
files), so `teardown(slot)` cleans up even after a crash. Slot 0 belongs to
`scripts/testbed` (for people); test runs use slots 1 and up.

Traffic goes only to these hosts' addresses: nothing here routes anywhere else.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

SUBNET = "10.213"  # 10.213.SLOT.0/24: the project's private test subnet
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
LOCK_DIR = Path("/run/rbee-testbed")
MAX_HOSTS = 63  # /30 per host in a /24
SCRIPT_SLOT = 0
HOST_SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {host_key}
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {user}
UsePAM no
StrictModes no
PidFile none
AllowTcpForwarding local
Subsystem sftp internal-sftp
MaxStartups 64:30:128
LogLevel ERROR
"""


@dataclass(frozen=True)
class TestHost:
    __test__ = False  # not a test class, whatever its name says

    index: int
    hostname: str
    netns: str
    address: str
    veth: str  # the root-namespace end: set it down to cut the host off
    user: str
    home: str
    port: int = 22

    def set_link(self, up: bool) -> None:
        _run(["ip", "link", "set", self.veth, "up" if up else "down"])


@dataclass
class Testbed:
    __test__ = False

    slot: int
    root: Path
    client_key: Path
    known_hosts: Path
    hosts: list[TestHost] = field(default_factory=list)
    sshds: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "root": str(self.root),
            "client_key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "hosts": [asdict(h) for h in self.hosts],
        }


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, users)"
    for tool in ("ip", "useradd", "userdel", "unshare", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"test hosts need `{tool}`"
    if not Path(SSHD).exists():
        return "test hosts need OpenSSH sshd"
    return None


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _names(slot: int) -> dict[str, str]:
    return {
        "netns": f"rbee-tb{slot}-h",
        "veth": f"rbtb{slot}h",
        "peer": f"rbtb{slot}n",
        "user": f"rbtb{slot}u",
    }


def _root(slot: int) -> Path:
    return Path(f"/tmp/rbee-testbed-{slot}")


# --- slots ---------------------------------------------------------------------


def claim_slot(first: int = 1, last: int = 250) -> tuple[int, int]:
    """A free slot and the fd that holds its lock (closing the fd frees it)."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    for slot in range(first, last + 1):
        fd = os.open(LOCK_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        teardown(slot)  # whatever a killed run left behind in this slot
        return slot, fd
    raise RuntimeError("no free testbed slot")


# --- up ------------------------------------------------------------------------


def build(slot: int, count: int) -> Testbed:
    """Create `count` hosts in `slot`. On any failure, removes what it made."""
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"between 1 and {MAX_HOSTS} hosts")
    root = _root(slot)
    root.mkdir(mode=0o755)
    bed = Testbed(slot, root, root / "id_ed25519", root / "known_hosts")
    try:
        _keygen(bed.client_key)
        bed.hosts = [_make_host(slot, i, root) for i in range(count)]
        bed.sshds = [_start_sshd(host, root) for host in bed.hosts]
        lines = [
            f"{h.address} {(root / h.hostname / 'host_key.pub').read_text()}" for h in bed.hosts
        ]
        bed.known_hosts.write_text("".join(lines))
        for host in bed.hosts:
            _wait_listening(host, root)
    except BaseException:
        teardown(slot)
        _reap(bed)
        raise
    return bed


def _keygen(path: Path) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)])


def _make_host(slot: int, i: int, root: Path) -> TestHost:
    n = _names(slot)
    host = TestHost(
        index=i,
        hostname=f"tb{slot}-node{i}",
        netns=f"{n['netns']}{i}",
        address=f"{SUBNET}.{slot}.{4 * i + 2}",
        veth=f"{n['veth']}{i}",
        user=f"{n['user']}{i}",
        home=str(root / f"tb{slot}-node{i}" / "home"),
    )
    gateway = f"{SUBNET}.{slot}.{4 * i + 1}"
    peer = f"{n['peer']}{i}"
    _run(
        ["ip", "-batch", "-"],
        stdin=(
            f"netns add {host.netns}\n"
            f"link add {host.veth} type veth peer name {peer} netns {host.netns}\n"
            f"addr add {gateway}/30 dev {host.veth}\n"
            f"link set {host.veth} up\n"
        ),
    )
    _run(
        ["ip", "-n", host.netns, "-batch", "-"],
        stdin=(f"addr add {host.address}/30 dev {peer}\nlink set {peer} up\nlink set lo up\n"),
    )
    host_dir = root / host.hostname
    home = Path(host.home)
    (home / ".ssh").mkdir(parents=True)
    _add_user(host.user, home)
    _let_through(Path(__file__).resolve().parents[2])
    (home / ".ssh" / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    info = pwd.getpwnam(host.user)
    for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
        os.chown(path, info.pw_uid, info.pw_gid)
    home.chmod(0o755)
    _keygen(host_dir / "host_key")
    config = HOST_SSHD_CONFIG.format(
        address=host.address, host_key=host_dir / "host_key", user=host.user
    )
    (host_dir / "sshd_config").write_text(config)
    return host


def _let_through(checkout: Path) -> None:
    """The hosts' ordinary users run this checkout's Python (its .venv): every
    directory down to it must let them pass (search only, not list). A checkout
    made under `mktemp -d` (mode 0700) would not, and every worker a host
    started would fail to import its packages."""
    for parent in (checkout, *checkout.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _add_user(user: str, home: Path) -> None:
    # A password field of "*" (not "!") keeps the account unlocked for key logins.
    argv = ["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", user]
    for attempt in range(20):  # another run may hold the passwd lock for a moment
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return
        if "lock" not in proc.stderr or attempt == 19:
            raise RuntimeError(f"useradd {user}: {proc.stderr.strip()}")
        time.sleep(0.1)


def _start_sshd(host: TestHost, root: Path) -> subprocess.Popen[bytes]:
    host_dir = root / host.hostname
    argv = ["ip", "netns", "exec", host.netns, "unshare", "--uts"]
    # The hostname and the sshd argv are positional parameters, never spliced into the script.
    argv += ["sh", "-c", 'hostname "$0" && exec "$@"', host.hostname]
    argv += [SSHD, "-D", "-e", "-f", str(host_dir / "sshd_config")]
    with open(host_dir / "sshd.log", "wb") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


def _wait_listening(host: TestHost, root: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host.address, 22), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    log = (root / host.hostname / "sshd.log").read_text()
    raise RuntimeError(f"sshd on {host.hostname} did not listen: {log.strip()}")


# --- down ----------------------------------------------------------------------


def teardown(slot: int) -> None:
    """Remove everything of `slot`, found by name; safe to call on a clean slot."""
    n = _names(slot)
    namespaces = [
        line.split()[0]
        for line in _run(["ip", "netns", "list"]).splitlines()
        if line.startswith(n["netns"])
    ]
    for ns in namespaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _run(["ip", "-o", "link", "show"]).splitlines()
    ]
    # Deleting the veth first: `ip netns del` alone leaves the kernel 1-2 s of cleanup.
    batch = [f"link del {name}" for name in links if name.startswith(n["veth"])]
    batch += [f"netns del {ns}" for ns in namespaces]
    if batch:
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input="\n".join(batch) + "\n",
            text=True,
            capture_output=True,
            timeout=60,
        )
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(n["user"]):
            _del_user(entry.pw_name)
    shutil.rmtree(_root(slot), ignore_errors=True)


def _del_user(user: str) -> None:
    for _ in range(20):
        proc = subprocess.run(["userdel", user], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0 or "does not exist" in proc.stderr:
            return
        time.sleep(0.1)


# --- pytest --------------------------------------------------------------------


def bring_up(count: int) -> tuple[Testbed, int]:
    """`count` hosts in a freshly claimed slot, and the fd holding the slot's lock."""
    slot, fd = claim_slot()
    try:
        return build(slot, count), fd
    except BaseException:
        os.close(fd)
        raise


def take_down(bed: Testbed, fd: int) -> None:
    """Remove everything of the testbed and free its slot."""
    try:
        teardown(bed.slot)
        _reap(bed)
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """Four test hosts for the session. A test that cuts a link restores it."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    bed, fd = bring_up(4)
    try:
        yield bed
    finally:
        take_down(bed, fd)


def _reap(bed: Testbed) -> None:
    for proc in bed.sshds:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- scripts/testbed -------------------------------------------------------------


def main(argv: list[str]) -> int:
    usage = "usage: scripts/testbed up N | down | show"
    if not argv or argv[0] not in ("up", "down", "show"):
        print(usage)
        return 2
    state = _root(SCRIPT_SLOT) / "testbed.json"
    if argv[0] == "show":
        print(state.read_text() if state.exists() else "no testbed is up")
        return 0
    reason = unavailable_reason()
    if reason is not None:
        print(f"testbed: {reason}")
        return 1
    teardown(SCRIPT_SLOT)
    if argv[0] == "down":
        print("testbed: down")
        return 0
    if len(argv) != 2 or not argv[1].isdigit():
        print(usage)
        return 2
    bed = build(SCRIPT_SLOT, int(argv[1]))
    state.write_text(json.dumps(bed.to_json(), indent=2) + "\n")
    for host in bed.hosts:
        print(
            f"{host.hostname}  ssh -i {bed.client_key} -o UserKnownHostsFile={bed.known_hosts} "
            f"{host.user}@{host.address}"
        )
    print(f"state: {state}; remove with: scripts/testbed down")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
