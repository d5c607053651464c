"""shareless under real OpenStack: Nova (the osbox's fake computes
compute1 and compute2, which run no hypervisor) live-migrates a server
whose disk is a shareless managed disk, driven through the real clients,
and the two agents, one per host netns, act on Nova's own versioned
notifications alone: they replicate, copy, come back incrementally and
undo an aborted migration. What moves is checked byte for byte in the
agents' stores.

The tests run in file order against one server; each starts where the
previous one left it.
"""
import json
import os
import random
import shutil
import subprocess
import time

import pytest

import cloud
from conftest import report

DISK_SIZE = 32 << 20
DATA_SIZE = 24 << 20  # the rest of the disk is a hole
IMAGE = "11111111-2222-3333-4444-555555555555"  # the osbox's stand-in image
# The way back: blocks written on compute2 through its LUN (qemu-io).
WRITES = [(4 << 20, 64 << 10, 0xAB), (20 << 20, 128 << 10, 0xCD)]
LIVE_MIGRATION_EVENTS = ["pre.start", "pre.end", "post.start", "post_dest.start", "post_dest.end", "post.end",
                         "abort.start", "abort.end", "rollback.start", "rollback.end"]


class Scenario:
    """The server and what the tests know of its disk."""

    def __init__(self, openstack_cloud, agents):
        self.cloud = openstack_cloud
        self.box = openstack_cloud.osbox
        self.agents = agents
        self.server = None
        self.data = None


@pytest.fixture(scope="module")
def scenario(openstack_cloud, installed):
    chap, psk = cloud.new_secret(8), cloud.new_secret(32)  # 16 characters: what QEMU's libiscsi accepts
    agents = {}
    work = cloud.ROOT / ".work/tox/agents"
    shutil.rmtree(work, ignore_errors=True)
    try:
        for host, (ns, addr) in openstack_cloud.hosts.items():
            agents[host] = cloud.Agent(installed, openstack_cloud.osbox, work / host, host, ns, addr, chap, psk)
    except Exception:
        for a in agents.values():
            a.close()
        raise
    s = Scenario(openstack_cloud, agents)
    yield s
    for a in agents.values():
        if a.proc.poll() is None:
            a.close()


def host_of(s):
    return s.box.openstack("server", "show", s.server, "-f", "json")["OS-EXT-SRV-ATTR:host"]


def live_migrate(s, dest):
    t0 = time.monotonic()
    s.box.openstack("server", "migrate", "--live-migration", "--host", dest, "--wait", s.server)
    took = time.monotonic() - t0
    assert host_of(s) == dest
    return took


def wait_copied(s, src, dst, timeout=120):
    """Until dst's replica holds every block and both agents record the
    migration as copied; returns how long that took."""
    t0 = time.monotonic()
    a, b = s.agents[src], s.agents[dst]

    def copied():
        m, d = b.migration(s.server, "dest"), b.disk(s.server)
        return (m and m["phase"] == "copied" and d and d["state"] == "complete" and d["bytes_remaining"] == 0,
                f"{dst}: migration {m}, disk {d}")

    cloud.eventually(f"copy to {dst}", timeout, copied)

    def released():
        m = a.migration(s.server, "source")
        return m and m["phase"] == "copied", f"{src}: {m}"

    cloud.eventually(f"{src} released", 30, released)
    return time.monotonic() - t0


def test_instance_with_a_managed_disk_on_compute1(scenario):
    """A server booted by Nova on compute1; its disk file is adopted by
    compute1's agent (shareless adopt --file: compute1 runs no libvirtd)."""
    s = scenario
    t0 = time.monotonic()
    s.box.openstack("flavor", "create", "--ram", "256", "--disk", "1", "--vcpus", "1", "shl.tiny")
    srv = s.box.openstack("server", "create", "--flavor", "shl.tiny", "--image", IMAGE, "--nic", "none",
                          "--host", "compute1", "--wait", "shl-vm", "-f", "json")
    s.server = srv["id"]
    assert srv["status"] == "ACTIVE" and host_of(s) == "compute1"
    # The disk file in compute1's instances directory, as Nova's libvirt
    # driver would keep it: pseudo-random data, then a hole.
    rng = random.Random(8)
    s.data = bytearray(rng.randbytes(DATA_SIZE)) + bytearray(DISK_SIZE - DATA_SIZE)
    disk = s.box.compute_dir("compute1") / "instances" / s.server / "disk"
    disk.parent.mkdir(parents=True)
    with open(disk, "wb") as f:
        f.write(s.data[:DATA_SIZE])
        f.truncate(DISK_SIZE)
    a = s.agents["compute1"]
    r = a.cli("adopt", "--json", "--file", str(disk), s.server)
    assert r.returncode == 0, r.stderr
    ad = json.loads(r.stdout)
    assert [d["disk"] for d in ad["disks"]] == ["disk"] and ad["disks"][0]["size"] == DISK_SIZE
    d = a.disk(s.server)
    assert d["state"] == "complete" and not d["sealed"] and d["size"] == DISK_SIZE
    assert a.image(s.server).read_bytes() == s.data
    # QEMU on compute1 reaches the managed disk.
    r = a.qemu_io(s.server, f"read -P 0 {DATA_SIZE} 1M")
    assert "read 1048576/1048576 bytes" in r.stdout, r.stdout + r.stderr
    report(f"openstack: server {s.server} ACTIVE on compute1 and its 32 MiB disk adopted in {time.monotonic() - t0:.1f} s")


def test_live_migration_to_compute2_replicates_the_disk(scenario):
    """openstack server migrate --live-migration --host compute2 --wait:
    Nova's notifications make compute2's agent replicate and copy the disk
    from compute1's; compute2 ends with every byte of it."""
    s = scenario
    took = live_migrate(s, "compute2")
    copy = wait_copied(s, "compute1", "compute2")
    b = s.agents["compute2"]
    assert b.image(s.server).read_bytes() == s.data, "compute2's replica differs from compute1's data"
    assert s.agents["compute1"].image(s.server).read_bytes() == s.data
    moved = b.metric(f'shareless_replica_source_read_bytes_total{{instance="{s.server}",disk="disk"}}')
    # The copier asks compute1 where its data is and reads only that.
    assert moved == DATA_SIZE, f"compute2 read {moved} bytes from compute1; want the {DATA_SIZE} of data, not the hole"
    report(f"live migration compute1->compute2: openstack --wait {took:.1f} s, then copy done after {copy:.1f} s, "
           f"{moved >> 10} KiB read from compute1 (the hole not read), compute2's 32 MiB equal to compute1's data")


def test_way_back_moves_only_the_modified_blocks(scenario):
    """Blocks written on compute2 through its LUN; migrating back to
    compute1 moves only those (compute1 kept its sealed image as base)."""
    s = scenario
    b = s.agents["compute2"]
    b.qemu_io(s.server, *[f"write -P {p:#x} {off} {n}" for off, n, p in WRITES])
    for off, n, p in WRITES:
        s.data[off:off + n] = bytes([p]) * n
    took = live_migrate(s, "compute1")
    copy = wait_copied(s, "compute2", "compute1")
    a = s.agents["compute1"]
    moved = a.metric(f'shareless_replica_source_read_bytes_total{{instance="{s.server}",disk="disk"}}')
    modified = sum(-(-n // cloud.GRAIN) * cloud.GRAIN for _, n, _ in WRITES)
    assert moved == modified, f"the way back read {moved} bytes from compute2; want the {modified} modified"
    assert a.image(s.server).read_bytes() == s.data, "compute1's disk differs from compute2's data"
    assert b.image(s.server).read_bytes() == s.data
    report(f"live migration compute2->compute1 (way back): openstack --wait {took:.1f} s, copy done after "
           f"{copy:.1f} s, {moved >> 10} KiB moved = the {len(WRITES)} modified blocks of the 32 MiB disk")


def test_aborted_live_migration_leaves_compute1_as_before(scenario):
    """A live migration to compute2 aborted while Nova runs it (DELETE
    /servers/{id}/migrations/{id}): the server stays on compute1, the
    migration is cancelled, compute2's replicas are discarded, and
    compute1's disk is as before, writable."""
    s = scenario
    a, b = s.agents["compute1"], s.agents["compute2"]
    before = cloud.sha256(a.image(s.server))
    aborter = subprocess.Popen(["ip", "netns", "exec", s.box.netns, cloud.PYTHON,
                                str(cloud.ROOT / "tox-tests/abort_live_migration.py"), s.server, "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, **s.box.os_env))
    t0 = time.monotonic()
    s.box.openstack("server", "migrate", "--live-migration", "--host", "compute2", s.server)
    out, err = aborter.communicate(timeout=90)
    assert aborter.returncode == 0, err
    abort = json.loads(out)

    def settled():
        srv = s.box.openstack("server", "show", s.server, "-f", "json")
        return (srv["status"] == "ACTIVE" and srv["OS-EXT-STS:task_state"] is None,
                f'{srv["status"]} {srv["OS-EXT-STS:task_state"]}')

    cloud.eventually("server settled", 60, settled, interval=1)
    assert host_of(s) == "compute1"
    migs = s.box.openstack("server", "migration", "list", "--server", s.server, "-f", "json")
    mig = next(m for m in migs if m["Id"] == abort["migration"])
    assert mig["Status"] == "cancelled", mig

    def undone():
        mb, ma = b.migration(s.server, "dest"), a.migration(s.server, "source")
        return (mb and mb["phase"] == "rolled-back" and b.disk(s.server) is None
                and ma and ma["phase"] == "rolled-back", f"compute2 {mb}, compute1 {ma}")

    cloud.eventually("agents rolled back", 60, undone)
    assert not b.image(s.server).parent.exists(), "compute2 kept a replica in its store"
    d = a.disk(s.server)
    assert d["state"] == "complete" and not d["sealed"], d
    assert cloud.sha256(a.image(s.server)) == before, "compute1's disk changed"
    r = a.qemu_io(s.server, *[f"read -P {p:#x} {off} {n}" for off, n, p in WRITES], "write -P 0x11 0 4k",
                  "read -P 0x11 0 4k")
    assert "Pattern verification failed" not in r.stdout and r.stdout.count("read ") == len(WRITES) + 1, r.stdout
    report(f"aborted live migration compute1->compute2: running after {abort['running_after']} s, "
           f"aborted after {abort['aborted_after']} s, server back to ACTIVE on compute1, migration "
           f"{abort['migration']} cancelled, agents rolled back {time.monotonic() - t0:.1f} s after the request")


def test_agents_saw_novas_notifications(scenario):
    """Both agents consumed every live migration notification Nova sent
    (each has its own queue), and stop cleanly with SIGTERM."""
    s = scenario
    seen = []
    for host, a in s.agents.items():
        for n in a.notifications():
            if n.get("instance") == s.server and "live_migration" in n.get("event_type", ""):
                seen.append((n["time"], host, n["event_type"], n["publisher"], n["outcome"]))
    seen.sort()
    report(f"the live migration notifications the agents consumed for {s.server} (time, agent, event, publisher, outcome):")
    for t, host, event, publisher, outcome in seen:
        report(f"  {t[11:23]}  {host}  {event:<45} {publisher:<22} {outcome}")
    for host in s.agents:
        events = {e.removeprefix("instance.live_migration_") for _, h, e, _, _ in seen if h == host}
        missing = [e for e in LIVE_MIGRATION_EVENTS if e not in events]
        assert not missing, f"{host}'s agent never saw {missing}"
    for host, a in s.agents.items():
        assert a.close() == 0, f"{host}: {a.log_text()[-2000:]}"
