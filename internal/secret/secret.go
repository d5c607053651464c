// Package secret holds passwords, keys and CHAP secrets so that they cannot
// leak through logs, error messages or encoded documents.
package secret

import (
	"fmt"
	"io"
	"log/slog"
)

// Redacted is what a Secret prints instead of its value.
const Redacted = "<redacted>"

// Secret never prints itself: every fmt verb (%d and %x included, which
// String alone would not cover), slog, encoding/json and TextMarshaler-based
// encoders see Redacted. Only Reveal gives the value, and only code that
// must put it on the wire (a CHAP exchange, a libvirt secret value, a
// connection_info for Nova) calls it.
type Secret struct{ v string }

// New wraps v.
func New(v string) Secret { return Secret{v} }

// Reveal returns the value.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no value is set.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string               { return Redacted }
func (s Secret) GoString() string             { return "secret.Secret{" + Redacted + "}" }
func (s Secret) Format(f fmt.State, _ rune)   { io.WriteString(f, Redacted) }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
