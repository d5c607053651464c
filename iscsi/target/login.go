package target

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// loginOutcome is what the connection does after sending a login response.
type loginOutcome int

const (
	loginContinue loginOutcome = iota // wait for the next Login Request
	loginFailed                       // the response carries a failure status: close
	loginDone                         // full feature phase starts
)

// loginResult is what a successful login establishes.
type loginResult struct {
	initiator string
	isid      pdu.ISID
	discovery bool
	op        params.Operational
	// cmdSN is the CmdSN of the login, the session's first ExpCmdSN.
	cmdSN uint32
	// statSN is the StatSN of the final login response; the connection
	// continues from statSN+1.
	statSN uint32
}

// sessionRegistry is what login needs from the target: whether a TSIH
// names a live session, and to admit a new session (reinstating an older
// one with the same initiator and ISID, §6.3.5) and return its TSIH.
type sessionRegistry interface {
	sessionExists(tsih uint16) bool
	admit(r *loginResult) (tsih uint16, err error)
}

// loginError is a login failure with its status class and detail
// (§11.13.5).
type loginError struct {
	class, detail uint8
	err           error
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login status 0x%02x%02x: %v", e.class, e.detail, e.err)
}

func initiatorError(detail uint8, format string, a ...any) *loginError {
	return &loginError{pdu.LoginInitiatorError, detail, fmt.Errorf(format, a...)}
}

// login is the target's side of one connection's login phase (RFC 7143
// §6): a state machine that does no I/O. The connection feeds it each
// Login Request and sends back the response step returns.
type login struct {
	cfg *Config
	reg sessionRegistry

	started bool
	stage   uint8 // current stage (CSG)
	isid    pdu.ISID
	tsih    uint16
	statSN  uint32
	cmdSN   uint32

	initiator string
	discovery bool
	auth      authenticator
	op        params.Operational
	// negotiated holds the keys already answered: each key is negotiated
	// at most once per login (§6.2).
	negotiated map[string]bool
	declared   bool // our MaxRecvDataSegmentLength has been sent
	// partial collects the data of Login Requests sent with the C bit
	// (§11.12.2) until the last one.
	partial []byte
}

func newLogin(cfg *Config, reg sessionRegistry, firstStatSN uint32) *login {
	return &login{
		cfg: cfg, reg: reg, statSN: firstStatSN,
		op:         params.Defaults(),
		negotiated: make(map[string]bool),
		auth:       authenticator{cfg: cfg},
	}
}

// result is valid once step has returned loginDone.
func (l *login) result() *loginResult {
	return &loginResult{initiator: l.initiator, isid: l.isid, discovery: l.discovery,
		op: l.op, cmdSN: l.cmdSN, statSN: l.statSN - 1}
}

// step handles one Login Request and returns the response to send.
func (l *login) step(req *pdu.LoginRequest) (*pdu.LoginResponse, loginOutcome, error) {
	resp := &pdu.LoginResponse{
		CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, TSIH: req.TSIH, ITT: req.ITT,
		TargetSN: pdu.TargetSN{StatSN: l.statSN, ExpCmdSN: req.CmdSN, MaxCmdSN: req.CmdSN},
	}
	l.statSN++
	kvs, outcome, err := l.handle(req, resp)
	if err != nil {
		var le *loginError
		if !errors.As(err, &le) {
			le = &loginError{pdu.LoginTargetError, pdu.DetailTargetError, err}
		}
		resp.Transit, resp.Continue, resp.NSG, resp.Data = false, false, 0, nil
		resp.StatusClass, resp.StatusDetail = le.class, le.detail
		return resp, loginFailed, err
	}
	resp.Data = pdu.EncodeText(kvs)
	return resp, outcome, nil
}

func (l *login) handle(req *pdu.LoginRequest, resp *pdu.LoginResponse) ([]pdu.KeyValue, loginOutcome, error) {
	if err := l.checkHeader(req); err != nil {
		return nil, 0, err
	}
	if req.Continue {
		// §11.12.2: more text follows; answer with an empty response.
		if len(l.partial)+len(req.Data) > 64<<10 {
			return nil, 0, initiatorError(pdu.DetailInvalidRequest, "login text longer than 64 KiB")
		}
		l.partial = append(l.partial, req.Data...)
		resp.Transit = false
		return nil, loginContinue, nil
	}
	data := req.Data
	if l.partial != nil {
		data, l.partial = append(l.partial, req.Data...), nil
	}
	in, err := pdu.ParseText(data)
	if err != nil {
		return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%v", err)
	}
	first := !l.started
	l.started = true
	var out []pdu.KeyValue
	if first {
		if out, err = l.identify(req, in); err != nil {
			return nil, 0, err
		}
	}
	chapKeys := map[string]string{}
	for _, kv := range in {
		switch {
		case kv.Key == params.InitiatorName || kv.Key == params.SessionType ||
			kv.Key == params.TargetName || kv.Key == params.InitiatorAlias:
			if !first {
				return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%s sent again", kv.Key)
			}
		case kv.Key == params.AuthMethod || strings.HasPrefix(kv.Key, "CHAP_"):
			if l.stage != pdu.StageSecurity {
				return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%s outside the security stage", kv.Key)
			}
			if kv.Key == params.AuthMethod {
				out = append(out, pdu.KeyValue{Key: kv.Key, Value: l.auth.chooseMethod(kv.Value)})
				continue
			}
			if _, dup := chapKeys[kv.Key]; dup {
				return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%s sent twice", kv.Key)
			}
			chapKeys[kv.Key] = kv.Value
		case params.Negotiable(kv.Key):
			if l.negotiated[kv.Key] {
				return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%s negotiated twice", kv.Key)
			}
			l.negotiated[kv.Key] = true
			ans, err := l.op.Respond(kv.Key, kv.Value, l.cfg.Operational)
			if err != nil {
				return nil, 0, initiatorError(pdu.DetailInvalidRequest, "%v", err)
			}
			if kv.Key == params.MaxRecvDataSegmentLength {
				l.declared = true
			}
			out = append(out, pdu.KeyValue{Key: kv.Key, Value: ans})
		default:
			out = append(out, pdu.KeyValue{Key: kv.Key, Value: params.NotUnderstood})
		}
	}
	if len(chapKeys) > 0 {
		chapOut, err := l.auth.step(chapKeys)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, chapOut...)
	}
	return l.transit(req, resp, out)
}

// checkHeader enforces the header rules of §6 and §11.12.
func (l *login) checkHeader(req *pdu.LoginRequest) error {
	if !l.started {
		if req.VersionMin > 0 {
			return initiatorError(pdu.DetailUnsupportedVer, "version %d..%d not supported", req.VersionMin, req.VersionMax)
		}
		if req.CSG != pdu.StageSecurity && req.CSG != pdu.StageOperational {
			return initiatorError(pdu.DetailInvalidRequest, "login starts in stage %d", req.CSG)
		}
		l.stage, l.isid, l.tsih, l.cmdSN = req.CSG, req.ISID, req.TSIH, req.CmdSN
		return nil
	}
	switch {
	case req.CSG != l.stage:
		return initiatorError(pdu.DetailInvalidRequest, "login request in stage %d, current stage is %d", req.CSG, l.stage)
	case req.ISID != l.isid || req.TSIH != l.tsih:
		return initiatorError(pdu.DetailInvalidRequest, "ISID or TSIH changed during login")
	}
	return nil
}

// identify checks the declarations of the first Login Request (§6.3.1):
// who the initiator is, which session type and which target it wants,
// and whether it may have it.
func (l *login) identify(req *pdu.LoginRequest, in []pdu.KeyValue) ([]pdu.KeyValue, error) {
	get := func(k string) (string, bool) {
		for _, kv := range in {
			if kv.Key == k {
				return kv.Value, true
			}
		}
		return "", false
	}
	name, ok := get(params.InitiatorName)
	if !ok || name == "" {
		return nil, initiatorError(pdu.DetailMissingParam, "no InitiatorName")
	}
	l.initiator = name
	st, ok := get(params.SessionType)
	switch {
	case !ok || st == "Normal":
	case st == "Discovery":
		l.discovery = true
	default:
		return nil, initiatorError(pdu.DetailInvalidRequest, "SessionType %q", st)
	}
	if req.TSIH != 0 {
		if !l.reg.sessionExists(req.TSIH) {
			return nil, initiatorError(pdu.DetailNoSession, "TSIH %d was never issued or has ended", req.TSIH)
		}
		return nil, initiatorError(pdu.DetailTooManyConns, "session %d already has its one connection (MaxConnections=1)", req.TSIH)
	}
	var out []pdu.KeyValue
	if !l.discovery {
		tn, ok := get(params.TargetName)
		if !ok {
			return nil, initiatorError(pdu.DetailMissingParam, "normal session without TargetName")
		}
		if !strings.EqualFold(tn, l.cfg.IQN) {
			return nil, initiatorError(pdu.DetailNotFound, "target %q not served here", tn)
		}
		if !l.cfg.allows(name) {
			return nil, initiatorError(pdu.DetailForbidden, "initiator %q not in the target's ACL", name)
		}
		if l.cfg.Alias != "" {
			out = append(out, pdu.KeyValue{Key: params.TargetAlias, Value: l.cfg.Alias})
		}
		// §13.9: the target returns its portal group tag in the first
		// Login Response of a normal session.
		out = append(out, pdu.KeyValue{Key: params.TargetPortalGroupTag, Value: "1"})
	}
	return out, nil
}

// transit decides the stage transition (§6.3) and completes the
// response.
func (l *login) transit(req *pdu.LoginRequest, resp *pdu.LoginResponse, out []pdu.KeyValue) ([]pdu.KeyValue, loginOutcome, error) {
	resp.Transit = false
	if !req.Transit {
		return out, loginContinue, nil
	}
	if req.NSG <= req.CSG || req.NSG == 2 {
		return nil, 0, initiatorError(pdu.DetailInvalidRequest, "transit from stage %d to %d", req.CSG, req.NSG)
	}
	if !l.auth.done() {
		if l.stage == pdu.StageSecurity && l.auth.inProgress() {
			return out, loginContinue, nil // finish CHAP first (T=0)
		}
		return nil, 0, &loginError{pdu.LoginInitiatorError, pdu.DetailAuthFailure, errors.New("authentication required")}
	}
	resp.Transit = true
	if req.NSG == pdu.StageOperational {
		l.stage = pdu.StageOperational
		return out, loginContinue, nil
	}
	if !l.declared {
		// §13.12: declare what we accept even if the initiator did not ask.
		l.declared = true
		out = append(out, pdu.KeyValue{Key: params.MaxRecvDataSegmentLength, Value: fmt.Sprint(l.cfg.Operational.MaxRecvDataSegmentLength)})
	}
	l.op.MaxRecvDataSegmentLength = l.cfg.Operational.MaxRecvDataSegmentLength
	tsih, err := l.reg.admit(l.result())
	if err != nil {
		return nil, 0, &loginError{pdu.LoginTargetError, pdu.DetailOutOfResources, err}
	}
	resp.TSIH = tsih
	resp.MaxCmdSN = req.CmdSN + l.cfg.QueueDepth - 1
	return out, loginDone, nil
}
