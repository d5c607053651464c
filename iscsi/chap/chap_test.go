package chap

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"
)

// TestResponseVector checks MD5(id||secret||challenge) against a value
// computed by hand with md5sum: printf '\x01secretsecret\x00\x01' | md5sum.
func TestResponseVector(t *testing.T) {
	got := hex.EncodeToString(Response(1, []byte("secretsecret"), []byte{0, 1}))
	const want = "8f4da30ed345b27a9fe9ab496f5f9125"
	if got != want {
		t.Fatalf("Response = %s, want %s", got, want)
	}
	if !Verify(1, []byte("secretsecret"), []byte{0, 1}, Response(1, []byte("secretsecret"), []byte{0, 1})) {
		t.Fatal("Verify rejects a correct response")
	}
	if Verify(2, []byte("secretsecret"), []byte{0, 1}, Response(1, []byte("secretsecret"), []byte{0, 1})) {
		t.Fatal("Verify accepts a response to another identifier")
	}
}

func TestBinary(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []byte
	}{{"0x0102ff", []byte{1, 2, 0xff}}, {"0X102", []byte{1, 2}}, {"0bAQL/", []byte{1, 2, 0xff}}} {
		got, err := DecodeBinary(c.in)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("DecodeBinary(%q) = %x, %v", c.in, got, err)
		}
	}
	for _, bad := range []string{"", "0x", "12ab", "0xzz", "0b!!"} {
		if _, err := DecodeBinary(bad); err == nil {
			t.Errorf("DecodeBinary(%q) accepted", bad)
		}
	}
	if EncodeBinary([]byte{0xab, 1}) != "0xab01" {
		t.Error("EncodeBinary")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s, err := NewSecret([]byte("supersecret-123"))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, Credentials{"u", s}, s, s)} {
		if bytes.Contains([]byte(out), []byte("supersecret")) {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if _, err := NewSecret([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}
