package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/shareless/shareless/novahook"
	"github.com/shareless/shareless/replicator"
)

// The control API peers call (API.md). Every route names an instance;
// the answers describe that instance's managed disks on this host.

// maxAPIBody bounds request and answer bodies: a delta of a TiB disk at
// the default grain, run-length encoded, is far smaller.
const maxAPIBody = 16 << 20

// wireID is a replicator.ID on the wire.
type wireID struct {
	Lineage    string `json:"lineage"`
	Generation uint64 `json:"generation"`
}

func toWire(id replicator.ID) *wireID {
	if id.IsZero() {
		return nil
	}
	return &wireID{hex.EncodeToString(id.Lineage[:]), id.Generation}
}

func (w *wireID) id() (replicator.ID, error) {
	var id replicator.ID
	if w == nil {
		return id, nil
	}
	b, err := hex.DecodeString(w.Lineage)
	if err != nil || len(b) != len(id.Lineage) {
		return id, fmt.Errorf("bad lineage %q", w.Lineage)
	}
	copy(id.Lineage[:], b)
	id.Generation = w.Generation
	return id, nil
}

// diskInfo describes one managed disk to a peer that will replicate it.
type diskInfo struct {
	Disk   string  `json:"disk"`
	IQN    string  `json:"iqn"`
	Size   int64   `json:"size"`
	Image  *wireID `json:"image"`
	Base   *wireID `json:"base,omitempty"`
	Sealed bool    `json:"sealed"`
	State  string  `json:"state"`
}

// disksReply lists an instance's managed disks on the answering host.
type disksReply struct {
	Instance string `json:"instance"`
	// ISCSIPort is the port of the host's iSCSI portal; the address is
	// the one the control API was reached at.
	ISCSIPort int        `json:"iscsi_port"`
	Disks     []diskInfo `json:"disks"`
}

// diskDelta is one sealed disk's replicator.Delta, binary encoded.
type diskDelta struct {
	Disk  string `json:"disk"`
	Delta []byte `json:"delta"`
}

// deltasReply hands over the modified sets of an instance's sealed disks.
type deltasReply struct {
	Disks []diskDelta `json:"disks"`
}

// diskProgress is a replica's copy progress, for the source's status.
type diskProgress struct {
	Disk           string  `json:"disk"`
	State          string  `json:"state"`
	Size           int64   `json:"size"`
	BytesRemaining int64   `json:"bytes_remaining"`
	Rate           float64 `json:"rate"`
	ETASeconds     float64 `json:"eta_seconds"`
}

type progressReply struct {
	Disks []diskProgress `json:"disks"`
}

// httpError carries a status code out of a handler.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

type apiFunc func(ctx context.Context, instance string) (any, error)

// controlHandler serves the control API behind authentication.
func (a *Agent) controlHandler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, f apiFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			inst := r.PathValue("instance")
			if err := checkInstance(inst); err != nil {
				writeAPIError(w, &httpError{http.StatusBadRequest, err})
				return
			}
			v, err := f(r.Context(), inst)
			if err != nil {
				writeAPIError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	route("GET /v1/instances/{instance}/disks", a.apiDisks)
	route("POST /v1/instances/{instance}/seal", a.apiSeal)
	route("POST /v1/instances/{instance}/unseal", a.apiUnseal)
	route("GET /v1/instances/{instance}/delta", a.apiDelta)
	route("POST /v1/instances/{instance}/copied", a.apiCopied)
	route("GET /v1/instances/{instance}/progress", a.apiProgress)
	return a.authenticate(mux)
}

func writeAPIError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// authenticate checks every request's signature and signs every answer.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
		if err != nil || len(body) > maxAPIBody {
			http.Error(w, "request body unreadable or too large", http.StatusRequestEntityTooLarge)
			return
		}
		nonce, err := a.sign.checkRequest(r, body)
		if err != nil {
			a.metrics.authFailures.Add(1)
			a.log.Warn("control API request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err)
			writeAPIError(w, &httpError{http.StatusUnauthorized, err})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &recorder{header: make(http.Header), code: http.StatusOK}
		next.ServeHTTP(rec, r)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		if a.sign != nil {
			w.Header().Set(headerSignature, a.sign.signResponse(nonce, rec.code, rec.body.Bytes()))
		}
		w.WriteHeader(rec.code)
		w.Write(rec.body.Bytes())
	})
}

// recorder buffers an answer so that it can be signed before it is sent.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.code = code }

func (a *Agent) apiDisks(_ context.Context, inst string) (any, error) {
	out := disksReply{Instance: inst, ISCSIPort: a.portal.addr().(*net.TCPAddr).Port, Disks: []diskInfo{}}
	for _, dk := range a.disks.ofInstance(inst) {
		st, o := dk.rep.Stats(), dk.rep.Origin()
		out.Disks = append(out.Disks, diskInfo{Disk: dk.ref.Disk, IQN: dk.ref.IQN(), Size: st.Size,
			Image: toWire(o.Image), Base: toWire(o.Base), Sealed: st.Sealed, State: st.State.String()})
	}
	return out, nil
}

// apiSeal seals the instance's exports (idempotent) and hands over their
// deltas. The destination calls it before it starts copying (rule 5); the
// source's own SealExports action does the same when it hears of the
// switch-over first.
func (a *Agent) apiSeal(ctx context.Context, inst string) (any, error) {
	if err := a.sealInstance(ctx, inst); err != nil {
		return nil, err
	}
	return a.apiDelta(ctx, inst)
}

func (a *Agent) apiUnseal(ctx context.Context, inst string) (any, error) {
	return struct{}{}, a.unsealInstance(ctx, inst)
}

func (a *Agent) apiDelta(_ context.Context, inst string) (any, error) {
	out := deltasReply{Disks: []diskDelta{}}
	for _, dk := range a.disks.ofInstance(inst) {
		d, err := dk.rep.Delta()
		if errors.Is(err, replicator.ErrNotSealed) {
			return nil, &httpError{http.StatusConflict, fmt.Errorf("disk %s: %w", dk.ref, err)}
		}
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", dk.ref, err)
		}
		b, err := d.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", dk.ref, err)
		}
		out.Disks = append(out.Disks, diskDelta{dk.ref.Disk, b})
	}
	return out, nil
}

// apiCopied is the destination telling this source that every chunk of
// the instance's disks is local there.
func (a *Agent) apiCopied(ctx context.Context, inst string) (any, error) {
	if _, err := a.node.Step(ctx, novahook.ReplicaUpdate{Instance: inst, Role: novahook.RoleSource, Kind: novahook.ReplicaCopied}); err != nil {
		a.fail(err)
		return nil, err
	}
	return struct{}{}, nil
}

func (a *Agent) apiProgress(_ context.Context, inst string) (any, error) {
	out := progressReply{Disks: []diskProgress{}}
	for _, dk := range a.disks.ofInstance(inst) {
		st := dk.rep.Stats()
		out.Disks = append(out.Disks, diskProgress{Disk: dk.ref.Disk, State: st.State.String(), Size: st.Size,
			BytesRemaining: st.BytesRemaining, Rate: st.Rate, ETASeconds: st.ETA.Seconds()})
	}
	return out, nil
}

// peerClient calls one peer's control API.
type peerClient struct {
	host string // Nova's name of the peer
	addr string // host:port of its control API
	sign *signer
	http *http.Client
}

// peer returns the client of a Nova host's agent: its address from
// [peers], else its hypervisor's host_ip in Nova, with the port of
// [api] listen when the address has none.
func (a *Agent) peer(ctx context.Context, host string) (*peerClient, error) {
	addr, ok := a.cfg.Peers[host]
	if !ok {
		if a.nova == nil {
			return nil, fmt.Errorf("peer %q is not in [peers], and [openstack] has no credentials to look it up in Nova", host)
		}
		ip, err := a.nova.hostIP(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", host, err)
		}
		addr = ip
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		_, port, _ := net.SplitHostPort(a.cfg.API.Listen)
		addr = net.JoinHostPort(addr, port)
	}
	return &peerClient{host: host, addr: addr, sign: a.sign, http: a.peerHTTP}, nil
}

// iscsiAddr is the peer's iSCSI portal: its control API host and the port
// it reported.
func (c *peerClient) iscsiAddr(port int) string {
	h, _, _ := net.SplitHostPort(c.addr)
	return net.JoinHostPort(h, strconv.Itoa(port))
}

func (c *peerClient) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, http.NoBody)
	if err != nil {
		return err
	}
	nonce, err := c.sign.signRequest(req, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody+1))
	if err != nil {
		return fmt.Errorf("peer %s: %s %s: %w", c.host, method, path, err)
	}
	authErr := c.sign.checkResponse(nonce, resp, body)
	if resp.StatusCode != http.StatusOK {
		// A failure is reported even unsigned (a refused request is answered
		// without the key's proof); only its text is then unverified.
		var e struct{ Error string }
		json.Unmarshal(body, &e)
		if authErr != nil {
			e.Error += " (unverified answer)"
		}
		return fmt.Errorf("peer %s: %s %s: %s: %s", c.host, method, path, resp.Status, e.Error)
	}
	if authErr != nil {
		return fmt.Errorf("peer %s: %s %s: %w", c.host, method, path, authErr)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("peer %s: %s %s: decoding answer: %w", c.host, method, path, err)
	}
	return nil
}

func (c *peerClient) disks(ctx context.Context, inst string) (disksReply, error) {
	var r disksReply
	return r, c.call(ctx, http.MethodGet, "/v1/instances/"+inst+"/disks", &r)
}

func (c *peerClient) seal(ctx context.Context, inst string) (deltasReply, error) {
	var r deltasReply
	return r, c.call(ctx, http.MethodPost, "/v1/instances/"+inst+"/seal", &r)
}

func (c *peerClient) copied(ctx context.Context, inst string) error {
	return c.call(ctx, http.MethodPost, "/v1/instances/"+inst+"/copied", &struct{}{})
}

func (c *peerClient) progress(ctx context.Context, inst string) (progressReply, error) {
	var r progressReply
	return r, c.call(ctx, http.MethodGet, "/v1/instances/"+inst+"/progress", &r)
}

// peerTimeout bounds one control API call.
const peerTimeout = 30 * time.Second
