// Package params holds iSCSI login and text keys (RFC 7143 §13) and their
// negotiation rules, shared by the target (which answers offers) and the
// initiator (which makes them and checks the answers).
package params

import (
	"fmt"
	"strconv"
	"strings"
)

// Key names (§13).
const (
	HeaderDigest             = "HeaderDigest"
	DataDigest               = "DataDigest"
	MaxConnections           = "MaxConnections"
	SendTargets              = "SendTargets"
	TargetName               = "TargetName"
	InitiatorName            = "InitiatorName"
	TargetAlias              = "TargetAlias"
	InitiatorAlias           = "InitiatorAlias"
	TargetAddress            = "TargetAddress"
	TargetPortalGroupTag     = "TargetPortalGroupTag"
	InitialR2T               = "InitialR2T"
	ImmediateData            = "ImmediateData"
	MaxRecvDataSegmentLength = "MaxRecvDataSegmentLength"
	MaxBurstLength           = "MaxBurstLength"
	FirstBurstLength         = "FirstBurstLength"
	DefaultTime2Wait         = "DefaultTime2Wait"
	DefaultTime2Retain       = "DefaultTime2Retain"
	MaxOutstandingR2T        = "MaxOutstandingR2T"
	DataPDUInOrder           = "DataPDUInOrder"
	DataSequenceInOrder      = "DataSequenceInOrder"
	ErrorRecoveryLevel       = "ErrorRecoveryLevel"
	SessionType              = "SessionType"
	AuthMethod               = "AuthMethod"
	IFMarker                 = "IFMarker"
	OFMarker                 = "OFMarker"
	IFMarkInt                = "IFMarkInt"
	OFMarkInt                = "OFMarkInt"
)

// Special values (§5.3, §6.2).
const (
	NotUnderstood = "NotUnderstood"
	Irrelevant    = "Irrelevant"
	Reject        = "Reject"
	Yes           = "Yes"
	No            = "No"
	None          = "None"
	CRC32C        = "CRC32C"
)

// rule is how a key's result follows from the offer and the answer.
type rule int

const (
	ruleDeclarative rule = iota // each side states its own value
	ruleList                    // the responder picks the first offered value it supports
	ruleAnd                     // Boolean AND
	ruleOr                      // Boolean OR
	ruleMin                     // numerical minimum
	ruleMax                     // numerical maximum
)

type keyDef struct {
	rule   rule
	lo, hi uint32 // numerical range
	// leadingOnly keys are negotiated once per session, on its leading
	// connection (§13: "LO").
	leadingOnly bool
}

var keys = map[string]keyDef{
	HeaderDigest:             {rule: ruleList},
	DataDigest:               {rule: ruleList},
	MaxConnections:           {rule: ruleMin, lo: 1, hi: 65535, leadingOnly: true},
	InitialR2T:               {rule: ruleOr, leadingOnly: true},
	ImmediateData:            {rule: ruleAnd, leadingOnly: true},
	MaxRecvDataSegmentLength: {rule: ruleDeclarative, lo: 512, hi: 1<<24 - 1},
	MaxBurstLength:           {rule: ruleMin, lo: 512, hi: 1<<24 - 1, leadingOnly: true},
	FirstBurstLength:         {rule: ruleMin, lo: 512, hi: 1<<24 - 1, leadingOnly: true},
	DefaultTime2Wait:         {rule: ruleMax, lo: 0, hi: 3600, leadingOnly: true},
	DefaultTime2Retain:       {rule: ruleMin, lo: 0, hi: 3600, leadingOnly: true},
	MaxOutstandingR2T:        {rule: ruleMin, lo: 1, hi: 65535, leadingOnly: true},
	DataPDUInOrder:           {rule: ruleOr, leadingOnly: true},
	DataSequenceInOrder:      {rule: ruleOr, leadingOnly: true},
	ErrorRecoveryLevel:       {rule: ruleMin, lo: 0, hi: 2, leadingOnly: true},
	// RFC 3720 markers, obsoleted by RFC 7143: answered No, never used.
	IFMarker: {rule: ruleAnd},
	OFMarker: {rule: ruleAnd},
}

// Operational is the set of negotiated operational parameters of a
// session and connection, from one side's point of view.
type Operational struct {
	HeaderDigest, DataDigest bool
	MaxConnections           uint32
	InitialR2T               bool
	ImmediateData            bool
	// MaxRecvDataSegmentLength is what this side declared: the largest data
	// segment it accepts.
	MaxRecvDataSegmentLength uint32
	// MaxXmitDataSegmentLength is what the peer declared: the largest data
	// segment this side may send.
	MaxXmitDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	DefaultTime2Wait         uint32
	DefaultTime2Retain       uint32
	MaxOutstandingR2T        uint32
	DataPDUInOrder           bool
	DataSequenceInOrder      bool
	ErrorRecoveryLevel       uint32
}

// Defaults are the values in force for keys that are not negotiated (§13).
func Defaults() Operational {
	return Operational{
		MaxConnections:           1,
		InitialR2T:               true,
		ImmediateData:            true,
		MaxRecvDataSegmentLength: 8192,
		MaxXmitDataSegmentLength: 8192,
		MaxBurstLength:           262144,
		FirstBurstLength:         65536,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       20,
		MaxOutstandingR2T:        1,
		DataPDUInOrder:           true,
		DataSequenceInOrder:      true,
	}
}

// Value renders this side's value of an operational key as it would
// offer it; digests render as a preference list.
func (o *Operational) Value(key string) (string, bool) {
	switch key {
	case HeaderDigest:
		return digestList(o.HeaderDigest), true
	case DataDigest:
		return digestList(o.DataDigest), true
	case MaxConnections:
		return u32(o.MaxConnections), true
	case InitialR2T:
		return yesNo(o.InitialR2T), true
	case ImmediateData:
		return yesNo(o.ImmediateData), true
	case MaxRecvDataSegmentLength:
		return u32(o.MaxRecvDataSegmentLength), true
	case MaxBurstLength:
		return u32(o.MaxBurstLength), true
	case FirstBurstLength:
		return u32(o.FirstBurstLength), true
	case DefaultTime2Wait:
		return u32(o.DefaultTime2Wait), true
	case DefaultTime2Retain:
		return u32(o.DefaultTime2Retain), true
	case MaxOutstandingR2T:
		return u32(o.MaxOutstandingR2T), true
	case DataPDUInOrder:
		return yesNo(o.DataPDUInOrder), true
	case DataSequenceInOrder:
		return yesNo(o.DataSequenceInOrder), true
	case ErrorRecoveryLevel:
		return u32(o.ErrorRecoveryLevel), true
	case IFMarker, OFMarker:
		return No, true
	}
	return "", false
}

// set stores a negotiated result. For MaxRecvDataSegmentLength it stores
// the peer's declaration.
func (o *Operational) set(key, value string) error {
	var err error
	num := func(p *uint32) {
		var n uint64
		n, err = strconv.ParseUint(value, 10, 32)
		*p = uint32(n)
	}
	boolean := func(p *bool) { *p, err = parseBool(value) }
	switch key {
	case HeaderDigest:
		o.HeaderDigest = value == CRC32C
	case DataDigest:
		o.DataDigest = value == CRC32C
	case MaxConnections:
		num(&o.MaxConnections)
	case InitialR2T:
		boolean(&o.InitialR2T)
	case ImmediateData:
		boolean(&o.ImmediateData)
	case MaxRecvDataSegmentLength:
		num(&o.MaxXmitDataSegmentLength)
	case MaxBurstLength:
		num(&o.MaxBurstLength)
	case FirstBurstLength:
		num(&o.FirstBurstLength)
	case DefaultTime2Wait:
		num(&o.DefaultTime2Wait)
	case DefaultTime2Retain:
		num(&o.DefaultTime2Retain)
	case MaxOutstandingR2T:
		num(&o.MaxOutstandingR2T)
	case DataPDUInOrder:
		boolean(&o.DataPDUInOrder)
	case DataSequenceInOrder:
		boolean(&o.DataSequenceInOrder)
	case ErrorRecoveryLevel:
		num(&o.ErrorRecoveryLevel)
	}
	return err
}

// Negotiable reports whether key is an operational key this package
// negotiates.
func Negotiable(key string) bool { _, ok := keys[key]; return ok }

// LeadingOnly reports whether key may only be negotiated on the leading
// connection of a session, during login.
func LeadingOnly(key string) bool { return keys[key].leadingOnly }

// Respond is the responder's side (§5.3): given the originator's value of
// an operational key and this side's preferences, it records the result
// in o and returns the value to answer with. Unknown keys get
// NotUnderstood; a value outside the key's domain gets Reject; neither is
// an error, since the login goes on. err reports a value so malformed that
// the login must fail (§6.2: a wrong-typed value in a negotiation).
func (o *Operational) Respond(key, offered string, ours *Operational) (answer string, err error) {
	def, ok := keys[key]
	if !ok {
		return NotUnderstood, nil
	}
	if offered == NotUnderstood || offered == Irrelevant || offered == Reject {
		return "", fmt.Errorf("%s=%s offered by the originator", key, offered)
	}
	mine, _ := ours.Value(key)
	switch def.rule {
	case ruleList:
		for _, v := range strings.Split(offered, ",") {
			if v == CRC32C && strings.Contains(mine, CRC32C) || v == None && strings.Contains(mine, None) {
				return v, o.set(key, v)
			}
		}
		return Reject, nil
	case ruleAnd, ruleOr:
		theirs, perr := parseBool(offered)
		if perr != nil {
			return Reject, nil
		}
		if key == IFMarker || key == OFMarker {
			return No, nil
		}
		m, _ := parseBool(mine)
		res := theirs && m
		if def.rule == ruleOr {
			res = theirs || m
		}
		return yesNo(res), o.set(key, yesNo(res))
	case ruleMin, ruleMax:
		theirs, perr := def.parse(offered)
		if perr != nil {
			return Reject, nil
		}
		m, _ := strconv.ParseUint(mine, 10, 32)
		res := min(theirs, uint32(m))
		if def.rule == ruleMax {
			res = max(theirs, uint32(m))
		}
		return u32(res), o.set(key, u32(res))
	case ruleDeclarative:
		if _, perr := def.parse(offered); perr != nil {
			return Reject, nil
		}
		// The peer declared its limit; this side answers with its own.
		return mine, o.set(key, offered)
	}
	return NotUnderstood, nil
}

// Accept is the originator's side: it checks the responder's answer to
// this side's offer and records the result in o. An answer that the rules
// do not allow is an error and must fail the login (§5.3).
func (o *Operational) Accept(key, offered, answered string) error {
	def, ok := keys[key]
	if !ok {
		return nil
	}
	switch answered {
	case NotUnderstood, Irrelevant:
		return nil // defaults stay in force
	case Reject:
		return fmt.Errorf("target rejected %s=%s", key, offered)
	}
	switch def.rule {
	case ruleList:
		if !contains(strings.Split(offered, ","), answered) {
			return fmt.Errorf("%s answer %q not among the offered %q", key, answered, offered)
		}
	case ruleAnd, ruleOr:
		got, err := parseBool(answered)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		want, _ := parseBool(offered)
		if def.rule == ruleAnd && got && !want || def.rule == ruleOr && !got && want {
			return fmt.Errorf("%s answer %s violates the %s rule for offer %s", key, answered, map[rule]string{ruleAnd: "AND", ruleOr: "OR"}[def.rule], offered)
		}
	case ruleMin, ruleMax:
		got, err := def.parse(answered)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		want, _ := def.parse(offered)
		if def.rule == ruleMin && got > want || def.rule == ruleMax && got < want {
			return fmt.Errorf("%s answer %d violates the negotiation rule for offer %d", key, got, want)
		}
	case ruleDeclarative:
		if _, err := def.parse(answered); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return o.set(key, answered)
}

// Declare records a declarative or negotiated key that the peer sent on its
// own initiative (the target's MaxRecvDataSegmentLength, for example).
// For negotiated keys it returns the answer this side must send back.
func (o *Operational) Declare(key, value string, ours *Operational) (answer string, mustAnswer bool, err error) {
	def, ok := keys[key]
	if !ok {
		return NotUnderstood, true, nil
	}
	if def.rule == ruleDeclarative {
		if _, err := def.parse(value); err != nil {
			return "", false, fmt.Errorf("%s: %w", key, err)
		}
		return "", false, o.set(key, value)
	}
	ans, err := o.Respond(key, value, ours)
	return ans, true, err
}

func (d keyDef) parse(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || uint32(n) < d.lo || uint32(n) > d.hi {
		return 0, fmt.Errorf("value %q outside %d..%d", s, d.lo, d.hi)
	}
	return uint32(n), nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case Yes:
		return true, nil
	case No:
		return false, nil
	}
	return false, fmt.Errorf("value %q is neither Yes nor No", s)
}

func yesNo(b bool) string {
	if b {
		return Yes
	}
	return No
}

func u32(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func digestList(crc bool) string {
	if crc {
		return CRC32C + "," + None
	}
	return None
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
