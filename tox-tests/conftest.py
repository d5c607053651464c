"""Fixtures of the functional tests: the packaged shareless, a private
RabbitMQ broker, the OpenStack-in-a-box on a lab network (cloud.py),
free ports, and the rules of make test.

Under make test (SHARELESS_STRICT=1) a missing component fails the test
instead of skipping it, and a run that skipped anything fails. A run that
collected no test (pytest's exit status 5) fails too, whatever the options.
Processes started here are stopped by their process group, never by name.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRICT = os.environ.get("SHARELESS_STRICT") == "1"


def need(what, ok, hint="scripts/deps.sh installs it"):
    """Skips, or under make test fails, when a component is missing."""
    if ok:
        return
    msg = f"{what} missing ({hint})"
    if STRICT:
        pytest.fail(msg)
    pytest.skip(msg)


# What the tests measured and saw: printed at the end of the run and
# appended to SHARELESS_REPORT (make test prints that file at its end).
REPORT = []


def report(line):
    REPORT.append(line)
    path = os.environ.get("SHARELESS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("what the functional tests measured and saw")
        for line in REPORT:
            terminalreporter.write_line(line)


def pytest_collection_finish(session):
    if not session.items:
        pytest.exit("no functional test was collected or selected", returncode=1)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if STRICT and skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"SHARELESS_STRICT=1: {len(skipped)} skipped test(s) count as failures")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout}s")


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """Stops proc's process group: sig, then SIGKILL after timeout."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class Installed:
    """A make install staged under a directory (DESTDIR)."""

    def __init__(self, destdir):
        self.destdir = destdir
        self.bin = destdir / "usr/local/bin/shareless"
        self.sample = destdir / "etc/shareless/shareless.conf.sample"
        self.unit = destdir / "usr/local/lib/systemd/system/shareless-agent.service"
        self.hook = destdir / "etc/libvirt/hooks/qemu.d/shareless"
        # the Cinder driver wrapper's package, where Debian's python3 finds it
        site = subprocess.run(["/usr/bin/python3", "-c", "import sysconfig; print(sysconfig.get_path('purelib', 'posix_local'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        self.pysite = destdir / site.lstrip("/")

    def run(self, *args, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run([str(self.bin), *args], **kw)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """make install DESTDIR=... of this tree: what an operator installs."""
    need("go", shutil.which("go"), "Go 1.26")
    destdir = tmp_path_factory.mktemp("destdir")
    subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "-s", "install", f"DESTDIR={destdir}"],
                   check=True, capture_output=True, text=True, timeout=600)
    return Installed(destdir)


class Broker:
    """A private RabbitMQ: own node name, ports, data, cookie and epmd."""

    SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self, workdir):
        self.dir = workdir
        self.port, dist, epmd = free_port(), free_port(), free_port()
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (workdir / "enabled_plugins").write_text("[].\n")
        for d in ("home", "mnesia", "log"):
            (workdir / d).mkdir()
        self.env = dict(os.environ,
                        HOME=str(workdir / "home"),
                        RABBITMQ_CONF_ENV_FILE=str(workdir / "rabbitmq-env.conf"),
                        RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq.conf"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "enabled_plugins"),
                        RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
                        RABBITMQ_LOG_BASE=str(workdir / "log"),
                        RABBITMQ_PID_FILE=str(workdir / "rabbit.pid"),
                        RABBITMQ_NODENAME=f"shareless-tox-{self.port}@localhost",
                        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_DIST_PORT=str(dist),
                        ERL_EPMD_PORT=str(epmd),
                        ERL_EPMD_ADDRESS="127.0.0.1",
                        # exec the VM, so that the process we hold is the broker
                        RUNNING_UNDER_SYSTEMD="true")
        self.epmd = subprocess.Popen(["epmd", "-port", str(epmd), "-address", "127.0.0.1"],
                                     env=self.env, start_new_session=True)
        wait_port(epmd, 10, self.epmd)
        self.log = open(workdir / "log" / "console.log", "ab")
        self.proc = subprocess.Popen([self.SCRIPT], env=self.env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        try:
            wait_port(self.port, 90, self.proc)
        except Exception:
            self.close()
            raise

    # oslo.messaging's form, as in nova.conf
    def transport_url(self, password=True):
        return f"rabbit://guest{':guest' if password else ''}@127.0.0.1:{self.port}/"

    def close(self):
        stop(self.proc)
        stop(self.epmd, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    need("rabbitmq-server", Path(Broker.SCRIPT).exists() and shutil.which("epmd"))
    b = Broker(tmp_path_factory.mktemp("rabbit"))
    yield b
    b.close()


class OpenStackCloud:
    """The osbox on a lab network with two compute hosts (cloud.py), and
    Method A's array as its Cinder backend "array" (fcarray.py)."""

    def __init__(self, net, osbox, hosts, array):
        self.net, self.osbox, self.hosts, self.array = net, osbox, hosts, array


@pytest.fixture(scope="session")
def openstack_cloud(installed, tmp_path_factory):
    """Real OpenStack (tox-tests/osbox: Keystone, Nova with the fake
    computes compute1 and compute2, Cinder with the fake backend and
    Method A's array, RabbitMQ) on a bridge that two host namespaces join,
    brought up once per test session."""
    import cloud  # it imports this module
    import fcarray

    need("root", os.geteuid() == 0, "the osbox and the lab network need root")
    need("ip, curl, qemu-io, tgtd", cloud.have("ip", "curl", "qemu-io", "tgtd", "tgtadm"))
    need("Debian's OpenStack Zed packages",
         cloud.debian_openstack() and cloud.have("mariadb-install-db", "openstack", "bc"))
    array = fcarray.Array(tmp_path_factory.mktemp("array"), installed)
    net = cloud.Network(f"shl{os.getpid()}")
    try:
        hosts = {}
        for n in (1, 2):
            addr = f"{cloud.SUBNET}.{n}"
            hosts[f"compute{n}"] = (net.add_host(f"h{n}", addr), addr)
        box = cloud.Osbox(net, ROOT / ".work/tox/osbox", [addr for _, addr in hosts.values()], array.osbox_env())
    except Exception:
        net.close()
        array.close()
        raise
    report(f"osbox up in {box.up_seconds:.1f} s (netns {box.netns}, logs in {box.dir}/logs):")
    for line in box.up_output.splitlines():
        if line.startswith("osbox: ["):
            report("  " + line)
    yield OpenStackCloud(net, box, hosts, array)
    box.close()
    net.close()
    array.close()
