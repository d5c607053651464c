"""The packaged agent on one host, as an operator runs it: the installed
binary with the configuration the devstack plugin writes, a real RabbitMQ
broker, Nova's own notifier library (oslo.messaging, as nova-compute
sends), and the CLI and hook talking to the agent over its socket.

The tests run in file order against one agent; the last one stops it.
"""
import json
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, free_port, need, stop

SAMPLES = ROOT / "testdata/nova-notifications/resolved"
EMITTER = ROOT / "internal/novaemit/emit_nova.py"
PYTHON = "/usr/bin/python3"  # Debian's, with python3-oslo.messaging
HOST = "compute1"

# nova.conf as devstack's lib/nova leaves it, for what the plugin reads.
NOVA_CONF = f"""[DEFAULT]
host = {HOST}

[notifications]
notification_format = both

[oslo_messaging_notifications]
driver = messagingv2
"""


def devstack_post_config(work, broker, env):
    """Runs plugin.sh's post-config phase as stack.sh would, with the
    recorded devstack contract of devstack/testdata/contract.sh; the
    broker's URL comes from get_notification_url, redefined as an RPC
    backend plugin would (devstack's own names port 5672)."""
    nova_conf = work / "nova.conf"
    nova_conf.write_text(NOVA_CONF)
    env = dict(env, PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/root"),
               CONTRACT_LOG=str(work / "contract.log"), CONTRACT_ROOT=str(work),
               DEST=str(work / "opt"), DATA_DIR=str(work / "data"), NOVA_CONF=str(nova_conf),
               HOST_IP="127.0.0.1", SERVICE_HOST="127.0.0.1", SERVICE_PASSWORD="tox-service-pw",
               SERVICE_PROJECT_NAME="service", SERVICE_DOMAIN_NAME="Default", REGION_NAME="RegionOne",
               KEYSTONE_SERVICE_URI="http://127.0.0.1/identity", ENABLED_SERVICES="n-cpu",
               BROKER_URL=broker.transport_url(), SHARELESS_DIR=str(ROOT),
               SHARELESS_CONF_DIR=str(work / "etc"), SHARELESS_USER=pwd.getpwuid(os.getuid()).pw_name,
               SHARELESS_LOG_LEVEL="debug")
    script = """set -o errexit -o nounset -o pipefail
source devstack/testdata/contract.sh
function get_notification_url { echo "$BROKER_URL"; }
source devstack/settings
source devstack/override-defaults
source devstack/plugin.sh stack post-config
"""
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return work / "etc/shareless.conf"


class Agent:
    def __init__(self, installed, broker, work):
        self.installed = installed
        self.work = work
        self.socket = work / "run/agent.sock"
        self.state = work / "data/shareless"
        self.metrics_port = free_port()
        self.conf = devstack_post_config(work, broker, {
            "SHARELESS_SOCKET": str(self.socket),
            "SHARELESS_ISCSI_PORT": str(free_port()),
            "SHARELESS_API_LISTEN": f"127.0.0.1:{free_port()}",
            "SHARELESS_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
        })
        self.log_path = work / "agent.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(installed.bin), "agent", "--config-file", str(self.conf)],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.status().returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop(self.proc)
                raise RuntimeError(f"agent did not answer on {self.socket}:\n{self.log_text()}")
            time.sleep(0.2)

    def status(self, *args):
        return self.installed.run("status", "--socket", str(self.socket), *args, timeout=30)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def counter(self, name, **labels):
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        m = re.search(rf"^{name}{{{re.escape(sel)}}} (\d+)$" if sel else rf"^{name} (\d+)$",
                      self.metrics(), re.M)
        assert m, f"{name}{{{sel}}} not in /metrics"
        return int(m.group(1))

    def log_text(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def agent(installed, broker, tmp_path_factory):
    a = Agent(installed, broker, tmp_path_factory.mktemp("agent"))
    yield a
    stop(a.proc)
    a.log.close()


def emit(broker, *lines):
    """Sends Nova versioned notifications with Nova's notifier setup."""
    plan = "".join(json.dumps(l) + "\n" for l in lines)
    r = subprocess.run([PYTHON, str(EMITTER), broker.transport_url(), "messagingv2"],
                       input=plan, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"sent {len(lines)}", r.stderr


def test_status_says_safe_to_power_off(agent):
    r = agent.status("--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["host"] == HOST and st["safe_to_power_off"] is True
    assert not st.get("copying_from_here") and not st.get("migrations")
    text = agent.status()
    assert "safe to power off: yes" in text.stdout
    assert agent.counter("shareless_safe_to_power_off") == 1


def test_nova_notifications_reach_the_agent(agent, broker):
    """Nova's notifier, the broker and the agent's queue binding: live
    migration events of other hosts arrive and are counted as ignored."""
    need("python3-oslo.messaging",
         subprocess.run([PYTHON, "-c", "import oslo_messaging"], capture_output=True).returncode == 0)

    def other(i):
        return {"sample": str(SAMPLES / "instance-live_migration_pre-start.json"),
                "publisher_id": "nova-compute:compute9", "host": "compute8",
                "uuid": f"00000000-0000-4000-8000-{i:012d}"}

    # The agent binds its queue once it is connected; until then Nova's
    # messages go nowhere, as they would in a cloud.
    before = agent.counter("shareless_notifications_total", outcome="ignored")
    deadline = time.monotonic() + 30
    i = 0
    while agent.counter("shareless_notifications_total", outcome="ignored") == before:
        assert time.monotonic() < deadline, f"no notification counted:\n{agent.log_text()}"
        emit(broker, other(i))
        i += 1
        time.sleep(1)
    # Now every one of a batch is counted, once.
    time.sleep(1)
    start = agent.counter("shareless_notifications_total", outcome="ignored")
    n = 5
    emit(broker, *[other(100 + k) for k in range(n)])
    deadline = time.monotonic() + 20
    while agent.counter("shareless_notifications_total", outcome="ignored") < start + n:
        assert time.monotonic() < deadline, agent.metrics()
        time.sleep(0.2)
    time.sleep(1)
    assert agent.counter("shareless_notifications_total", outcome="ignored") == start + n
    st = json.loads(agent.status("--json").stdout)
    assert st["safe_to_power_off"] is True and not st.get("migrations")


def test_hook_through_the_running_agent(agent):
    """libvirt's calls for a Nova guest without managed disks: the agent
    answers and the hook lets libvirt go on, printing nothing (libvirt
    keeps its XML). Not "migrate begin": without Nova's
    live_migration_pre.start first, the agent holds it for hook_wait and
    refuses it (replicas not ready), by design of the migration machine."""
    xml = "<domain type='kvm'><name>instance-00000001</name>" \
          "<uuid>00000000-0000-4000-8000-000000000001</uuid><devices><disk type='file' device='disk'>" \
          "<source file='/var/lib/nova/instances/x/disk'/><target dev='vda'/></disk></devices></domain>"
    for op, sub in (("prepare", "begin"), ("start", "begin"), ("started", "begin"), ("release", "end")):
        r = agent.installed.run("hook", "--socket", str(agent.socket), "--state-dir", str(agent.state),
                                "qemu", "instance-00000001", op, sub, "-", input=xml)
        assert r.returncode == 0 and r.stdout == "", (op, sub, r.stderr)


def test_second_agent_on_the_same_state_is_refused(agent):
    r = agent.installed.run("agent", "--config-file", str(agent.conf), timeout=30)
    assert r.returncode != 0
    assert "in use by another agent" in r.stderr, r.stderr


def test_sigterm_stops_the_agent_cleanly(agent):
    assert stop(agent.proc, signal.SIGTERM, timeout=60) == 0, agent.log_text()
    assert "agent stopped" in agent.log_text()
    r = agent.status()
    assert r.returncode == 1 and r.stderr.strip(), r
