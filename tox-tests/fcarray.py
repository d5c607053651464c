"""Method A's array for the functional tests (test_cinder_method_a.py):
an FC-only array, in Cinder backend "array", that also presents its LUNs
on an iSCSI target. The Cinder side is cinder_array/ (the test-only FC
driver, and the os-brick connectors given to Nova's fake driver), wrapped
by the product's TransportBridgeDriver as make install puts it; this side
runs the array's tgtd and writes its transport map and cinder.conf
section. The session's osbox runs the backend (conftest.py openstack_cloud).
"""
import json
import random
import subprocess
import time
from pathlib import Path

from conftest import ROOT, free_port, stop

IQN = "iqn.2026-11.test.shareless:array"
CHAP_USER, CHAP_SECRET = "array", "array-chap-0123x"
FC_TARGETS = ["5000000000000a01", "5000000000000a02"]
CARRIER_WWPN, CARRIER_WWNN = "c000000000000001", "c000000000000000"
FC_HOSTS = "compute1"  # the computes with an FC HBA port; the others have neither HBA nor initiator


class Array:
    """The array: its tgtd (the iSCSI target, on 127.0.0.1 of the test's
    own network namespace), its directory of images, the transport map and
    the cinder.conf section of backend "array". osbox_env() is what an
    osbox needs to run the backend."""

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
        for args in (("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN),
                     ("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"),
                     ("--op", "new", "--mode", "account", "--user", CHAP_USER, "--password", CHAP_SECRET),
                     ("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP_USER)):
            self.tgtadm(*args)

        chap = work / "array.chap"
        chap.write_text(CHAP_SECRET + "\n")
        self.map = work / "transport.json"
        self.map.write_text(json.dumps({"backends": [{
            "name": "array", "fc_targets": FC_TARGETS,
            "iscsi": [{"portal": f"127.0.0.1:{self.port}", "iqn": IQN}],
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
        return {"OSBOX_CINDER_BACKENDS": "fake,array", "OSBOX_CINDER_CONF": str(self.cinder_conf),
                "OSBOX_PYTHONPATH": self.pythonpath, "SHARELESS_TEST_FC_HOSTS": FC_HOSTS}

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
