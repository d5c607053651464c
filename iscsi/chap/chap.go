// Package chap implements the CHAP exchange of iSCSI login (RFC 7143
// §12.1.3, RFC 1994) with MD5, the one algorithm every initiator offers.
package chap

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"strings"
)

// AlgorithmMD5 is the CHAP_A value for MD5 (RFC 1994).
const AlgorithmMD5 = "5"

// ChallengeLen is the length of the challenges this package issues; RFC
// 7143 §12.1.3 asks for at least as long as the secret's entropy, and
// Linux's target uses 16 bytes.
const ChallengeLen = 16

// Minimum and maximum secret lengths. RFC 7143 §12.1.3 requires at least
// 12 bytes of secret for CHAP on networks that are not IPsec-protected;
// the upper bound is what tgt and LIO accept.
const (
	MinSecretLen = 12
	MaxSecretLen = 256
)

// Response computes MD5(id || secret || challenge) (RFC 1994 §4.1).
func Response(id byte, secret, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write(secret)
	h.Write(challenge)
	return h.Sum(nil)
}

// Verify reports, in constant time, whether resp answers challenge.
func Verify(id byte, secret, challenge, resp []byte) bool {
	return subtle.ConstantTimeCompare(Response(id, secret, challenge), resp) == 1
}

// NewChallenge returns a random identifier and challenge.
func NewChallenge() (byte, []byte, error) {
	b := make([]byte, 1+ChallengeLen)
	if _, err := rand.Read(b); err != nil {
		return 0, nil, fmt.Errorf("chap challenge: %w", err)
	}
	return b[0], b[1:], nil
}

// EncodeBinary renders b as iSCSI binary-value in hex (§6.1: "0x...").
func EncodeBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }

// DecodeBinary parses an iSCSI binary-value: hex with 0x/0X, or base64
// with 0b/0B (§6.1).
func DecodeBinary(s string) ([]byte, error) {
	if len(s) < 3 {
		return nil, fmt.Errorf("binary value %q too short", s)
	}
	prefix, body := strings.ToLower(s[:2]), s[2:]
	switch prefix {
	case "0x":
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("hex binary value: %w", err)
		}
		return b, nil
	case "0b":
		b, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("base64 binary value: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("binary value %q lacks 0x or 0b prefix", s)
}

// NewSecret checks a CHAP secret's length and wraps it so that it never
// prints itself.
func NewSecret(b []byte) (secret.Secret, error) {
	if len(b) < MinSecretLen || len(b) > MaxSecretLen {
		return secret.Secret{}, fmt.Errorf("CHAP secret must be %d to %d bytes, got %d", MinSecretLen, MaxSecretLen, len(b))
	}
	return secret.New(string(b)), nil
}

// Credentials is a CHAP user name and secret.
type Credentials struct {
	User   string
	Secret secret.Secret
}
