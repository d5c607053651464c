"""Method A against real Cinder and Nova (Debian's Zed packages, the
session's osbox): an FC-only array's volume, attached by FC to a server on
compute1, is live-migrated by Nova to compute2, which has neither an FC
HBA nor an iSCSI initiator; then retyped between its FC and iSCSI types
while in use.

The array is fcarray.py with cinder_array/shareless_test_array.py (an FC
driver whose data are image files, its iSCSI presentation served by
tgtd), wrapped by the product's TransportBridgeDriver as make install puts
it (cinderdriver/shareless_cinder), which asks the installed
`shareless cinder-driver`. The fake virt driver's connectors are
os-brick's (cinder_array/sitecustomize.py): compute1 has an HBA port,
compute2 has nothing.
"""
import os
import re
import shutil
import subprocess

import pytest

import cloud
import fcarray
from conftest import need, report

DATA_OFFSET, DATA_SIZE = 4 << 20, 1 << 20
VOL, SRV, FLAVOR = "shl-a-vol", "shl-a-vm", "shl-a.tiny"
FC_TYPE, ISCSI_TYPE = "shl-a-fc", "shl-a-iscsi"


class Box:
    """What the tests use of the session's cloud: the osbox and the array."""

    def __init__(self, cloud):
        self.osbox, self.array = cloud.osbox, cloud.array

    def os(self, *args, parse=True):
        return self.osbox.openstack(*args, *(("-f", "json") if parse else ()))

    def wait(self, what, fn, timeout=120):
        """cloud.eventually, returning fn's last detail."""
        state = {}

        def check():
            ok, state["last"] = fn()
            return ok, state["last"]

        cloud.eventually(what, timeout, check)
        return state["last"]

    def log(self, service):
        return (self.osbox.dir / "logs" / f"{service}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def box(openstack_cloud):
    for tool in ("tgtadm", "qemu-img", "losetup"):
        need(tool, shutil.which(tool))
    return Box(openstack_cloud)


def attachments(box, volume_id):
    return [box.os("volume", "attachment", "show", a["ID"])
            for a in box.os("volume", "attachment", "list", "--volume-id", volume_id)]


def test_fc_volume_live_migrates_to_a_host_without_fc(box, tmp_path):
    box.os("volume", "type", "create", "--property", "volume_backend_name=array", FC_TYPE)
    box.os("volume", "type", "create", "--property", "volume_backend_name=array",
           "--property", "shareless:transport=iscsi", ISCSI_TYPE)
    box.os("flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", FLAVOR)
    vol = box.os("volume", "create", "--type", FC_TYPE, "--size", "1", VOL)["id"]
    box.wait("volume", lambda: (lambda s: (s == "available", s))(box.os("volume", "show", vol)["status"]))
    srv = box.os("server", "create", "--flavor", FLAVOR, "--image", "osbox-image", "--nic", "none",
                 "--availability-zone", "nova:compute1", "--wait", SRV)["id"]
    box.os("server", "add", "volume", srv, vol, parse=False)
    box.wait("attach", lambda: (lambda s: (s == "in-use", s))(box.os("volume", "show", vol)["status"]))

    # On compute1 the FC driver answered by FC, for compute1's own port.
    (att,) = attachments(box, vol)
    ci = att["Properties"]  # the connection_info
    fc_host = ",".join(sorted(box.array.maps()))
    assert ci["driver_volume_type"] == "fibre_channel", ci
    assert ci["target_lun"] == box.array.maps()[fc_host][vol], (ci, box.array.maps())
    assert fcarray.CARRIER_WWPN not in fc_host

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
    ci = att["Properties"]  # the connection_info
    maps = box.array.maps()
    carrier_lun = maps[fcarray.CARRIER_WWPN][vol]
    assert ci["driver_volume_type"] == "local", ci
    assert ci["device_path"] == f"/dev/disk/by-path/ip-127.0.0.1:{box.array.port}-iscsi-{fcarray.IQN}-lun-{carrier_lun}", ci
    assert vol not in maps.get(fc_host, {}), maps
    assert f"LUN: {carrier_lun}" in box.array.tgtadm("--op", "show", "--mode", "target").stdout

    # What compute2 reads through that LUN is what compute1 wrote.
    m = re.fullmatch(r"/dev/disk/by-path/ip-(.+)-iscsi-(.+)-lun-(\d+)", ci["device_path"])
    url = f"iscsi://{fcarray.CHAP_USER}%{fcarray.CHAP_SECRET}@{m[1]}/{m[2]}/{m[3]}"
    out = tmp_path / "read.img"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={url}", f"of={out}", "bs=1M",
                    f"count={(DATA_OFFSET + DATA_SIZE) >> 20}"], check=True, capture_output=True)
    assert out.read_bytes()[DATA_OFFSET:] == data


def test_retype_fc_iscsi_and_back_in_use_moves_no_data(box):
    (vol,) = [v for v in box.os("volume", "list", "--long") if v["Name"] == VOL]
    vol = vol["ID"]
    srv = box.os("server", "list", "--name", SRV)[0]["ID"]
    before = box.os("volume", "show", vol)
    assert before["status"] == "in-use" and before["type"] == FC_TYPE, before
    volumes, image = len(box.os("volume", "list", "--all-projects")), box.array.dir / f"volume-{vol}.img"
    stat, maps = image.stat(), box.array.maps()
    assert list(maps.get(fcarray.CARRIER_WWPN, {})) == [vol] and all(
        vol not in luns for host, luns in maps.items() if host != fcarray.CARRIER_WWPN), maps

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
        report(f"method A: retype of an in-use volume to {new_type}: {moved} bytes through tgtd's read/write calls "
               "(its timer wakeups), image and LUN maps unchanged")
        assert moved < 4096, f"{moved} bytes through tgtd during the retype"
        assert "Connection" not in box.array.tgtadm("--op", "show", "--mode", "conn", "--tid", "1").stdout
        assert (image.stat().st_mtime_ns, image.stat().st_blocks) == (stat.st_mtime_ns, stat.st_blocks)
        assert box.array.maps() == maps
        assert box.os("server", "show", srv)["status"] == "ACTIVE"

    retype(ISCSI_TYPE)
    # The type now pins the iSCSI presentation: back on compute1, which has
    # an FC port, the new attachment still comes through the carrier (the
    # same LUN, still mapped: compute2's release left it to compute1's
    # attachment), and nothing is mapped to compute1's own port.
    box.os("server", "migrate", "--live-migration", "--host", "compute1", "--wait", srv, parse=False)
    assert box.os("server", "show", srv)["OS-EXT-SRV-ATTR:host"] == "compute1"
    (att,) = attachments(box, vol)
    ci = att["Properties"]  # the connection_info
    assert ci["driver_volume_type"] == "local" and ci["device_path"].endswith(f"-lun-{maps[fcarray.CARRIER_WWPN][vol]}"), ci
    assert box.array.maps() == maps
    retype(FC_TYPE)

    # Cinder's manager, at INFO: the driver's retype did it; no migration
    # (generic or driver-assisted) and so no Nova swap ran.
    log = box.log("cinder-volume")
    assert log.count(f"Volume {vol}: retyped to") == 2, "the wrapper's transport-only retype"
    assert log.count("Retype volume completed successfully") == 2
    assert "Migrate volume completed" not in log
    assert "os-volume_attachments/" + vol not in box.log("nova-api"), "a swap volume call reached Nova"
