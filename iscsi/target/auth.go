package target

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/pdu"
)

type authState int

const (
	authNone      authState = iota // no AuthMethod agreed yet
	authWaitAlg                    // AuthMethod=CHAP agreed, waiting for CHAP_A
	authWaitReply                  // challenge sent, waiting for CHAP_N/CHAP_R
	authDone                       // authenticated (or AuthMethod=None allowed)
	authRejected                   // no acceptable AuthMethod offered
)

// authenticator is the security stage of login (RFC 7143 §6.3.2,
// §12.1.3): CHAP with MD5, one-way or mutual, or no authentication when
// the target was explicitly configured so.
type authenticator struct {
	cfg       *Config
	state     authState
	id        byte
	challenge []byte
}

func (a *authenticator) done() bool {
	return a.state == authDone || a.cfg.NoAuth && a.state == authNone
}

func (a *authenticator) inProgress() bool {
	return a.state == authWaitAlg || a.state == authWaitReply
}

func authFailure(format string, a ...any) *loginError {
	return initiatorError(pdu.DetailAuthFailure, format, a...)
}

// chooseMethod answers the initiator's AuthMethod list (§12.1): CHAP when
// the target has credentials, None only when it runs without
// authentication.
func (a *authenticator) chooseMethod(offered string) string {
	for _, m := range strings.Split(offered, ",") {
		switch {
		case m == "CHAP" && a.cfg.CHAP != nil:
			a.state = authWaitAlg
			return m
		case m == "None" && a.cfg.NoAuth:
			a.state = authDone
			return m
		}
	}
	a.state = authRejected
	return "Reject"
}

// step handles the CHAP_* keys of one Login Request.
func (a *authenticator) step(keys map[string]string) ([]pdu.KeyValue, error) {
	switch a.state {
	case authWaitAlg:
		algs, ok := keys["CHAP_A"]
		if !ok || len(keys) != 1 {
			return nil, authFailure("expected CHAP_A")
		}
		for _, alg := range strings.Split(algs, ",") {
			if alg == chap.AlgorithmMD5 {
				id, c, err := chap.NewChallenge()
				if err != nil {
					return nil, &loginError{pdu.LoginTargetError, pdu.DetailTargetError, err}
				}
				a.id, a.challenge, a.state = id, c, authWaitReply
				return []pdu.KeyValue{
					{Key: "CHAP_A", Value: chap.AlgorithmMD5},
					{Key: "CHAP_I", Value: strconv.Itoa(int(id))},
					{Key: "CHAP_C", Value: chap.EncodeBinary(c)},
				}, nil
			}
		}
		return nil, authFailure("no supported CHAP_A in %q", algs)
	case authWaitReply:
		return a.verify(keys)
	}
	return nil, authFailure("unexpected CHAP keys")
}

// verify checks the initiator's response and, for mutual CHAP, answers
// the initiator's challenge.
func (a *authenticator) verify(keys map[string]string) ([]pdu.KeyValue, error) {
	name, okN := keys["CHAP_N"]
	r, okR := keys["CHAP_R"]
	if !okN || !okR {
		return nil, authFailure("CHAP_N and CHAP_R required")
	}
	resp, err := chap.DecodeBinary(r)
	if err != nil {
		return nil, authFailure("CHAP_R: %v", err)
	}
	want := a.cfg.CHAP
	if name != want.User || !chap.Verify(a.id, []byte(want.Secret.Reveal()), a.challenge, resp) {
		return nil, authFailure("CHAP response of user %q does not match", name)
	}
	ci, okI := keys["CHAP_I"]
	cc, okC := keys["CHAP_C"]
	if !okI && !okC {
		if len(keys) != 2 {
			return nil, authFailure("unexpected CHAP keys with CHAP_R")
		}
		a.state = authDone
		return nil, nil
	}
	// Mutual CHAP: the initiator authenticates the target.
	if !okI || !okC {
		return nil, authFailure("mutual CHAP needs both CHAP_I and CHAP_C")
	}
	if a.cfg.MutualCHAP == nil {
		return nil, authFailure("initiator asked for mutual CHAP, which this target is not configured for")
	}
	id, err := strconv.ParseUint(ci, 10, 8)
	if err != nil {
		return nil, authFailure("CHAP_I %q", ci)
	}
	c, err := chap.DecodeBinary(cc)
	if err != nil {
		return nil, authFailure("CHAP_C: %v", err)
	}
	if len(c) == 0 || len(c) > 1024 {
		return nil, authFailure("CHAP_C of %d bytes", len(c))
	}
	if bytes.Equal(c, a.challenge) {
		// §12.1.3: a reflected challenge must be refused.
		return nil, authFailure("initiator reflected the target's challenge")
	}
	a.state = authDone
	return []pdu.KeyValue{
		{Key: "CHAP_N", Value: a.cfg.MutualCHAP.User},
		{Key: "CHAP_R", Value: chap.EncodeBinary(chap.Response(byte(id), []byte(a.cfg.MutualCHAP.Secret.Reveal()), c))},
	}, nil
}
