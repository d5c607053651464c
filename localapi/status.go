package localapi

import "time"

// Status is the agent's status document (GET /v1/status), what
// `shareless status` shows. Byte counts are bytes; rates are bytes per
// second; an ETA of 0 means unknown.
type Status struct {
	Host string `json:"host"`
	// SafeToPowerOff is false while another host still copies from this
	// one: powering off would fail its guests' reads (design.md §3).
	SafeToPowerOff bool `json:"safe_to_power_off"`
	// CopyingFromHere lists those migrations, with their progress as the
	// destination reports it.
	CopyingFromHere []Outgoing  `json:"copying_from_here"`
	Migrations      []Migration `json:"migrations"`
	Disks           []Disk      `json:"disks"`
}

// Migration is one live migration as this host's state machine sees it.
type Migration struct {
	Instance string    `json:"instance"`
	Role     string    `json:"role"`
	Phase    string    `json:"phase"`
	Source   string    `json:"source"`
	Dest     string    `json:"dest,omitempty"`
	Home     bool      `json:"home,omitempty"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	// Done of Total bytes are local on the destination.
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
}

// Disk is one managed disk open on this host.
type Disk struct {
	Instance string `json:"instance"`
	Disk     string `json:"disk"`
	IQN      string `json:"iqn"`
	State    string `json:"state"`
	// Mode is "remote" for a remote-only replica (Method B: nothing is
	// copied until copy-now), "copy" otherwise.
	Mode   string `json:"mode"`
	Sealed bool   `json:"sealed"`
	Size   int64  `json:"size"`
	// BytesLocal are held here, BytesRemaining only at the source.
	BytesLocal     int64 `json:"bytes_local"`
	BytesRemaining int64 `json:"bytes_remaining"`
	// BytesCopied were fetched from the source since the disk was opened:
	// the whole disk for a full copy, the modified blocks for a way back.
	BytesCopied int64   `json:"bytes_copied"`
	Rate        float64 `json:"rate"`
	ETASeconds  float64 `json:"eta_seconds"`
	// SourceDownSince is set while the source does not answer.
	SourceDownSince *time.Time `json:"source_down_since,omitempty"`
}

// Outgoing is a migration that still copies from this host.
type Outgoing struct {
	Instance string `json:"instance"`
	Dest     string `json:"dest,omitempty"`
	Phase    string `json:"phase"`
	// Known is false when the destination could not be asked; the other
	// fields are then zero and Error says why.
	Known bool `json:"known"`
	// Replicas is the number of the instance's disks still copying.
	Replicas       int     `json:"replicas,omitempty"`
	Size           int64   `json:"size,omitempty"`
	BytesRemaining int64   `json:"bytes_remaining,omitempty"`
	Rate           float64 `json:"rate,omitempty"`
	ETASeconds     float64 `json:"eta_seconds,omitempty"`
	Error          string  `json:"error,omitempty"`
}
