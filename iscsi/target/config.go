package target

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/scsi"
)

// Config describes one target: its name, its logical units, where it
// listens and who may log in.
type Config struct {
	// IQN is the target's iSCSI name (RFC 7143 §4.2.7).
	IQN string
	// Alias is an optional human-readable TargetAlias (§13.6).
	Alias string
	// LUNs are served as LUN 0, 1, ... in order.
	LUNs []LUN
	// Listen are the host:port addresses to bind; only these. Empty
	// means no listener: connections come through Target.ServeConn.
	Listen []string

	// CHAP is what an initiator must present (one-way CHAP, §12.1.3).
	// Authentication is required unless NoAuth is set.
	CHAP *chap.Credentials
	// MutualCHAP is what the target answers with when the initiator
	// authenticates the target too (mutual CHAP).
	MutualCHAP *chap.Credentials
	// NoAuth is the explicit opt-out: initiators log in without CHAP.
	NoAuth bool
	// AllowInitiators is the ACL: the initiator names (IQNs) allowed to
	// log in to this target and to see it in discovery. Empty allows every
	// initiator that authenticates.
	AllowInitiators []string

	// Operational holds the values this target prefers in login
	// negotiation; the zero value selects DefaultOperational.
	Operational *params.Operational
	// QueueDepth is the command window each session gets (MaxCmdSN =
	// ExpCmdSN + QueueDepth - 1 while nothing is outstanding); 0 means 128.
	QueueDepth uint32
	// MaxTransferLength bounds the data of one command; larger commands
	// are refused before anything is allocated. 0 means 32 MiB.
	MaxTransferLength uint32
	// NOPInterval is how long a connection may be silent before the
	// target pings it with a NOP-In; NOPTimeout is how long the target
	// then waits for any PDU before dropping the connection. 0 means 10 s
	// and 30 s.
	NOPInterval, NOPTimeout time.Duration
	// LoginTimeout bounds the whole login phase of a connection; 0 means
	// 15 s.
	LoginTimeout time.Duration

	// Logger receives the target's events; nil discards them. Secrets are
	// never logged.
	Logger *slog.Logger
}

// LUN is one logical unit: a device and its SCSI personality.
type LUN struct {
	Device blockdev.Device
	Unit   scsi.UnitConfig
}

// DefaultOperational is what the target offers and accepts unless Config
// says otherwise: large data segments and bursts, immediate and
// unsolicited data (ImmediateData=Yes, InitialR2T=No) so that a write
// normally costs no R2T round trip, digests accepted when the initiator
// asks, ErrorRecoveryLevel 0 and one connection per session.
func DefaultOperational() params.Operational {
	o := params.Defaults()
	o.HeaderDigest, o.DataDigest = true, true
	o.MaxConnections = 1
	o.InitialR2T = false
	o.ImmediateData = true
	o.MaxRecvDataSegmentLength = 256 << 10
	o.MaxBurstLength = 16 << 20
	o.FirstBurstLength = 256 << 10
	o.MaxOutstandingR2T = 8
	o.ErrorRecoveryLevel = 0
	return o
}

func (c *Config) validate() error {
	if err := checkIQN(c.IQN); err != nil {
		return err
	}
	if len(c.LUNs) == 0 {
		return errors.New("target has no LUNs")
	}
	if len(c.LUNs) > 16384 {
		return fmt.Errorf("%d LUNs exceed flat space addressing", len(c.LUNs))
	}
	for i, l := range c.LUNs {
		if l.Device == nil {
			return fmt.Errorf("LUN %d has no device", i)
		}
	}
	for _, a := range c.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("listen address %q: %w", a, err)
		}
	}
	switch {
	case c.NoAuth && c.CHAP != nil:
		return errors.New("NoAuth and CHAP credentials are mutually exclusive")
	case !c.NoAuth && c.CHAP == nil:
		return errors.New("authentication is required: give CHAP credentials or set NoAuth explicitly")
	case c.MutualCHAP != nil && c.CHAP == nil:
		return errors.New("mutual CHAP needs one-way CHAP credentials too")
	}
	for _, cr := range []*chap.Credentials{c.CHAP, c.MutualCHAP} {
		if cr != nil && (cr.User == "" || cr.Secret.IsZero()) {
			return errors.New("CHAP credentials need a user name and a secret")
		}
	}
	if c.CHAP != nil && c.MutualCHAP != nil && string([]byte(c.CHAP.Secret.Reveal())) == string([]byte(c.MutualCHAP.Secret.Reveal())) {
		// RFC 7143 §12.1.3: the two directions must use different secrets.
		return errors.New("mutual CHAP secret must differ from the initiator's secret")
	}
	for _, n := range c.AllowInitiators {
		if err := checkIQN(n); err != nil {
			return fmt.Errorf("allowed initiator: %w", err)
		}
	}
	return nil
}

// checkIQN does the light syntax check of an iSCSI name (RFC 7143 §4.2.7):
// an iqn., eui. or naa. name of at most 223 bytes without spaces.
func checkIQN(n string) error {
	ln := strings.ToLower(n)
	if len(n) == 0 || len(n) > 223 || strings.ContainsAny(n, " \t\x00") ||
		!(strings.HasPrefix(ln, "iqn.") || strings.HasPrefix(ln, "eui.") || strings.HasPrefix(ln, "naa.")) {
		return fmt.Errorf("%q is not an iSCSI name (iqn./eui./naa.)", n)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields defaulted.
func (c Config) withDefaults() Config {
	if c.Operational == nil {
		o := DefaultOperational()
		c.Operational = &o
	}
	o := *c.Operational
	o.MaxConnections, o.ErrorRecoveryLevel = 1, 0
	c.Operational = &o
	if c.QueueDepth == 0 {
		c.QueueDepth = 128
	}
	if c.MaxTransferLength == 0 {
		c.MaxTransferLength = 32 << 20
	}
	if c.NOPInterval == 0 {
		c.NOPInterval = 10 * time.Second
	}
	if c.NOPTimeout == 0 {
		c.NOPTimeout = 30 * time.Second
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.AllowInitiators = append([]string(nil), c.AllowInitiators...)
	return c
}

// allows reports whether the ACL lets initiator in (iSCSI names compare
// case-insensitively, §4.2.7.1).
func (c *Config) allows(initiator string) bool {
	if len(c.AllowInitiators) == 0 {
		return true
	}
	for _, n := range c.AllowInitiators {
		if strings.EqualFold(n, initiator) {
			return true
		}
	}
	return false
}
