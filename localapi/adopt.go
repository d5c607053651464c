package localapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Adoption describes an adopted instance: which managed disk each of its
// local file disks became. The agent keeps it as the instance's adoption
// guard (<state_path>/guard/<domain name>) and answers it to `shareless
// adopt` and `shareless release`.
type Adoption struct {
	Instance string        `json:"instance"`
	Domain   string        `json:"domain"`
	Disks    []AdoptedDisk `json:"disks"`
}

// AdoptedDisk is one file disk and the managed disk that replaced it.
type AdoptedDisk struct {
	Target string `json:"target"` // guest device, e.g. "vda"
	File   string `json:"file"`   // Nova's image, not used while adopted
	Format string `json:"format"` // the file's format: raw or qcow2
	Disk   string `json:"disk"`   // the managed disk's name within the instance
	IQN    string `json:"iqn"`
	Size   int64  `json:"size"` // guest-visible bytes
}

// Progress is how far the block copy of one disk is.
type Progress struct {
	Target string `json:"target"`
	Done   uint64 `json:"done"`
	Total  uint64 `json:"total"`
}

// adoptLine is one line of the answer to an adopt or release request:
// progress lines, then one line with the result or the error. Streaming
// lets the CLI show a copy that takes minutes as it goes.
type adoptLine struct {
	Progress *Progress `json:"progress,omitempty"`
	Result   *Adoption `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// ServerRequest names the instance of an adopt or release request: a
// libvirt domain name, an instance UUID or a Nova server name. Files are
// the disk files of a file adoption (Backend.AdoptFiles), whose Server is
// an instance UUID.
type ServerRequest struct {
	Server string   `json:"server"`
	Files  []string `json:"files,omitempty"`
}

// serveAdoption streams run's progress and its result as adoptLines.
func serveAdoption(w http.ResponseWriter, r *http.Request, run func(context.Context, ServerRequest, func(Progress)) (Adoption, error)) {
	var req ServerRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("decoding request: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	send := func(l adoptLine) {
		enc.Encode(l) // a client that went away stops reading; run goes on
		if flusher != nil {
			flusher.Flush()
		}
	}
	res, err := run(r.Context(), req, func(p Progress) { send(adoptLine{Progress: &p}) })
	if err != nil {
		send(adoptLine{Error: err.Error()})
		return
	}
	send(adoptLine{Result: &res})
}

// Adopt asks the agent to adopt server's file disks; progress, if not
// nil, is called as the copies advance.
func (c *Client) Adopt(ctx context.Context, server string, progress func(Progress)) (Adoption, error) {
	return c.adoption(ctx, "/v1/adopt", ServerRequest{Server: server}, progress)
}

// AdoptFiles asks the agent to adopt the disk files of instance, which
// has no libvirt domain on this host (Backend.AdoptFiles).
func (c *Client) AdoptFiles(ctx context.Context, instance string, files []string, progress func(Progress)) (Adoption, error) {
	return c.adoption(ctx, "/v1/adopt-files", ServerRequest{Server: instance, Files: files}, progress)
}

// Release asks the agent to give server's disks back to their files.
func (c *Client) Release(ctx context.Context, server string, progress func(Progress)) (Adoption, error) {
	return c.adoption(ctx, "/v1/release", ServerRequest{Server: server}, progress)
}

func (c *Client) adoption(ctx context.Context, path string, req ServerRequest, progress func(Progress)) (Adoption, error) {
	var res Adoption
	err := c.roundTrip(ctx, http.MethodPost, path, req, func(r io.Reader) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, maxBody)
		for sc.Scan() {
			var l adoptLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return fmt.Errorf("decoding agent answer: %w", err)
			}
			switch {
			case l.Error != "":
				return errors.New(l.Error)
			case l.Result != nil:
				res = *l.Result
				return nil
			case l.Progress != nil && progress != nil:
				progress(*l.Progress)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("agent at %s: %w", c.socket, err)
		}
		return fmt.Errorf("agent at %s ended its answer without a result", c.socket)
	})
	return res, err
}
