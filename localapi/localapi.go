// Package localapi is the agent's API on a unix socket, and its client.
// The libvirt hook and the operator CLI are thin clients of it (the
// tailscale pattern): they never touch libvirt, the store or the network
// themselves. The hook in particular must not call libvirt, because
// libvirtd waits for the hook to return.
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// HookRequest is one call of libvirt's qemu hook: the hook's arguments and
// the domain XML libvirt wrote on its stdin.
type HookRequest struct {
	Domain string `json:"domain"`
	Op     string `json:"op"`
	SubOp  string `json:"sub_op"`
	Extra  string `json:"extra"`
	XML    string `json:"xml"`
}

// HookResponse is the agent's answer. XML, when not empty, replaces the
// domain XML (libvirt honours this for "migrate begin" and "restore").
type HookResponse struct {
	XML string `json:"xml,omitempty"`
}

// ServedLocally reports whether a domain has a disk that the local agent
// serves: an iSCSI network disk on a loopback portal (a managed disk has
// the same XML on every host, reached on 127.0.0.1). Domains without one
// owe nothing to the agent, so neither the hook nor the agent makes them
// wait.
func ServedLocally(domainXML string) (bool, error) {
	var dom struct {
		Disks []struct {
			Source struct {
				Protocol string `xml:"protocol,attr"`
				Hosts    []struct {
					Name string `xml:"name,attr"`
				} `xml:"host"`
			} `xml:"source"`
		} `xml:"devices>disk"`
	}
	if err := xml.Unmarshal([]byte(domainXML), &dom); err != nil {
		return false, fmt.Errorf("domain XML: %w", err)
	}
	for _, d := range dom.Disks {
		if d.Source.Protocol != "iscsi" {
			continue
		}
		for _, h := range d.Source.Hosts {
			if h.Name == "localhost" || h.Name == "::1" || strings.HasPrefix(h.Name, "127.") {
				return true, nil
			}
		}
	}
	return false, nil
}

// Backend is what the agent implements behind the socket.
type Backend interface {
	// Hook decides a hook call. An error aborts the libvirt operation and
	// its text is what libvirt logs.
	Hook(ctx context.Context, req HookRequest) (HookResponse, error)
	// Status reports migrations and replicas for `shareless status`.
	Status(ctx context.Context) (json.RawMessage, error)
	// Adopt turns the running instance server's local file disks into
	// managed disks; Release gives them back to their files. Both call
	// progress as block copies advance.
	Adopt(ctx context.Context, server string, progress func(Progress)) (Adoption, error)
	Release(ctx context.Context, server string, progress func(Progress)) (Adoption, error)
	// AdoptFiles turns disk files of instance (a UUID) that has no libvirt
	// domain on this host into managed disks, copying them; progress as
	// for Adopt, with the file's name as the target.
	AdoptFiles(ctx context.Context, instance string, files []string, progress func(Progress)) (Adoption, error)
	// CopyNow switches the instance's remote-only replicas (Method B) to
	// copying (Method C) and reports the disks it switched.
	CopyNow(ctx context.Context, instance string) (CopyNowResult, error)
}

// CopyNowResult answers a copy-now request.
type CopyNowResult struct {
	Instance string `json:"instance"`
	// Switched are the disks that were remote-only and now copy; Copying
	// the instance's other disks here (already copying or complete).
	Switched []string `json:"switched"`
	Copying  []string `json:"copying"`
}

// errorBody is the JSON body of every non-2xx answer.
type errorBody struct {
	Error string `json:"error"`
}

// Handler serves a Backend over HTTP.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hook", func(w http.ResponseWriter, r *http.Request) {
		var req HookRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("decoding hook request: %w", err))
			return
		}
		resp, err := b.Hook(r.Context(), req)
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	byServer := func(run func(context.Context, string, func(Progress)) (Adoption, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			serveAdoption(w, r, func(ctx context.Context, req ServerRequest, p func(Progress)) (Adoption, error) {
				return run(ctx, req.Server, p)
			})
		}
	}
	mux.HandleFunc("POST /v1/adopt", byServer(b.Adopt))
	mux.HandleFunc("POST /v1/release", byServer(b.Release))
	mux.HandleFunc("POST /v1/adopt-files", func(w http.ResponseWriter, r *http.Request) {
		serveAdoption(w, r, func(ctx context.Context, req ServerRequest, p func(Progress)) (Adoption, error) {
			return b.AdoptFiles(ctx, req.Server, req.Files, p)
		})
	})
	mux.HandleFunc("POST /v1/copy-now", func(w http.ResponseWriter, r *http.Request) {
		var req ServerRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("decoding request: %w", err))
			return
		}
		res, err := b.CopyNow(r.Context(), req.Server)
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	return mux
}

// maxBody bounds request bodies: a domain XML is a few KiB.
const maxBody = 8 << 20

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorBody{Error: err.Error()})
}

// Client talks to the agent's socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		// One request per process: keep-alive would only hold the agent's
		// connection open after the hook exits.
		DisableKeepAlives: true,
	}}}
}

// ErrAgentUnreachable reports that nothing answers on the socket.
var ErrAgentUnreachable = errors.New("shareless agent unreachable")

// Hook sends a hook call. ctx bounds the whole exchange.
func (c *Client) Hook(ctx context.Context, req HookRequest) (HookResponse, error) {
	var resp HookResponse
	err := c.do(ctx, http.MethodPost, "/v1/hook", req, &resp)
	return resp, err
}

// Status fetches the agent's status document.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	var st json.RawMessage
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// CopyNow asks the agent to switch instance's remote-only replicas to
// copying.
func (c *Client) CopyNow(ctx context.Context, instance string) (CopyNowResult, error) {
	var res CopyNowResult
	err := c.do(ctx, http.MethodPost, "/v1/copy-now", ServerRequest{Server: instance}, &res)
	return res, err
}

// do sends in as JSON and decodes the answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.roundTrip(ctx, method, path, in, func(r io.Reader) error {
		if err := json.NewDecoder(r).Decode(out); err != nil {
			return fmt.Errorf("decoding agent answer: %w", err)
		}
		return nil
	})
}

// roundTrip sends in as JSON and hands a successful answer's body to read.
func (c *Client) roundTrip(ctx context.Context, method, path string, in any, read func(io.Reader) error) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return fmt.Errorf("%w at %s: %v", ErrAgentUnreachable, c.socket, opErr.Err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("agent at %s did not answer in time: %w", c.socket, ctx.Err())
		}
		return fmt.Errorf("agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	r := io.LimitReader(resp.Body, maxBody)
	if resp.StatusCode/100 != 2 {
		var e errorBody
		if err := json.NewDecoder(r).Decode(&e); err != nil || e.Error == "" {
			return fmt.Errorf("agent answered %s", resp.Status)
		}
		return errors.New(e.Error)
	}
	return read(r)
}

// Serve serves b on the unix socket until ctx ends.
func Serve(ctx context.Context, l net.Listener, b Backend) error {
	srv := &http.Server{Handler: Handler(b), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
