package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/config"
)

const testPSK = "correct horse battery staple"

// authServer serves an authenticated handler that answers "ok" and
// returns its URL and the log it wrote.
func authServer(t *testing.T, now func() time.Time) (string, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	a := &Agent{sign: newSigner(testPSK, now), metrics: &metrics{},
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	srv := httptest.NewServer(a.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	})))
	t.Cleanup(srv.Close)
	return srv.URL, &logs
}

func clientFor(url, key string, now func() time.Time) *peerClient {
	return &peerClient{host: "peer", addr: strings.TrimPrefix(url, "http://"), sign: newSigner(key, now), http: http.DefaultClient}
}

func TestControlAPIAuth(t *testing.T) {
	url, logs := authServer(t, time.Now)
	var out struct{ OK bool }
	if err := clientFor(url, testPSK, time.Now).call(context.Background(), http.MethodGet, "/v1/x", &out); err != nil || !out.OK {
		t.Fatalf("signed request: %v %+v", err, out)
	}

	refused := func(name string, req *http.Request) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, resp.StatusCode)
		}
	}
	// Missing PSK: no authentication headers at all.
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/x", nil)
	refused("unsigned", req)
	// Wrong PSK.
	if err := clientFor(url, "wrong key", time.Now).call(context.Background(), http.MethodGet, "/v1/x", &out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong key: %v", err)
	}
	// Stale timestamp, correctly signed with the right key.
	stale := func() time.Time { return time.Now().Add(-2 * freshness) }
	if err := clientFor(url, testPSK, stale).call(context.Background(), http.MethodGet, "/v1/x", &out); err == nil || !strings.Contains(err.Error(), errStale.Error()) {
		t.Errorf("stale timestamp: %v", err)
	}
	// A replayed request, and one whose body or path was changed.
	s := newSigner(testPSK, time.Now)
	req, _ = http.NewRequest(http.MethodPost, url+"/v1/x", bytes.NewReader([]byte("{}")))
	s.signRequest(req, []byte("{}"))
	ok, _ := http.DefaultClient.Do(req.Clone(context.Background()))
	ok.Body.Close()
	replay := req.Clone(context.Background())
	replay.Body = io.NopCloser(bytes.NewReader([]byte("{}")))
	refused("replayed", replay)
	tampered, _ := http.NewRequest(http.MethodPost, url+"/v1/x", bytes.NewReader([]byte(`{"evil":1}`)))
	s.signRequest(tampered, []byte("{}"))
	refused("tampered body", tampered)
	moved, _ := http.NewRequest(http.MethodPost, url+"/v1/y", nil)
	moved.Header = req.Header.Clone()
	moved.Header.Set(headerNonce, "00"+moved.Header.Get(headerNonce)[2:])
	refused("other path", moved)

	if strings.Contains(logs.String(), testPSK) {
		t.Fatal("the key reached the log")
	}
	if !strings.Contains(logs.String(), "control API request refused") {
		t.Fatalf("refusals not logged:\n%s", logs)
	}
}

// TestControlAPIAnswerSigned: a client takes no answer from a host that
// does not hold the key.
func TestControlAPIAnswerSigned(t *testing.T) {
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(headerSignature, strconv.Quote("forged"))
		io.WriteString(w, `{"ok":true}`)
	}))
	defer impostor.Close()
	var out struct{ OK bool }
	err := clientFor(impostor.URL, testPSK, time.Now).call(context.Background(), http.MethodGet, "/v1/x", &out)
	if err == nil || out.OK {
		t.Fatalf("forged answer accepted: %v %+v", err, out)
	}
}

// TestNoKeyOnlyOnLoopback: without a PSK the agent refuses to listen
// anywhere but loopback, even if its configuration was not validated.
func TestNoKeyOnlyOnLoopback(t *testing.T) {
	cfg := config.Defaults()
	cfg.API.Listen = "192.0.2.1:3270"
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "psk_file is required") {
		t.Fatalf("New without a key on a non-loopback address: %v", err)
	}
}
