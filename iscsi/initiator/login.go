package initiator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// ErrAuth is wrapped by login errors that come from authentication: the
// target refused our credentials, or (mutual CHAP) the target failed to
// prove that it knows its secret.
var ErrAuth = errors.New("iSCSI authentication failed")

// LoginError is a login refused by the target with a non-success status
// (§11.13.5).
type LoginError struct {
	Class, Detail uint8
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("login refused by target: %s (status 0x%02x%02x)", loginStatusText(e.Class, e.Detail), e.Class, e.Detail)
}

// Is makes errors.Is(err, ErrAuth) true for authentication failures.
func (e *LoginError) Is(target error) bool {
	return target == ErrAuth && e.Class == pdu.LoginInitiatorError &&
		(e.Detail == pdu.DetailAuthFailure || e.Detail == pdu.DetailForbidden)
}

func loginStatusText(class, detail uint8) string {
	switch class {
	case pdu.LoginRedirection:
		return "target moved (redirection is not supported)"
	case pdu.LoginInitiatorError:
		switch detail {
		case pdu.DetailAuthFailure:
			return "authentication failure"
		case pdu.DetailForbidden:
			return "initiator not authorized"
		case pdu.DetailNotFound:
			return "target not found"
		case pdu.DetailRemoved:
			return "target removed"
		case pdu.DetailMissingParam:
			return "missing parameter"
		case pdu.DetailNoSession:
			return "session does not exist"
		}
		return "initiator error"
	case pdu.LoginTargetError:
		if detail == pdu.DetailOutOfResources {
			return "target out of resources"
		}
		return "target error"
	}
	return "unknown status"
}

// Credentials for login. The zero value means no authentication.
type Credentials struct {
	// CHAP is what this initiator proves to the target (one-way CHAP);
	// empty User means AuthMethod=None.
	CHAP chap.Credentials
	// Mutual, when set, is what the target must prove to this initiator
	// (mutual CHAP, §12.1.3): its user name and secret.
	Mutual chap.Credentials
}

// loginParams is what one login needs besides the connection.
type loginParams struct {
	initiatorName string
	targetName    string // empty for discovery sessions
	discovery     bool
	isid          pdu.ISID
	tsih          uint16 // 0 for a new session or a reinstatement
	cmdSN         uint32
	creds         Credentials
	ours          params.Operational // our offer
	log           *slog.Logger
}

// loginResult is what a successful login leaves behind.
type loginResult struct {
	op                 params.Operational
	tsih               uint16
	expStatSN          uint32
	expCmdSN, maxCmdSN uint32
	targetAlias        string
}

// loginConn runs the login phase (§6.3, §5.3) on a fresh connection: the
// security stage with CHAP or AuthMethod=None, then the operational stage,
// until the target moves to full feature phase.
func loginConn(ctx context.Context, nc net.Conn, fr *pdu.Framer, lp *loginParams) (*loginResult, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	l := &login{nc: nc, fr: fr, lp: lp, res: &loginResult{op: params.Defaults()}}
	if err := l.run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("login: %w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	return l.res, nil
}

type login struct {
	nc    net.Conn
	fr    *pdu.Framer
	lp    *loginParams
	res   *loginResult
	itt   uint32
	first bool
	// chapID and chapChallenge are the mutual CHAP challenge we sent.
	chapID        byte
	chapChallenge []byte
}

func (l *login) run() error {
	l.first = true
	sec := []pdu.KeyValue{
		{Key: params.InitiatorName, Value: l.lp.initiatorName},
		{Key: params.SessionType, Value: map[bool]string{true: "Discovery", false: "Normal"}[l.lp.discovery]},
	}
	if !l.lp.discovery {
		sec = append(sec, pdu.KeyValue{Key: params.TargetName, Value: l.lp.targetName})
	}
	// With credentials we offer CHAP first and let a target that
	// needs no authentication pick None, as Linux does, unless we must
	// authenticate the target (mutual CHAP).
	offerCHAP := l.lp.creds.CHAP.User != ""
	mutual := l.lp.creds.Mutual.User != ""
	if mutual && !offerCHAP {
		return fmt.Errorf("mutual CHAP requires one-way CHAP credentials too: %w", ErrAuth)
	}
	methods := params.None
	if mutual {
		methods = "CHAP"
	} else if offerCHAP {
		methods = "CHAP," + params.None
	}
	sec = append(sec, pdu.KeyValue{Key: params.AuthMethod, Value: methods})
	resp, kvs, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, !offerCHAP, sec)
	if err != nil {
		return err
	}
	useCHAP, err := l.authMethod(kvs, methods)
	if err != nil {
		return err
	}
	if useCHAP {
		if resp, err = l.chap(); err != nil {
			return err
		}
	} else if !resp.Transit {
		// Having picked None, the target moves on with an empty request.
		if resp, _, err = l.exchange(pdu.StageSecurity, pdu.StageOperational, true, nil); err != nil {
			return err
		}
	}
	// A target may need more security-stage rounds before it agrees to
	// transit (§6.3); keep asking with no keys.
	for round := 0; !resp.Transit; round++ {
		if round > 8 {
			return fmt.Errorf("target does not leave the security stage")
		}
		if resp, _, err = l.exchange(pdu.StageSecurity, pdu.StageOperational, true, nil); err != nil {
			return err
		}
	}
	if resp.NSG != pdu.StageOperational {
		return fmt.Errorf("target moved from the security stage to stage %d, expected the operational stage", resp.NSG)
	}
	return l.operational()
}

// authMethod checks the target's choice among the offered AuthMethod
// values (§12) and reports whether it is CHAP.
func (l *login) authMethod(kvs []pdu.KeyValue, offered string) (useCHAP bool, err error) {
	chosen := ""
	for _, kv := range kvs {
		switch kv.Key {
		case params.AuthMethod:
			chosen = kv.Value
		case params.TargetAlias:
			l.res.targetAlias = kv.Value
		}
	}
	if chosen == "" {
		// No answer: the target did not need to negotiate, which only
		// None allows.
		chosen = params.None
	}
	if !slices.Contains(strings.Split(offered, ","), chosen) {
		return false, fmt.Errorf("target answered AuthMethod=%s to our offer %s: %w", chosen, offered, ErrAuth)
	}
	return chosen == "CHAP", nil
}

// chap runs the CHAP exchange (§12.1.3) after the target accepted
// AuthMethod=CHAP; it returns the last response of the security stage.
func (l *login) chap() (*pdu.LoginResponse, error) {
	_, kvs, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, false,
		[]pdu.KeyValue{{Key: "CHAP_A", Value: chap.AlgorithmMD5}})
	if err != nil {
		return nil, err
	}
	var idStr, challengeStr string
	for _, kv := range kvs {
		switch kv.Key {
		case "CHAP_A":
			if kv.Value != chap.AlgorithmMD5 {
				return nil, fmt.Errorf("target chose CHAP_A=%s, only MD5 is supported", kv.Value)
			}
		case "CHAP_I":
			idStr = kv.Value
		case "CHAP_C":
			challengeStr = kv.Value
		}
	}
	id, err := strconv.ParseUint(idStr, 10, 8)
	if err != nil {
		return nil, fmt.Errorf("target sent invalid CHAP_I %q", idStr)
	}
	challenge, err := chap.DecodeBinary(challengeStr)
	if err != nil || len(challenge) == 0 || len(challenge) > 1024 {
		return nil, fmt.Errorf("target sent invalid CHAP_C: %v", err)
	}
	out := []pdu.KeyValue{
		{Key: "CHAP_N", Value: l.lp.creds.CHAP.User},
		{Key: "CHAP_R", Value: chap.EncodeBinary(chap.Response(byte(id), []byte(l.lp.creds.CHAP.Secret.Reveal()), challenge))},
	}
	mutual := l.lp.creds.Mutual.User != ""
	if mutual {
		if l.chapID, l.chapChallenge, err = chap.NewChallenge(); err != nil {
			return nil, err
		}
		if bytes.Equal(l.chapChallenge, challenge) {
			return nil, fmt.Errorf("target reflected our CHAP challenge: %w", ErrAuth)
		}
		out = append(out,
			pdu.KeyValue{Key: "CHAP_I", Value: strconv.Itoa(int(l.chapID))},
			pdu.KeyValue{Key: "CHAP_C", Value: chap.EncodeBinary(l.chapChallenge)})
	}
	resp, kvs, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, true, out)
	if err != nil {
		return nil, err
	}
	if mutual {
		if err := l.verifyTarget(kvs); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// verifyTarget checks the target's answer to our mutual CHAP challenge.
func (l *login) verifyTarget(kvs []pdu.KeyValue) error {
	var name, r string
	for _, kv := range kvs {
		switch kv.Key {
		case "CHAP_N":
			name = kv.Value
		case "CHAP_R":
			r = kv.Value
		}
	}
	if r == "" {
		return fmt.Errorf("target did not answer the mutual CHAP challenge: %w", ErrAuth)
	}
	if name != l.lp.creds.Mutual.User {
		return fmt.Errorf("target authenticated as %q, expected %q: %w", name, l.lp.creds.Mutual.User, ErrAuth)
	}
	got, err := chap.DecodeBinary(r)
	if err != nil || !chap.Verify(l.chapID, []byte(l.lp.creds.Mutual.Secret.Reveal()), l.chapChallenge, got) {
		return fmt.Errorf("target's mutual CHAP response is wrong: %w", ErrAuth)
	}
	return nil
}

// operationalKeys are the keys we offer, in the order of §13.
var operationalKeys = []string{
	params.HeaderDigest, params.DataDigest, params.MaxConnections,
	params.InitialR2T, params.ImmediateData, params.MaxRecvDataSegmentLength,
	params.MaxBurstLength, params.FirstBurstLength, params.DefaultTime2Wait,
	params.DefaultTime2Retain, params.MaxOutstandingR2T, params.DataPDUInOrder,
	params.DataSequenceInOrder, params.ErrorRecoveryLevel,
}

// discoveryKeys are the only operational keys that make sense in a
// discovery session (§13: the others are Irrelevant there).
var discoveryKeys = []string{params.HeaderDigest, params.DataDigest, params.MaxRecvDataSegmentLength}

// operational runs the operational stage (§6.3, §5.3): offer every key,
// check each answer with params.Operational.Accept, answer what the target
// offers on its own with Declare, until the target transits to full
// feature phase.
func (l *login) operational() error {
	keys := operationalKeys
	if l.lp.discovery {
		keys = discoveryKeys
	}
	offered := map[string]string{}
	var out []pdu.KeyValue
	for _, k := range keys {
		v, _ := l.lp.ours.Value(k)
		offered[k] = v
		out = append(out, pdu.KeyValue{Key: k, Value: v})
	}
	l.res.op.MaxRecvDataSegmentLength = l.lp.ours.MaxRecvDataSegmentLength
	for round := 0; ; round++ {
		if round > 16 {
			return fmt.Errorf("operational negotiation did not finish in %d rounds", round)
		}
		resp, kvs, err := l.exchange(pdu.StageOperational, pdu.StageFullFeature, true, out)
		if err != nil {
			return err
		}
		out = nil
		for _, kv := range kvs {
			if v, ok := offered[kv.Key]; ok {
				delete(offered, kv.Key)
				if err := l.res.op.Accept(kv.Key, v, kv.Value); err != nil {
					return fmt.Errorf("login negotiation: %w", err)
				}
				continue
			}
			switch kv.Key {
			case params.TargetAlias:
				l.res.targetAlias = kv.Value
				continue
			case params.TargetPortalGroupTag, params.TargetAddress:
				continue
			}
			ans, must, err := l.res.op.Declare(kv.Key, kv.Value, &l.lp.ours)
			if err != nil {
				return fmt.Errorf("login negotiation: %w", err)
			}
			if must {
				out = append(out, pdu.KeyValue{Key: kv.Key, Value: ans})
			}
		}
		if resp.Transit && resp.NSG == pdu.StageFullFeature && len(out) == 0 {
			if l.res.op.ImmediateData && l.res.op.FirstBurstLength > l.res.op.MaxBurstLength {
				return fmt.Errorf("login negotiation: FirstBurstLength %d exceeds MaxBurstLength %d", l.res.op.FirstBurstLength, l.res.op.MaxBurstLength)
			}
			return nil
		}
	}
}

// exchange sends one login request (a whole text, split over PDUs with the
// C bit when longer than the peer's limit) and reads the whole response,
// answering continued responses with empty requests (§5.3.2).
func (l *login) exchange(csg, nsg uint8, transit bool, kvs []pdu.KeyValue) (*pdu.LoginResponse, []pdu.KeyValue, error) {
	text := pdu.EncodeText(kvs)
	const chunk = pdu.DefaultMaxRecvDataSegmentLength
	for {
		n := min(len(text), chunk)
		req := &pdu.LoginRequest{
			Transit: transit && n == len(text), Continue: n < len(text),
			CSG: csg, NSG: nsg, ISID: l.lp.isid, TSIH: l.lp.tsih, ITT: l.itt,
			CmdSN: l.lp.cmdSN, ExpStatSN: l.res.expStatSN, Data: text[:n],
		}
		if !req.Transit {
			req.NSG = 0
		}
		text = text[n:]
		if err := l.fr.WriteMessage(req); err != nil {
			return nil, nil, err
		}
		resp, err := l.read()
		if err != nil {
			return nil, nil, err
		}
		if len(text) == 0 {
			return l.readRest(resp, csg, nsg)
		}
		if len(resp.Data) != 0 || resp.Transit {
			return nil, nil, fmt.Errorf("target answered a continued login request with data")
		}
	}
}

// readRest collects a possibly continued login response.
func (l *login) readRest(resp *pdu.LoginResponse, csg, nsg uint8) (*pdu.LoginResponse, []pdu.KeyValue, error) {
	data := append([]byte(nil), resp.Data...)
	for resp.Continue {
		if len(data) > 1<<20 {
			return nil, nil, fmt.Errorf("login response text longer than 1 MiB")
		}
		req := &pdu.LoginRequest{CSG: csg, ISID: l.lp.isid, TSIH: l.lp.tsih, ITT: l.itt,
			CmdSN: l.lp.cmdSN, ExpStatSN: l.res.expStatSN}
		if err := l.fr.WriteMessage(req); err != nil {
			return nil, nil, err
		}
		var err error
		if resp, err = l.read(); err != nil {
			return nil, nil, err
		}
		data = append(data, resp.Data...)
	}
	kvs, err := pdu.ParseText(data)
	if err != nil {
		return nil, nil, fmt.Errorf("login response: %w", err)
	}
	return resp, kvs, nil
}

// read reads one login response and checks its status and sequence
// numbers (§11.13).
func (l *login) read() (*pdu.LoginResponse, error) {
	m, err := l.fr.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("reading login response: %w", err)
	}
	resp, ok := m.(*pdu.LoginResponse)
	if !ok {
		return nil, fmt.Errorf("expected a login response, got %v", m.Opcode())
	}
	return resp, l.check(resp)
}

func (l *login) check(resp *pdu.LoginResponse) error {
	if resp.StatusClass != pdu.LoginSuccess {
		return &LoginError{Class: resp.StatusClass, Detail: resp.StatusDetail}
	}
	if resp.ITT != l.itt {
		return fmt.Errorf("login response for task 0x%x, expected 0x%x", resp.ITT, l.itt)
	}
	if resp.ISID != l.lp.isid {
		return fmt.Errorf("login response for another ISID")
	}
	if resp.VersionActive != 0 {
		return fmt.Errorf("target speaks iSCSI version %d, we speak 0", resp.VersionActive)
	}
	if resp.Transit && resp.Continue {
		return fmt.Errorf("login response with both T and C bits")
	}
	if !l.first && resp.StatSN != l.res.expStatSN {
		l.lp.log.Debug("login response StatSN out of order", "got", resp.StatSN, "want", l.res.expStatSN)
	}
	l.first = false
	l.res.expStatSN = resp.StatSN + 1
	l.res.expCmdSN, l.res.maxCmdSN = resp.ExpCmdSN, resp.MaxCmdSN
	if resp.Transit && resp.NSG == pdu.StageFullFeature {
		l.res.tsih = resp.TSIH
		if resp.TSIH == 0 {
			return fmt.Errorf("target completed login with TSIH 0")
		}
	}
	return nil
}

// newISID returns a random ISID of type 0x80 ("random", §11.12.5).
func newISID() (pdu.ISID, error) {
	var id pdu.ISID
	if _, err := rand.Read(id[1:]); err != nil {
		return id, fmt.Errorf("ISID: %w", err)
	}
	id[0] = 0x80
	return id, nil
}
