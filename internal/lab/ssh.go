package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"time"
)

// The lab's ssh (Options.SSH) is what Nova's libvirt driver needs between
// computes to cold-migrate or resize: `ssh -o BatchMode=yes HOST mkdir -p
// DIR` and `scp FILE HOST:FILE` as root. Each host runs an sshd of the
// lab's own on its lab address, with a host key made for this lab, and
// sees its own /root/.ssh (a bind mount of DIR/ssh in its mount
// namespace: OpenSSH takes root's home from passwd, not $HOME) holding
// its client key, every host's client key as authorized_keys and every
// host's host key as known_hosts, so that root on any host reaches any
// other without a question. The machine's own /root/.ssh is unseen inside
// the hosts, and untouched (created, empty, if it is missing).

// sshDir is where the host's /root/.ssh lives, from outside.
func (h *Host) sshDir() string { return filepath.Join(h.Dir, "ssh") }

// sshdDir holds the host's sshd configuration and host key.
func (h *Host) sshdDir() string { return filepath.Join(h.Dir, "sshd") }

// rootSSHDir is root's ~/.ssh as OpenSSH finds it, which the anchor
// covers; it is created (empty, 0700, as ssh itself would) if missing, to
// have a place to mount on.
func rootSSHDir() (string, error) {
	root, err := user.LookupId("0")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root.HomeDir, ".ssh")
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return "", err
	}
	return dir, nil
}

// startSSH makes every host's keys, then starts the hosts' sshds and
// waits until each accepts connections on its lab address.
func (l *Lab) startSSH() error {
	// sshd refuses to start without its privilege separation directory,
	// which its own service unit creates on the machine's /run.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}
	var authorized, known []byte
	for _, h := range l.Hosts {
		for _, d := range []string{h.sshDir(), h.sshdDir()} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		client, err := keygen(filepath.Join(h.sshDir(), "id_ed25519"), "root@"+h.Hostname)
		if err != nil {
			return err
		}
		hostKey, err := keygen(filepath.Join(h.sshdDir(), "ssh_host_ed25519_key"), h.Hostname)
		if err != nil {
			return err
		}
		authorized = append(authorized, client...)
		known = append(known, []byte(h.Addr.String()+" ")...)
		known = append(known, hostKey...)
	}
	sshd, err := exec.LookPath("sshd") // sshd re-executes itself, by an absolute path only
	if err != nil {
		return err
	}
	for _, h := range l.Hosts {
		for name, content := range map[string][]byte{"authorized_keys": authorized, "known_hosts": known} {
			if err := os.WriteFile(filepath.Join(h.sshDir(), name), content, 0o600); err != nil {
				return err
			}
		}
		// Root by key only, no PAM (no login session to open in a
		// namespace), SFTP in the daemon (scp speaks SFTP), no pid file.
		conf := filepath.Join(h.sshdDir(), "sshd_config")
		body := fmt.Sprintf(`ListenAddress %s:22
HostKey %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
Subsystem sftp internal-sftp
`, h.Addr, filepath.Join(h.sshdDir(), "ssh_host_ed25519_key"))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return err
		}
		p, err := h.Spawn(sshd, "-D", "-e", "-f", conf)
		if err != nil {
			return err
		}
		err = waitFor(10*time.Second, 20*time.Millisecond, func() (bool, error) {
			select {
			case <-p.Exited():
				return false, fmt.Errorf("exited: %v", p.cmd.ProcessState)
			default:
			}
			c, err := h.Dial(context.Background(), "tcp", net.JoinHostPort(h.Addr.String(), "22"))
			if err != nil {
				return false, nil
			}
			return true, c.Close()
		})
		if err != nil {
			return fmt.Errorf("host %s: sshd (pid %d): %v\n  %s", h.Name, p.Pid(), err, tail(p.Log, 10))
		}
	}
	return nil
}

// keygen makes an ed25519 key pair at path (and path.pub) and returns the
// public key's line.
func keygen(path, comment string) ([]byte, error) {
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return os.ReadFile(path + ".pub")
}
