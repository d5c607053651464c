package virt

import (
	"errors"
	"fmt"
	"testing"

	libvirt "github.com/digitalocean/go-libvirt"
)

func TestParseURI(t *testing.T) {
	for _, c := range []struct {
		uri, network, address, driver string
	}{
		{"", "unix", "/run/libvirt/libvirt-sock", "qemu:///system"},
		{"qemu:///system", "unix", "/run/libvirt/libvirt-sock", "qemu:///system"},
		{"qemu:///system?socket=/tmp/x/libvirt-sock", "unix", "/tmp/x/libvirt-sock", "qemu:///system"},
		{"qemu+unix:///system?socket=/s", "unix", "/s", "qemu:///system"},
		{"/run/libvirt/libvirt-sock", "unix", "/run/libvirt/libvirt-sock", "qemu:///system"},
		{"qemu+tcp://10.0.0.2/system", "tcp", "10.0.0.2:16509", "qemu:///system"},
		{"qemu+tcp://[fd00::2]:16600/system", "tcp", "[fd00::2]:16600", "qemu:///system"},
	} {
		network, address, driver, err := parseURI(c.uri)
		if err != nil || network != c.network || address != c.address || string(driver) != c.driver {
			t.Errorf("parseURI(%q) = %s %s %s %v, want %s %s %s", c.uri, network, address, driver, err, c.network, c.address, c.driver)
		}
	}
	for _, bad := range []string{"xen:///system", "qemu+ssh://h/system", "qemu://host/system", "::"} {
		if _, _, _, err := parseURI(bad); err == nil {
			t.Errorf("parseURI(%q) accepted", bad)
		}
	}
}

func TestUUID(t *testing.T) {
	const s = "8a1c1d9e-0000-4000-8000-00000000000a"
	u, err := ParseUUID(s)
	if err != nil || u.String() != s {
		t.Fatalf("round trip: %v %v", u, err)
	}
	if v, err := ParseUUID("8a1c1d9e000040008000-00000000000a"); err != nil || v != u {
		t.Fatalf("without dashes: %v %v", v, err)
	}
	for _, bad := range []string{"", "8a1c1d9e", "zz1c1d9e-0000-4000-8000-00000000000a"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
}

func TestISCSIDiskXML(t *testing.T) {
	d := ISCSIDisk{IQN: "iqn.2026-11.org.example:vm-1-disk-0", LUN: 0, Host: "127.0.0.1", Port: 3260}
	got, err := d.XML()
	want := `<disk type="network"><driver name="qemu" type="raw"></driver><source protocol="iscsi" name="iqn.2026-11.org.example:vm-1-disk-0/0"><host name="127.0.0.1" port="3260"></host></source></disk>`
	if err != nil || got != want {
		t.Fatalf("got %s, %v\nwant %s", got, err, want)
	}
	d.Username, d.SecretUsage = "u<1>", "chap-usage"
	got, err = d.XML()
	want = `<disk type="network"><driver name="qemu" type="raw"></driver><source protocol="iscsi" name="iqn.2026-11.org.example:vm-1-disk-0/0"><host name="127.0.0.1" port="3260"></host><auth username="u&lt;1&gt;"><secret type="iscsi" usage="chap-usage"></secret></auth></source></disk>`
	if err != nil || got != want {
		t.Fatalf("with CHAP: got %s, %v\nwant %s", got, err, want)
	}
	for _, bad := range []ISCSIDisk{{Host: "h", Port: 1}, {IQN: "i", Port: 1}, {IQN: "i", Host: "h"}, {IQN: "i", Host: "h", Port: 1, Username: "u"}} {
		if _, err := bad.XML(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestFileDiskXML(t *testing.T) {
	got, err := FileDisk{Path: "/var/lib/nova/instances/x/disk", Format: "qcow2"}.XML()
	want := `<disk type="file"><driver name="qemu" type="qcow2"></driver><source file="/var/lib/nova/instances/x/disk"></source></disk>`
	if err != nil || got != want {
		t.Fatalf("got %s, %v\nwant %s", got, err, want)
	}
	for _, bad := range []FileDisk{{Format: "raw"}, {Path: "/f"}, {Path: "/f", Format: "vmdk"}} {
		if _, err := bad.XML(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestMapError(t *testing.T) {
	for _, c := range []struct {
		code libvirt.ErrorNumber
		want error
	}{
		{libvirt.ErrNoDomain, ErrNoDomain},
		{libvirt.ErrNoSecret, ErrNoSecret},
		{libvirt.ErrOperationInvalid, ErrOperationInvalid},
		{libvirt.ErrOperationAborted, ErrOperationAborted},
		{libvirt.ErrHookScriptFailed, ErrHookFailed},
		{libvirt.ErrMigrateUnsafe, ErrMigrateUnsafe},
	} {
		err := mapError("op", fmt.Errorf("wrapped: %w", libvirt.Error{Code: uint32(c.code), Message: "msg"}))
		var e *Error
		if !errors.Is(err, c.want) || !errors.As(err, &e) || e.Code != c.code || e.Op != "op" {
			t.Errorf("code %v: %v does not match %v", c.code, err, c.want)
		}
	}
	generic := mapError("op", libvirt.Error{Code: uint32(libvirt.ErrInternalError), Message: "boom"})
	var e *Error
	if !errors.As(generic, &e) || e.Message != "boom" || errors.Is(generic, ErrNoDomain) || errors.Is(generic, ErrDisconnected) {
		t.Errorf("generic error: %v", generic)
	}
	if err := mapError("op", libvirt.ErrInterrupted); !errors.Is(err, ErrDisconnected) {
		t.Errorf("interrupted call: %v, want ErrDisconnected", err)
	}
	if err := mapError("op", nil); err != nil {
		t.Errorf("nil: %v", err)
	}
}

func TestLifecycleEventNames(t *testing.T) {
	for _, c := range []struct {
		e        LifecycleEvent
		s        string
		migrated bool
	}{
		{LifecycleEvent{Domain: Domain{Name: "d"}, Type: EventStarted, Detail: int32(libvirt.DomainEventStartedMigrated)}, "d started/migrated", true},
		{LifecycleEvent{Domain: Domain{Name: "d"}, Type: EventStopped, Detail: int32(libvirt.DomainEventStoppedDestroyed)}, "d stopped/destroyed", false},
		{LifecycleEvent{Domain: Domain{Name: "d"}, Type: EventSuspended, Detail: int32(libvirt.DomainEventSuspendedPostcopy)}, "d suspended/postcopy", true},
		{LifecycleEvent{Resync: true}, "resync", false},
	} {
		if c.e.String() != c.s || c.e.Migrated() != c.migrated {
			t.Errorf("%+v: %q migrated=%v, want %q %v", c.e, c.e.String(), c.e.Migrated(), c.s, c.migrated)
		}
	}
}
