package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shareless/shareless/config"
)

// fakeOpenStack is Keystone v3, Nova's hypervisor list and its server
// list by name, as much as the peer and server lookups use.
func fakeOpenStack(t *testing.T, hypervisorLists *atomic.Int32) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct{ Name, Password string }
					}
				}
			}
		}
		json.NewDecoder(r.Body).Decode(&req)
		if u := req.Auth.Identity.Password.User; u.Name != "shareless" || u.Password != "s3cret" {
			http.Error(w, `{"error":{"code":401}}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Subject-Token", "token-1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"catalog": []any{map[string]any{"type": "compute", "name": "nova", "endpoints": []any{
				map[string]any{"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": srv.URL + "/compute/v2.1"},
			}}},
		}})
	})
	mux.HandleFunc("GET /compute/v2.1/os-hypervisors/detail", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != "token-1" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		hypervisorLists.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io := `{"hypervisors": [
			{"id": 1, "hypervisor_hostname": "compute-1.example", "host_ip": "192.0.2.11", "state": "up", "status": "enabled", "service": {"host": "compute-1", "id": 6}},
			{"id": 2, "hypervisor_hostname": "compute-2.example", "host_ip": "192.0.2.12", "state": "up", "status": "enabled", "service": {"host": "compute-2", "id": 7}}]}`
		w.Write([]byte(io))
	})
	mux.HandleFunc("GET /compute/v2.1/servers", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Header.Get("X-Auth-Token") != "token-1" || q.Get("all_tenants") != "1" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch q.Get("name") {
		case "^web\\.1$":
			w.Write([]byte(`{"servers": [{"id": "0D1C8E5E-7B1A-4F57-9F5D-1A2B3C4D5E6F", "name": "web.1"}]}`))
		case "^twin$":
			w.Write([]byte(`{"servers": [{"id": "a", "name": "twin"}, {"id": "b", "name": "twin"}]}`))
		default:
			w.Write([]byte(`{"servers": []}`))
		}
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestPeerFromNova: a peer missing from [peers] is found as its
// hypervisor's host_ip, with the port of [api] listen, and cached.
func TestPeerFromNova(t *testing.T) {
	var lists atomic.Int32
	srv := fakeOpenStack(t, &lists)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	conf := "[amqp]\ntransport_url = rabbit://h/\n[api]\nlisten = 127.0.0.1:3270\n[peers]\ncompute-9 = 198.51.100.9:4000\n" +
		"[openstack]\nauth_url = " + srv.URL + "/v3\nusername = shareless\npassword_file = " + pw + "\nproject_name = service\n"
	path := filepath.Join(t.TempDir(), "shareless.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: cfg, nova: newNovaHosts(cfg.OpenStack, time.Now)}
	ctx := context.Background()
	for host, want := range map[string]string{"compute-2": "192.0.2.12:3270", "compute-1": "192.0.2.11:3270", "compute-9": "198.51.100.9:4000"} {
		p, err := a.peer(ctx, host)
		if err != nil || p.addr != want {
			t.Errorf("peer %s: %+v, %v; want %s", host, p, err, want)
		}
	}
	if _, err := a.peer(ctx, "compute-1"); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("Nova asked %d times for two hosts, want 2 (cached after)", n)
	}
	if _, err := a.peer(ctx, "compute-7"); err == nil || !strings.Contains(err.Error(), `no hypervisor with a host_ip on host "compute-7"`) {
		t.Errorf("unknown host: %v", err)
	}
	a.nova = nil
	if _, err := a.peer(ctx, "compute-2"); err == nil || !strings.Contains(err.Error(), "not in [peers]") {
		t.Errorf("no credentials: %v", err)
	}
}

// TestServerFromNova: `shareless adopt NAME` finds the one server of that
// exact name (Nova filters by regular expression: the name is quoted and
// anchored) in any project.
func TestServerFromNova(t *testing.T) {
	var lists atomic.Int32
	srv := fakeOpenStack(t, &lists)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	cfg, err := config.Parse("shareless.conf", []byte("[amqp]\ntransport_url = rabbit://h/\n[openstack]\nauth_url = "+srv.URL+
		"/v3\nusername = shareless\npassword_file = "+pw+"\nproject_name = service\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := newNovaHosts(cfg.OpenStack, time.Now)
	ctx := context.Background()
	if id, err := n.serverID(ctx, "web.1"); err != nil || id != "0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f" {
		t.Errorf("web.1: %q, %v", id, err)
	}
	for name, want := range map[string]string{"twin": "2 servers named", "nope": "no server named"} {
		if _, err := n.serverID(ctx, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", name, err, want)
		}
	}
}
