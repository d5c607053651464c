package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/shareless/shareless/virt"
)

// SecretUsage is the usage name of the libvirt secret (usage type iscsi)
// that holds the CHAP password of managed disks. Disk XML names it by
// usage, <auth username='[iscsi] chap_user'><secret type='iscsi'
// usage='shareless-chap'/></auth>, so the same XML works on every host:
// each agent defines it in its own libvirtd.
const SecretUsage = "shareless-chap"

// Backoff between attempts to reach libvirtd and define the secret.
const (
	libvirtRetryMin = time.Second
	libvirtRetryMax = 30 * time.Second
)

// errLibvirtDown is what adoption answers before the agent has reached
// libvirtd.
var errLibvirtDown = errors.New("not connected to the local libvirtd yet (see the agent's log)")

// libvirtLink is the agent's connection to the local libvirtd. It is made
// in the background: the agent must start, export its disks and answer the
// hook when libvirtd is down or not installed yet, and the hook never
// needs libvirt. Once connected, virt.Conn reconnects by itself.
type libvirtLink struct {
	mu   sync.Mutex
	conn *virt.Conn // nil until connected and the secret is defined
}

// get returns the connection, or errLibvirtDown.
func (l *libvirtLink) get() (*virt.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil, errLibvirtDown
	}
	return l.conn, nil
}

// runLibvirt connects to [libvirt] uri and defines the CHAP secret,
// retrying with backoff until both are done, then holds the connection
// until ctx ends. An empty uri means this host runs no libvirtd.
func (a *Agent) runLibvirt(ctx context.Context) error {
	if a.cfg.Libvirt.URI == "" {
		a.log.Info("no libvirtd on this host ([libvirt] uri is empty): disk files are adopted with shareless adopt --file")
		return nil
	}
	wait := libvirtRetryMin
	for {
		c, err := a.connectLibvirt(ctx)
		if err == nil {
			a.libvirt.mu.Lock()
			a.libvirt.conn = c
			a.libvirt.mu.Unlock()
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				a.followDomains(ctx, c)
			}()
			<-ctx.Done()
			a.libvirt.mu.Lock()
			a.libvirt.conn = nil
			a.libvirt.mu.Unlock()
			err := c.Close()
			<-kept
			return err
		}
		a.log.Warn("libvirtd not ready; retrying", "uri", a.cfg.Libvirt.URI, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-a.clock.After(wait):
		}
		wait = min(2*wait, libvirtRetryMax)
	}
}

// connectLibvirt connects and, when CHAP is configured, defines the
// secret QEMU logs in to managed disks with and sets its value, and the
// secrets of the arrays' iSCSI targets (Method A).
func (a *Agent) connectLibvirt(ctx context.Context) (*virt.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := virt.Connect(cctx, virt.Config{URI: a.cfg.Libvirt.URI, Logger: a.log})
	if err != nil {
		return nil, err
	}
	if a.chap != nil {
		err = a.defineSecret(cctx, c)
	}
	if err == nil {
		err = a.defineVolumeSecrets(cctx, c)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (a *Agent) defineSecret(ctx context.Context, c *virt.Conn) error {
	s, err := c.DefineISCSISecret(ctx, SecretUsage, "CHAP password of the shareless managed disks")
	if err != nil {
		return err
	}
	return c.SetSecretValue(ctx, s, []byte(a.cfg.ISCSI.CHAPSecretFile.Secret.Reveal()))
}
