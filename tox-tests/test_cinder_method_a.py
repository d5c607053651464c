"""Method A against real Cinder and Nova (Debian's Zed packages, the
osbox): an FC-only array's volume, attached by FC to a server on compute1,
is live-migrated by Nova to compute2, which has neither an FC HBA nor an
iSCSI initiator; then retyped between its FC and iSCSI types while in use.

The array is tox-tests/cinder_array/shareless_test_array.py (FC driver,
data in image files, the iSCSI presentation served by tgtd), wrapped by
the product's TransportBridgeDriver as make install puts it
(cinderdriver/shareless_cinder), which asks the installed
`shareless cinder-driver`. The fake virt driver's
connectors are os-brick's (tox-tests/cinder_array/sitecustomize.py):
compute1 has an HBA port, compute2 has nothing.
"""
import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, need, stop

OSBOX = ROOT / "tox-tests" / "osbox"
ARRAY_IQN = "iqn.2026-11.test.shareless:array"
CHAP_USER, CHAP_SECRET = "array", "array-chap-0123x"
FC_TARGETS = ["5000000000000a01", "5000000000000a02"]
CARRIER_WWPN, CARRIER_WWNN = "c000000000000001", "c000000000000000"
DATA_OFFSET, DATA_SIZE = 4 << 20, 1 << 20


class Array:
    """The array: its tgtd (the iSCSI target, on 127.0.0.1), its directory
    of images, the transport map and the cinder.conf section of backend
    "array". osbox_env() is what an osbox needs to run it; an osbox shared
    with other tests can take it as it is."""

    def __init__(self, work, installed):
        self.dir = work / "array"
        self.dir.mkdir()
        self.port = free_port()
        self.control = random.randrange(1000, 32000)
        self.tgtd = subprocess.Popen(
            ["tgtd", "-f", "--iscsi", f"portal=127.0.0.1:{self.port}", "-C", str(self.control)],
            stdout=open(work / "tgtd.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while self.tgtadm("--op", "show", "--mode", "target", check=False).returncode != 0:
            assert time.monotonic() < deadline and self.tgtd.poll() is None, "tgtd does not answer"
            time.sleep(0.1)
        for args in (("--op", "new", "--mode", "target", "--tid", "1", "-T", ARRAY_IQN),
                     ("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"),
                     ("--op", "new", "--mode", "account", "--user", CHAP_USER, "--password", CHAP_SECRET),
                     ("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP_USER)):
            self.tgtadm(*args)

        chap = work / "array.chap"
        chap.write_text(CHAP_SECRET + "\n")
        self.map = work / "transport.json"
        self.map.write_text(json.dumps({"backends": [{
            "name": "array", "fc_targets": FC_TARGETS,
            "iscsi": [{"portal": f"127.0.0.1:{self.port}", "iqn": ARRAY_IQN}],
            "chap": {"username": CHAP_USER, "password_file": str(chap)},
            "carrier": {"wwpns": [CARRIER_WWPN], "wwnns": [CARRIER_WWNN]}}]}))
        self.cinder_conf = work / "cinder-array.conf"
        self.cinder_conf.write_text(f"""[array]
volume_backend_name = array
volume_driver = shareless_cinder.driver.TransportBridgeDriver
shareless_wrapped_driver = shareless_test_array.ArrayFCDriver
shareless_command = {installed.bin}
shareless_transport_map = {self.map}
array_dir = {self.dir}
array_fc_targets = {",".join(FC_TARGETS)}
array_carrier_wwpns = {CARRIER_WWPN}
array_tgt_control = {self.control}
array_tgt_tid = 1
""")
        self.pythonpath = f"{ROOT / 'tox-tests' / 'cinder_array'}:{installed.pysite}"

    def osbox_env(self):
        return {"OSBOX_CINDER_BACKENDS": "array", "OSBOX_CINDER_CONF": str(self.cinder_conf),
                "OSBOX_PYTHONPATH": self.pythonpath, "SHARELESS_TEST_FC_HOSTS": "compute1"}

    def tgtadm(self, *args, check=True):
        return subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                              capture_output=True, text=True, check=check, timeout=30)

    def maps(self):
        p = self.dir / "maps.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def tgtd_io(self):
        """Bytes tgtd read and wrote through read/write calls: its sockets
        and files, and the 8-byte reads of its own timerfd and eventfd."""
        io = dict(line.split(": ") for line in Path(f"/proc/{self.tgtd.pid}/io").read_text().splitlines())
        return int(io["rchar"]) + int(io["wchar"])

    def close(self):
        self.tgtadm("--op", "delete", "--mode", "target", "--tid", "1", "--force", check=False)
        self.tgtadm("--op", "delete", "--mode", "system", check=False)
        stop(self.tgtd)


class Box:
    """An osbox of its own, running the array's backend."""

    def __init__(self, work, array):
        self.work, self.array = work, array
        self.osbox_dir = work / "osbox"
        self.env = dict(os.environ, OSBOX_DIR=str(self.osbox_dir), **array.osbox_env())
        up = subprocess.run([str(OSBOX / "up.sh")], env=self.env, capture_output=True, text=True, timeout=900)
        (work / "up.log").write_text(up.stdout + up.stderr)
        if up.returncode != 0:
            self.close()
            pytest.fail(f"osbox up.sh: {up.returncode}\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")

    def os(self, *args, parse=True):
        r = subprocess.run([str(OSBOX / "openstack"), *args, *(("-f", "json") if parse else ())],
                           env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr}"
        return json.loads(r.stdout) if parse else r.stdout

    def wait(self, what, fn, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            ok, state = fn()
            if ok:
                return state
            assert time.monotonic() < deadline, f"{what}: still {state}"
            time.sleep(0.5)

    def log(self, service):
        return (self.osbox_dir / "logs" / f"{service}.log").read_text(errors="replace")

    def close(self):
        subprocess.run([str(OSBOX / "down.sh")], env=self.env, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def box(tmp_path_factory, installed):
    for tool in ("tgtd", "tgtadm", "qemu-img", "losetup", "openstack", "mariadbd", "rabbitmq-server"):
        need(tool, shutil.which(tool) or Path("/usr/sbin", tool).exists() or Path("/usr/lib/rabbitmq/bin", tool).exists())
    need("python3-nova/-cinder", subprocess.run(["/usr/bin/python3", "-c", "import nova, cinder"]).returncode == 0)
    work = tmp_path_factory.mktemp("method-a")
    array = Array(work, installed)
    try:
        b = Box(work, array)
    except BaseException:
        array.close()
        raise
    yield b
    b.close()
    array.close()


def attachments(box, volume_id):
    return [box.os("volume", "attachment", "show", a["ID"])
            for a in box.os("volume", "attachment", "list", "--volume-id", volume_id)]


def test_fc_volume_live_migrates_to_a_host_without_fc(box):
    box.os("volume", "type", "create", "--property", "volume_backend_name=array", "fc")
    box.os("volume", "type", "create", "--property", "volume_backend_name=array",
           "--property", "shareless:transport=iscsi", "iscsi")
    box.os("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", "tiny")
    vol = box.os("volume", "create", "--type", "fc", "--size", "1", "vol")["id"]
    box.wait("volume", lambda: (lambda s: (s == "available", s))(box.os("volume", "show", vol)["status"]))
    srv = box.os("server", "create", "--flavor", "tiny", "--image", "osbox-image", "--nic", "none",
                 "--availability-zone", "nova:compute1", "--wait", "srv")["id"]
    box.os("server", "add", "volume", srv, vol, parse=False)
    box.wait("attach", lambda: (lambda s: (s == "in-use", s))(box.os("volume", "show", vol)["status"]))

    # On compute1 the FC driver answered by FC, for compute1's own port.
    (att,) = attachments(box, vol)
    ci = att["Properties"] if "Properties" in att else att["connection_info"]
    fc_host = ",".join(sorted(box.array.maps()))
    assert ci["driver_volume_type"] == "fibre_channel", ci
    assert ci["target_lun"] == box.array.maps()[fc_host][vol], (ci, box.array.maps())
    assert CARRIER_WWPN not in fc_host

    # The source writes through its FC block device.
    image = box.array.dir / f"volume-{vol}.img"
    data = os.urandom(DATA_SIZE)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        fd = os.open(loop, os.O_WRONLY)
        try:
            os.pwrite(fd, data, DATA_OFFSET)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)

    box.os("server", "migrate", "--live-migration", "--host", "compute2", "--wait", srv, parse=False)
    server = box.os("server", "show", srv)
    assert server["OS-EXT-SRV-ATTR:host"] == "compute2" and server["status"] == "ACTIVE", server

    # Nova's pre_live_migration made compute2's attachment (connector
    # without wwpns) and deleted compute1's: one attachment, "local", its
    # device_path os-brick's by-path name of the carrier's LUN on the
    # array's iSCSI target; compute1's FC mapping is gone.
    (att,) = attachments(box, vol)
    ci = att["Properties"] if "Properties" in att else att["connection_info"]
    maps = box.array.maps()
    carrier_lun = maps[CARRIER_WWPN][vol]
    assert ci["driver_volume_type"] == "local", ci
    assert ci["device_path"] == f"/dev/disk/by-path/ip-127.0.0.1:{box.array.port}-iscsi-{ARRAY_IQN}-lun-{carrier_lun}", ci
    assert vol not in maps.get(fc_host, {}), maps
    assert f"LUN: {carrier_lun}" in box.array.tgtadm("--op", "show", "--mode", "target").stdout

    # What compute2 reads through that LUN is what compute1 wrote.
    m = re.fullmatch(r"/dev/disk/by-path/ip-(.+)-iscsi-(.+)-lun-(\d+)", ci["device_path"])
    url = f"iscsi://{CHAP_USER}%{CHAP_SECRET}@{m[1]}/{m[2]}/{m[3]}"
    out = box.work / "read.img"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={url}", f"of={out}", "bs=1M",
                    f"count={(DATA_OFFSET + DATA_SIZE) >> 20}"], check=True, capture_output=True)
    assert out.read_bytes()[DATA_OFFSET:] == data


def test_retype_fc_iscsi_and_back_in_use_moves_no_data(box):
    (vol,) = [v for v in box.os("volume", "list", "--long") if v["Name"] == "vol"]
    vol = vol["ID"]
    before = box.os("volume", "show", vol)
    assert before["status"] == "in-use" and before["type"] == "fc", before
    volumes, image = len(box.os("volume", "list", "--all-projects")), box.array.dir / f"volume-{vol}.img"
    stat, maps = image.stat(), box.array.maps()
    assert list(maps.get(CARRIER_WWPN, {})) == [vol] and all(
        vol not in luns for host, luns in maps.items() if host != CARRIER_WWPN), maps

    def retype(new_type):
        io = box.array.tgtd_io()
        box.os("volume", "set", "--type", new_type, "--retype-policy", "on-demand", vol, parse=False)
        after = box.wait("retype", lambda: (lambda v: (v["type"] == new_type and v["status"] == "in-use", v))(
            box.os("volume", "show", vol)))
        # The driver's retype answered True: no migration, no new volume,
        # the same backend, the array untouched (not a byte through tgtd,
        # the image file and the LUN maps unchanged).
        assert after["os-vol-host-attr:host"] == before["os-vol-host-attr:host"], after
        assert after.get("migration_status") in (None, ""), after
        assert len(box.os("volume", "list", "--all-projects")) == volumes
        # Moving even one block of the volume would show here; tgtd's own
        # timer wakeups read 8 bytes each.
        moved = box.array.tgtd_io() - io
        print(f"retype to {new_type}: {moved} bytes through tgtd's read/write calls")
        assert moved < 4096, f"{moved} bytes through tgtd during the retype"
        assert "Connection" not in box.array.tgtadm("--op", "show", "--mode", "conn", "--tid", "1").stdout
        assert (image.stat().st_mtime_ns, image.stat().st_blocks) == (stat.st_mtime_ns, stat.st_blocks)
        assert box.array.maps() == maps

    retype("iscsi")
    # The type now pins the iSCSI presentation: back on compute1, which has
    # an FC port, the new attachment still comes through the carrier (the
    # same LUN, still mapped: compute2's release left it to compute1's
    # attachment), and nothing is mapped to compute1's own port.
    srv = box.os("server", "list", "--name", "srv")[0]["ID"]
    box.os("server", "migrate", "--live-migration", "--host", "compute1", "--wait", srv, parse=False)
    assert box.os("server", "show", srv)["OS-EXT-SRV-ATTR:host"] == "compute1"
    (att,) = attachments(box, vol)
    ci = att["Properties"] if "Properties" in att else att["connection_info"]
    assert ci["driver_volume_type"] == "local" and ci["device_path"].endswith(f"-lun-{maps[CARRIER_WWPN][vol]}"), ci
    assert box.array.maps() == maps
    retype("fc")

    # Cinder's manager, at INFO: the driver's retype did it; no migration
    # (generic or driver-assisted) and so no Nova swap ran.
    log = box.log("cinder-volume")
    assert log.count(f"Volume {vol}: retyped to") == 2, "the wrapper's transport-only retype"
    assert log.count("Retype volume completed successfully") == 2
    assert "Migrate volume completed" not in log
    assert "os-volume_attachments/" + vol not in box.log("nova-api"), "a swap volume call reached Nova"
