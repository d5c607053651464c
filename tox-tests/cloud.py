"""The functional tests' cloud: the OpenStack-in-a-box (osbox/) on a lab
network of network namespaces, and one shareless agent per compute host.

    switch netns: bridge br0
      +-- osbox netns     10.231.0.10  Keystone, Nova, Cinder, RabbitMQ, ...
      +-- host netns h1   10.231.0.1   compute1's agent (iSCSI, control API)
      +-- host netns h2   10.231.0.2   compute2's agent

The addresses exist only inside these namespaces. Nova's fake computes
compute1/compute2 run in the osbox netns (the fake driver has no
hypervisor), with my_ip set to their host's address: Nova's hypervisor
host_ip, where each agent finds its peer through Nova.
"""
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time

from conftest import ROOT, stop

OSBOX = ROOT / "tox-tests/osbox"
PYTHON = "/usr/bin/python3"  # Debian's, with the OpenStack packages
SUBNET = "10.231.0"
OSBOX_IP = f"{SUBNET}.10"
ISCSI_PORT = 3260  # the same on every host: libvirt's XML names 127.0.0.1 with it
API_PORT = 3270
METRICS = "127.0.0.1:9470"  # inside each host's netns
GRAIN = 64 << 10
CHAP_USER = "shareless"


def run(*args, timeout=120, check=True, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def ip(*args):
    return run("ip", *args)


class Network:
    """A bridge in a switch netns; hosts are netns joined to it."""

    def __init__(self, tag):
        self.tag = tag
        self.switch = f"{tag}-sw"
        self.namespaces = [self.switch]
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name, addr):
        ns = f"{self.tag}-{name}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", name, "netns", self.switch)
        ip("-n", self.switch, "link", "set", name, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def close(self):
        for ns in reversed(self.namespaces):
            run("ip", "netns", "delete", ns, check=False)


class Osbox:
    """tox-tests/osbox brought up on the network's bridge; extra_env adds
    to up.sh's parameters (OSBOX_CINDER_BACKENDS, ...)."""

    def __init__(self, net, state_dir, compute_ips, extra_env):
        self.dir = state_dir
        self.env = dict(os.environ, OSBOX_DIR=str(state_dir), OSBOX_IP=OSBOX_IP, OSBOX_BRIDGE="br0",
                        OSBOX_BRIDGE_NETNS=net.switch, OSBOX_COMPUTES=str(len(compute_ips)),
                        OSBOX_COMPUTE_IPS=" ".join(compute_ips), **extra_env)
        t0 = time.monotonic()
        r = subprocess.run([str(OSBOX / "up.sh")], env=self.env, capture_output=True, text=True, timeout=900)
        self.up_seconds = time.monotonic() - t0
        self.up_output = r.stdout + r.stderr
        if r.returncode != 0:
            self.close()
            raise RuntimeError(f"osbox/up.sh failed (exit {r.returncode}):\n{self.up_output}")
        vals = dict(re.findall(r"^export (\w+)=(.*)$", (state_dir / "env.sh").read_text(), re.M))
        self.netns = vals["OSBOX_NETNS"]
        self.transport_url = vals["OSBOX_TRANSPORT_URL"]
        self.os_env = {k: v for k, v in vals.items() if k.startswith("OS_")}

    def openstack(self, *args, timeout=300):
        """The real openstack CLI in the osbox's netns, as admin; JSON
        output is decoded."""
        r = run(OSBOX / "openstack", *args, env=self.env, timeout=timeout)
        return json.loads(r.stdout) if "json" in args else r.stdout

    def python(self, script, *args, timeout=120):
        """A python script in the osbox's netns with the admin credentials."""
        return run("ip", "netns", "exec", self.netns, PYTHON, script, *args,
                   env=dict(os.environ, **self.os_env), timeout=timeout)

    def compute_dir(self, host):
        return self.dir / "state" / host

    def close(self):
        subprocess.run([str(OSBOX / "down.sh")], env=self.env, capture_output=True, timeout=120)


class Agent:
    """A shareless agent on one host: the packaged binary in the host's
    netns, with no libvirtd there ([libvirt] uri empty: Nova's fake
    driver), finding its peer through Nova."""

    def __init__(self, installed, osbox, work, host, ns, addr, chap, psk):
        self.installed, self.host, self.ns, self.addr = installed, host, ns, addr
        self.work = work
        work.mkdir(parents=True)
        self.socket = work / "agent.sock"
        self.store = work / "store"
        (work / "chap").write_text(chap + "\n")
        (work / "psk").write_text(psk + "\n")
        (work / "keystone").write_text(osbox.os_env["OS_PASSWORD"] + "\n")
        for f in ("chap", "psk", "keystone"):
            (work / f).chmod(0o600)
        self.conf = work / "shareless.conf"
        self.conf.write_text(f"""[DEFAULT]
host = {host}
state_path = {work}/state
log_level = debug

[amqp]
transport_url = {osbox.transport_url}
reconnect_min = 200ms
reconnect_max = 2s

[iscsi]
listen = 127.0.0.1, {addr}
port = {ISCSI_PORT}
chap_user = {CHAP_USER}
chap_secret_file = {work}/chap

[store]
path = {self.store}

[libvirt]
# Nova's fake virt driver: no libvirtd on this host
uri =

[openstack]
auth_url = {osbox.os_env["OS_AUTH_URL"]}
username = {osbox.os_env["OS_USERNAME"]}
password_file = {work}/keystone
project_name = {osbox.os_env["OS_PROJECT_NAME"]}
region_name = RegionOne
interface = public

[api]
listen = {addr}:{API_PORT}
psk_file = {work}/psk
socket = {self.socket}
metrics_listen = {METRICS}

[replicator]
grain = {GRAIN}
""")
        self.log_path = work / "agent.log"
        self.log = open(self.log_path, "ab")
        # ip netns exec execs the agent: the process we hold is the agent.
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, str(installed.bin), "agent", "--config-file",
                                      str(self.conf)], stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.cli("status").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"agent on {host} did not answer:\n{self.log_text()}")
            time.sleep(0.2)

    def cli(self, command, *args, timeout=60):
        return self.installed.run(command, "--socket", str(self.socket), *args, timeout=timeout)

    def status(self):
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def disk(self, instance, name="disk"):
        return next((d for d in self.status()["disks"] if d["instance"] == instance and d["disk"] == name), None)

    def migration(self, instance, role):
        return next((m for m in self.status()["migrations"] if m["instance"] == instance and m["role"] == role), None)

    def image(self, instance, name="disk"):
        """The managed disk's raw image in this host's store."""
        return self.store / f"{instance}.{name}" / "image"

    def metric(self, series):
        r = run("ip", "netns", "exec", self.ns, "curl", "-sf", f"http://{METRICS}/metrics")
        for line in r.stdout.splitlines():
            if line.startswith(series + " "):
                return int(float(line.split()[-1]))
        raise AssertionError(f"{series} not in the metrics of {self.host}")

    def lun(self, instance, name="disk"):
        """The managed disk as QEMU on this host reaches it."""
        chap = (self.work / "chap").read_text().strip()
        return f"iscsi://{CHAP_USER}%{chap}@127.0.0.1:{ISCSI_PORT}/iqn.2026-11.io.shareless:{instance}.{name}/0"

    def qemu_io(self, instance, *commands):
        """qemu-io on this host, through QEMU's iSCSI initiator."""
        args = ["ip", "netns", "exec", self.ns, "qemu-io", "-f", "raw"]
        for c in commands:
            args += ["-c", c]
        return run(*args, self.lun(instance))

    def notifications(self):
        """The notifications this agent consumed, from its debug log."""
        seen = []
        for line in self.log_text().splitlines():
            if "msg=notification " not in line:
                continue
            kv = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
            seen.append({k: v.strip('"') for k, v in kv.items()})
        return seen

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def close(self):
        """Stops the agent as systemd does; returns its exit status."""
        status = stop(self.proc, signal.SIGTERM, timeout=30)
        self.log.close()
        return status


def new_secret(nbytes):
    return secrets.token_hex(nbytes)


def have(*commands):
    return all(shutil.which(c) for c in commands)


def debian_openstack():
    return subprocess.run([PYTHON, "-c", "import nova, cinder, keystone, placement, keystoneclient, novaclient"],
                          capture_output=True).returncode == 0


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def eventually(what, timeout, check, interval=0.5):
    """Waits until check() returns (True, _); fails with its last detail."""
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = check()
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s: {detail}")
        time.sleep(interval)
