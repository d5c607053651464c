// Package novaemit sends Nova versioned notifications for tests the way
// Nova sends them: through Nova's own notifier library,
// python3-oslo.messaging, driven by emit_nova.py (see its docstring).
package novaemit

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
)

//go:embed emit_nova.py
var script string

// python is Debian's interpreter, which has python3-oslo.messaging; a
// python3 earlier on PATH (pyenv, venv) may not.
const python = "/usr/bin/python3"

// Line is one notification: a resolved sample file and what to override
// in it.
type Line struct {
	Sample      string `json:"sample"`
	PublisherID string `json:"publisher_id,omitempty"` // "nova-compute:<host>"
	UUID        string `json:"uuid,omitempty"`
	Host        string `json:"host,omitempty"` // payload.host
}

// Need ends the test (skip, or fail under SHARELESS_STRICT) unless
// python3-oslo.messaging is importable.
func Need(t testing.TB) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import oslo_messaging").CombinedOutput(); err != nil {
		if testenv.Strict() {
			t.Fatalf("python3-oslo.messaging: %v %s", err, out)
		}
		t.Skipf("python3-oslo.messaging missing (scripts/deps.sh installs it): %s", out)
	}
}

// Emit sends plan to the broker at transportURL (an oslo rabbit:// URL)
// with driver messagingv2 or messaging, from one notifier, in order.
func Emit(ctx context.Context, transportURL, driver string, plan []Line) error {
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, p := range plan {
		if err := enc.Encode(p); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, python, "-c", script, transportURL, driver)
	cmd.Stdin = &in
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("sent %d", len(plan))) {
		return fmt.Errorf("emit_nova.py: %v\n%s", err, out)
	}
	return nil
}
