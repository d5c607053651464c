"""What make install gives an operator: files, modes, a systemd unit that
systemd accepts, and a binary that explains itself."""
import shutil
import subprocess

from conftest import ROOT, need


def test_make_install_layout(installed):
    want = {
        installed.bin: 0o755,
        installed.sample: 0o644,
        installed.unit: 0o644,
        installed.hook: 0o755,
        installed.destdir / "usr/share/doc/shareless/README.md": 0o644,
        installed.destdir / "usr/share/doc/shareless/cinder-driver.md": 0o644,
        installed.pysite / "shareless_cinder/__init__.py": 0o644,
        installed.pysite / "shareless_cinder/driver.py": 0o644,
    }
    for path, mode in want.items():
        assert path.is_file(), path
        assert path.stat().st_mode & 0o777 == mode, f"{path}: {oct(path.stat().st_mode & 0o777)}"
    # make install never writes the live configuration.
    assert not (installed.destdir / "etc/shareless/shareless.conf").exists()
    assert installed.sample.read_text() == (ROOT / "etc/shareless.conf.sample").read_text()


def test_hook_wrapper(installed):
    text = installed.hook.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert text.rstrip().splitlines()[-1] == 'exec /usr/local/bin/shareless hook qemu "$@"'
    assert subprocess.run(["sh", "-n", str(installed.hook)]).returncode == 0


def test_unit_verifies(installed, tmp_path):
    """systemd-analyze verify finds nothing to say about the unit, with its
    ExecStart pointed at the staged binary (verify checks that it exists)."""
    need("systemd-analyze", shutil.which("systemd-analyze"), "systemd")
    text = installed.unit.read_text()
    lines = text.splitlines()
    assert "ExecStart=/usr/local/bin/shareless agent --config-file /etc/shareless/shareless.conf" in lines
    assert "StandardError=journal" in lines and "SyslogIdentifier=shareless-agent" in lines
    assert "RestartPreventExitStatus=2" in lines
    unit = tmp_path / "shareless-agent.service"
    unit.write_text(text.replace("/usr/local/bin/shareless", str(installed.bin)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_help_pages(installed):
    listing = installed.run("help")
    assert listing.returncode == 0
    commands = [l.split()[0] for l in listing.stdout.splitlines() if l.startswith("  ")]
    assert {"agent", "hook", "status", "help"} <= set(commands)
    for cmd in commands:
        r = installed.run("help", cmd)
        assert r.returncode == 0, r.stderr
        titles = [l for l in r.stdout.splitlines() if l and not l.startswith(" ")]
        assert titles == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES"], cmd


def test_sample_config_is_refused_with_the_option_to_set(installed, tmp_path):
    """The sample as installed, every option commented out: the agent
    refuses it in one line naming what is missing, with exit status 2
    (which the unit does not restart on)."""
    r = installed.run("agent", "--config-file", str(installed.sample))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"shareless agent: {installed.sample}: [amqp] transport_url: required"], r.stderr
