package cinderbridge

import (
	"fmt"
	"log/slog"
)

// Secret holds a CHAP password. It never prints itself: every fmt verb,
// slog and encoding/json see "<redacted>". Only Reveal gives the value, and
// only the code that writes a connection_info for Cinder/Nova or sets a
// libvirt secret's value calls it.
type Secret struct{ v string }

// NewSecret wraps a password.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the password.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no password is set.
func (s Secret) IsZero() bool { return s.v == "" }

const redacted = "<redacted>"

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return "cinderbridge.Secret{" + redacted + "}" }

// Format redacts under every verb (%d and %x included), which String alone
// would not cover.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts the secret in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts: a Secret that must reach the wire is written with
// Reveal, deliberately.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts, for encoders that use TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
