package initiator

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// DiscoveredTarget is one target that SendTargets reported.
type DiscoveredTarget struct {
	Name string
	// Addresses are "host:port,portal-group-tag" as the target sent them
	// (§13.8); empty means the portal that was asked.
	Addresses []string
}

// Discover asks the portal at addr for the targets it serves, in a
// discovery session (§6.3.1, SendTargets=All, Appendix C of RFC 7143).
// cfg supplies the initiator name, credentials, dialer and timeouts; its
// Target and LUN are ignored.
func Discover(ctx context.Context, addr string, cfg Config) ([]DiscoveredTarget, error) {
	cfg.setDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.LoginTimeout)
	defer cancel()
	nc, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	isid, err := newISID()
	if err != nil {
		return nil, err
	}
	fr := pdu.NewFramer(nc, nc)
	const cmdSN = 1
	ours := offer()
	res, err := loginConn(ctx, nc, fr, &loginParams{
		initiatorName: cfg.InitiatorName, discovery: true, isid: isid, cmdSN: cmdSN,
		creds: cfg.Credentials, ours: ours, log: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery login at %s: %w", addr, err)
	}
	fr.SetMaxRecvDataSegmentLength(int(ours.MaxRecvDataSegmentLength))
	kvs, err := sendTargets(fr, res, cmdSN)
	if err != nil {
		return nil, fmt.Errorf("SendTargets at %s: %w", addr, err)
	}
	// Logout is a courtesy; the answer does not matter.
	fr.WriteMessage(&pdu.LogoutRequest{Immediate: true, Reason: pdu.LogoutSession, ITT: 2,
		CmdSN: cmdSN + 1, ExpStatSN: res.expStatSN})
	return parseSendTargets(kvs)
}

// sendTargets runs the Text Request/Response exchange, following
// continuations (§11.10, §11.11: C bit and Target Transfer Tag).
func sendTargets(fr *pdu.Framer, res *loginResult, cmdSN uint32) ([]pdu.KeyValue, error) {
	const itt = 1
	req := &pdu.TextRequest{Final: true, ITT: itt, TTT: pdu.ReservedTag, CmdSN: cmdSN,
		ExpStatSN: res.expStatSN, Data: pdu.EncodeText([]pdu.KeyValue{{Key: params.SendTargets, Value: "All"}})}
	var text []byte
	for {
		if err := fr.WriteMessage(req); err != nil {
			return nil, err
		}
		m, err := fr.ReadMessage()
		if err != nil {
			return nil, err
		}
		resp, ok := m.(*pdu.TextResponse)
		if !ok {
			return nil, fmt.Errorf("expected a Text Response, got %v", m.Opcode())
		}
		if resp.ITT != itt {
			return nil, fmt.Errorf("Text Response for task 0x%x", resp.ITT)
		}
		text = append(text, resp.Data...)
		if len(text) > 1<<20 {
			return nil, fmt.Errorf("SendTargets answer longer than 1 MiB")
		}
		if !resp.Continue {
			if !resp.Final {
				return nil, fmt.Errorf("Text Response with neither F nor C bit")
			}
			return pdu.ParseText(text)
		}
		req = &pdu.TextRequest{Final: true, ITT: itt, TTT: resp.TTT, CmdSN: cmdSN,
			ExpStatSN: resp.StatSN + 1}
	}
}

// parseSendTargets groups TargetAddress keys under the TargetName that
// precedes them (§13.8, Appendix C).
func parseSendTargets(kvs []pdu.KeyValue) ([]DiscoveredTarget, error) {
	var out []DiscoveredTarget
	for _, kv := range kvs {
		switch kv.Key {
		case params.TargetName:
			if err := checkName(kv.Value); err != nil {
				return nil, fmt.Errorf("SendTargets: %w", err)
			}
			out = append(out, DiscoveredTarget{Name: kv.Value})
		case params.TargetAddress:
			if len(out) == 0 {
				return nil, fmt.Errorf("SendTargets: TargetAddress before any TargetName")
			}
			t := &out[len(out)-1]
			t.Addresses = append(t.Addresses, kv.Value)
		}
	}
	return out, nil
}

// Portal returns the host:port of a SendTargets address ("host:port,tag",
// "[v6]:port,tag" or "host,tag"; §13.9).
func Portal(address string) string {
	hp := address
	if i := strings.LastIndexByte(address, ','); i >= 0 {
		hp = address[:i]
	}
	if _, _, err := net.SplitHostPort(hp); err != nil {
		return net.JoinHostPort(strings.Trim(hp, "[]"), strconv.Itoa(DefaultPort))
	}
	return hp
}
