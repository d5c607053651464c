package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestNeverPrinted(t *testing.T) {
	const value = "hunter2-hunter2"
	s := New(value)
	holder := struct {
		Name string
		Key  Secret
	}{"x", s}
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%08.3f"} {
		fmt.Fprintf(&out, verb+"|", s)
		fmt.Fprintf(&out, verb+"|", holder)
	}
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("m", "key", s, "holder", holder)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("m", "key", s)
	out.Write(logs.Bytes())
	if strings.Contains(out.String(), value) || strings.Contains(out.String(), fmt.Sprintf("%x", value)) {
		t.Fatalf("secret leaked: %s", out.String())
	}
	if s.Reveal() != value || s.IsZero() || !New("").IsZero() {
		t.Fatal("Reveal/IsZero")
	}
}
