package cinderbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/shareless/shareless/internal/secret"
)

// mapFile is the JSON form of a TransportMap, as an operator writes it in
// /etc/shareless/transport.json: the same file on the Cinder volume nodes
// (read by `shareless cinder-driver`) and on the compute hosts (read by
// the agent, for the CHAP of the iSCSI disks its hook writes). Passwords
// live in files of their own, never in this one.
type mapFile struct {
	Backends []struct {
		Name      string   `json:"name"`
		FCTargets []string `json:"fc_targets"`
		ISCSI     []struct {
			Portal    string   `json:"portal"`
			IQN       string   `json:"iqn"`
			FCTargets []string `json:"fc_targets"`
		} `json:"iscsi"`
		CHAP *struct {
			Username     string `json:"username"`
			PasswordFile string `json:"password_file"`
		} `json:"chap"`
		LUN struct {
			Offset   int            `json:"offset"`
			Explicit map[string]int `json:"explicit"`
		} `json:"lun"`
		Carrier *struct {
			Host  string   `json:"host"`
			WWPNs []string `json:"wwpns"`
			WWNNs []string `json:"wwnns"`
		} `json:"carrier"`
	} `json:"backends"`
}

// LoadTransportMap reads and validates a transport map file. Unknown keys
// are errors (a misspelt key must not silently drop a setting); every
// error names the file and the backend.
func LoadTransportMap(path string) (*TransportMap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("transport map: %w", err)
	}
	m, err := ParseTransportMap(raw, os.ReadFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ParseTransportMap decodes the JSON form of a transport map; readFile
// reads the CHAP password files.
func ParseTransportMap(raw []byte, readFile func(string) ([]byte, error)) (*TransportMap, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f mapFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("transport map: %w", err)
	}
	m := &TransportMap{}
	for i, fb := range f.Backends {
		bad := func(format string, args ...any) error {
			return &MapError{Backend: fb.Name, Problem: BadMap, Detail: fmt.Sprintf("backend %d: ", i) + fmt.Sprintf(format, args...)}
		}
		b := Backend{Name: fb.Name, LUN: LUNMapping{Offset: fb.LUN.Offset}}
		var err error
		if b.FCTargets, err = parseWWNs("fc_targets", fb.FCTargets); err != nil {
			return nil, bad("%v", err)
		}
		for j, p := range fb.ISCSI {
			portal, err := ParsePortal(p.Portal)
			if err != nil {
				return nil, bad("iscsi[%d]: %v", j, err)
			}
			wwns, err := parseWWNs("fc_targets", p.FCTargets)
			if err != nil {
				return nil, bad("iscsi[%d]: %v", j, err)
			}
			b.ISCSI = append(b.ISCSI, ISCSIPath{Portal: portal, IQN: p.IQN, FCTargets: wwns})
		}
		if c := fb.CHAP; c != nil {
			if c.PasswordFile == "" {
				return nil, bad("chap: password_file is required")
			}
			pw, err := readFile(c.PasswordFile)
			if err != nil {
				return nil, bad("chap: %v", err)
			}
			b.CHAP = &CHAP{Username: c.Username, Password: secret.New(strings.TrimRight(string(pw), "\r\n"))}
		}
		if fb.LUN.Explicit != nil {
			b.LUN.Explicit = make(map[int]int, len(fb.LUN.Explicit))
			for k, v := range fb.LUN.Explicit {
				n, err := strconv.Atoi(k)
				if err != nil {
					return nil, bad("lun.explicit: key %q is not a LUN number", k)
				}
				b.LUN.Explicit[n] = v
			}
		}
		if c := fb.Carrier; c != nil {
			wwpns, err := parseWWNs("carrier.wwpns", c.WWPNs)
			if err != nil {
				return nil, bad("%v", err)
			}
			wwnns, err := parseWWNs("carrier.wwnns", c.WWNNs)
			if err != nil {
				return nil, bad("%v", err)
			}
			if len(wwpns) == 0 || len(wwnns) == 0 {
				return nil, bad("carrier: wwpns and wwnns are both required")
			}
			b.Carrier = &Carrier{Host: c.Host, WWPNs: wwpns, WWNNs: wwnns}
		}
		m.Backends = append(m.Backends, b)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}
