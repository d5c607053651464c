package agent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The control API's authentication (API.md): every request carries a
// timestamp, a random nonce and an HMAC-SHA256, under the agents' shared
// key, of the method, the request URI, the timestamp, the nonce and the
// body's SHA-256. The answer carries an HMAC of the request's nonce, its
// status and its body's SHA-256, so that a client takes nothing from a
// host that does not hold the key either.
const (
	headerTime      = "X-Shareless-Time"
	headerNonce     = "X-Shareless-Nonce"
	headerAuth      = "Authorization"
	headerSignature = "X-Shareless-Signature"
	authScheme      = "SHARELESS-HMAC-SHA256 "

	// freshness is how far a request's timestamp may be from the
	// server's clock, either way. Hosts run NTP; a minute is generous.
	freshness = time.Minute
)

// Kinds of authentication failure, for metrics and tests.
var (
	errNoAuth   = errors.New("missing authentication")
	errBadMAC   = errors.New("bad signature")
	errStale    = errors.New("timestamp outside the freshness window")
	errReplayed = errors.New("nonce already used")
)

// signer holds the pre-shared key. A nil signer (loopback without a key)
// neither signs nor checks.
type signer struct {
	key []byte
	now func() time.Time

	mu     sync.Mutex
	nonces map[string]time.Time // seen within the window, for replay refusal
}

func newSigner(key string, now func() time.Time) *signer {
	if key == "" {
		return nil
	}
	return &signer{key: []byte(key), now: now, nonces: make(map[string]time.Time)}
}

func (s *signer) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

func bodyDigest(body []byte) string {
	d := sha256.Sum256(body)
	return hex.EncodeToString(d[:])
}

// signRequest adds the authentication headers to req, whose body is body,
// and returns the nonce that the answer's signature must cover.
func (s *signer) signRequest(req *http.Request, body []byte) (string, error) {
	if s == nil {
		return "", nil
	}
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	nonce := hex.EncodeToString(n[:])
	ts := strconv.FormatInt(s.now().Unix(), 10)
	req.Header.Set(headerTime, ts)
	req.Header.Set(headerNonce, nonce)
	req.Header.Set(headerAuth, authScheme+hex.EncodeToString(s.mac("request", req.Method, req.URL.RequestURI(), ts, nonce, bodyDigest(body))))
	return nonce, nil
}

// checkRequest verifies a request whose body was read into body, and
// returns its nonce.
func (s *signer) checkRequest(req *http.Request, body []byte) (string, error) {
	if s == nil {
		return "", nil
	}
	ts, nonce, auth := req.Header.Get(headerTime), req.Header.Get(headerNonce), req.Header.Get(headerAuth)
	if ts == "" || nonce == "" || len(auth) <= len(authScheme) || auth[:len(authScheme)] != authScheme {
		return "", errNoAuth
	}
	got, err := hex.DecodeString(auth[len(authScheme):])
	if err != nil || !hmac.Equal(got, s.mac("request", req.Method, req.URL.RequestURI(), ts, nonce, bodyDigest(body))) {
		return "", errBadMAC
	}
	// Only a request that proves the key gets this far: the timestamp and
	// nonce are the sender's, not an attacker's.
	sec, err := strconv.ParseInt(ts, 10, 64)
	now := s.now()
	if err != nil || now.Sub(time.Unix(sec, 0)).Abs() > freshness {
		return "", errStale
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, at := range s.nonces {
		if now.Sub(at) > 2*freshness {
			delete(s.nonces, n)
		}
	}
	if _, seen := s.nonces[nonce]; seen {
		return "", errReplayed
	}
	s.nonces[nonce] = now
	return nonce, nil
}

// signResponse returns the signature of an answer to the request with nonce.
func (s *signer) signResponse(nonce string, status int, body []byte) string {
	return hex.EncodeToString(s.mac("response", nonce, strconv.Itoa(status), bodyDigest(body)))
}

// checkResponse verifies an answer's signature.
func (s *signer) checkResponse(nonce string, resp *http.Response, body []byte) error {
	if s == nil {
		return nil
	}
	got, err := hex.DecodeString(resp.Header.Get(headerSignature))
	if err != nil || !hmac.Equal(got, s.mac("response", nonce, strconv.Itoa(resp.StatusCode), bodyDigest(body))) {
		return fmt.Errorf("answer: %w", errBadMAC)
	}
	return nil
}
