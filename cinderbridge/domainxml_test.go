package cinderbridge

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"github.com/shareless/shareless/domainxml"
	"github.com/shareless/shareless/internal/secret"
	"github.com/shareless/shareless/internal/testenv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/domainxml")

var chapA = &CHAP{Username: "shareless", Password: secret.New("0123456789abcdef")}

// goldenCases name testdata/domainxml/<name>.in.xml and .want.xml.
var goldenCases = map[string][]ISCSIDisk{
	// A Nova guest: file root disk with a backing file, an FC volume
	// through a by-path device (the os-brick name without multipath), a
	// config drive, and the usual other devices. The volume is encrypted
	// (Nova's native LUKS: _update_volume_xml adds <encryption> with the
	// passphrase secret), which must survive. The volume becomes an iSCSI
	// network disk with CHAP and the destination's initiator name.
	"nova-fc-volume": {{
		VolumeID: "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11",
		Conn: &ISCSI{Targets: []ISCSITarget{
			{Portal{"192.0.2.10", 3260}, "iqn.1992-08.com.netapp:sn.a1", 1},
			{Portal{"192.0.2.11", 3260}, "iqn.1992-08.com.netapp:sn.a2", 1}}, Auth: chapA},
		SecretUsage:  SecretUsage("iqn.1992-08.com.netapp:sn.a1", "shareless"),
		InitiatorIQN: "iqn.1993-08.org.debian:01:compute2",
	}},
	// A device='lun' volume (no serial: found by its multipath device
	// path) and a read-only shareable volume, in a document written with
	// double quotes, tabs, an XML declaration and a comment.
	"multipath-lun": {{
		DevicePath: "/dev/disk/by-id/dm-uuid-mpath-3600a098038303052342445",
		Conn:       &ISCSI{Targets: []ISCSITarget{{Portal{"2001:db8::20", 3260}, "iqn.2010-06.com.purestorage:flasharray.b", 103}}},
	}, {
		VolumeID: "0d8f7e6a-1b2c-4d3e-8f9a-0b1c2d3e4f50",
		// SAM2 addressing and LUN 300: libiscsi must be given 16684.
		Conn: &ISCSI{Attrs: Attrs{AddressingMode: AddressingSAM2},
			Targets: []ISCSITarget{{Portal{"198.51.100.20", 3261}, "iqn.2010-06.com.purestorage:flasharray.b", 300}}, Auth: &CHAP{Username: "user-b", Password: secret.New("x")}},
		// A usage name with characters that need escaping.
		SecretUsage: `b & "c" <d>`,
	}},
	// A disk rewritten before (a hook run twice, or an old libvirt that put
	// <auth> beside <source>): the old auth goes, the new source has its
	// own.
	"rerun-old-auth": {{
		VolumeID: "11111111-2222-3333-4444-555555555555",
		Conn: &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, "iqn.2010-10.org.openstack:volume-new", 2}},
			Auth: &CHAP{Username: "newuser", Password: secret.New("y")}},
		SecretUsage: "new-usage",
	}},
}

func TestRewriteDomainXMLGolden(t *testing.T) {
	for name, disks := range goldenCases {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", "domainxml", name+".in.xml"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := RewriteDomainXML(in, disks)
			if err != nil {
				t.Fatal(err)
			}
			wantPath := filepath.Join("testdata", "domainxml", name+".want.xml")
			if *update {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -run Golden -update rewrites it):\n%s", wantPath, got)
			}
			checkWellFormed(t, got)
			checkOnlyDisksChanged(t, in, got, len(disks))
			// Rewriting the output again changes nothing: the hook may run
			// twice.
			again, err := RewriteDomainXML(got, disks)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("second rewrite changed the output:\n%s", again)
			}
		})
	}
}

func checkWellFormed(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("output is not well formed: %v\n%s", err, b)
		}
	}
}

// diskRanges returns the byte ranges of the /domain/devices/disk elements.
func diskRanges(t *testing.T, b []byte) []domainxml.Span {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var out []domainxml.Span
	depth := 0
	var at int64
	for {
		start := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 3 && tk.Name.Local == "disk" {
				at = start
			}
		case xml.EndElement:
			if depth == 3 && tk.Name.Local == "disk" {
				out = append(out, domainxml.Span{Start: at, End: d.InputOffset()})
			}
			depth--
		}
	}
}

// checkOnlyDisksChanged: outside the disks that differ, input and output
// are the same bytes, and exactly n disks differ.
func checkOnlyDisksChanged(t *testing.T, in, out []byte, n int) {
	t.Helper()
	ri, ro := diskRanges(t, in), diskRanges(t, out)
	if len(ri) != len(ro) {
		t.Fatalf("%d disks in, %d out", len(ri), len(ro))
	}
	var restIn, restOut []byte
	var atIn, atOut int64
	changed := 0
	for i := range ri {
		di, do := in[ri[i].Start:ri[i].End], out[ro[i].Start:ro[i].End]
		if !bytes.Equal(di, do) {
			changed++
		}
		restIn = append(restIn, in[atIn:ri[i].Start]...)
		restOut = append(restOut, out[atOut:ro[i].Start]...)
		atIn, atOut = ri[i].End, ro[i].End
	}
	restIn, restOut = append(restIn, in[atIn:]...), append(restOut, out[atOut:]...)
	if !bytes.Equal(restIn, restOut) {
		t.Errorf("bytes outside the disks changed")
	}
	if changed != n {
		t.Errorf("%d disks changed, want %d", changed, n)
	}
}

// The golden outputs must be valid for libvirt's own schema. The tool
// comes with Debian's libvirt-clients, which scripts/deps.sh installs.
func TestGoldenOutputsMatchLibvirtSchema(t *testing.T) {
	tool := testenv.NeedCommands(t, "virt-xml-validate")[0]
	files, err := filepath.Glob(filepath.Join("testdata", "domainxml", "*.want.xml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden outputs: %v", err)
	}
	dir := t.TempDir()
	for _, f := range files {
		if out, err := exec.Command(tool, f, "domain").CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	secret, err := SecretXML(SecretUsage("iqn.1992-08.com.netapp:sn.a1", "shareless"), "CHAP for <array A> & co")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "secret.xml")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, path, "secret").CombinedOutput(); err != nil {
		t.Errorf("secret XML: %v\n%s", err, out)
	}
}

func TestSecretXML(t *testing.T) {
	got, err := SecretXML("shareless-chap iqn.1992-08.com.netapp:sn.a1 shareless", "CHAP <a>")
	if err != nil {
		t.Fatal(err)
	}
	const want = `<secret ephemeral='no' private='yes'>
  <description>CHAP &lt;a&gt;</description>
  <usage type='iscsi'>
    <target>shareless-chap iqn.1992-08.com.netapp:sn.a1 shareless</target>
  </usage>
</secret>
`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{"", "a/b", "a\nb"} {
		if _, err := SecretXML(bad, ""); err == nil {
			t.Errorf("usage %q accepted", bad)
		}
	}
	if u := SecretUsage("iqn.x:y", "we/ird\nuser"); strings.ContainsAny(u, "/\n") {
		t.Errorf("SecretUsage = %q", u)
	}
}

func TestRewriteDomainXMLErrors(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "domainxml", "nova-fc-volume.in.xml"))
	if err != nil {
		t.Fatal(err)
	}
	conn := &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, "iqn.2000-01.x:a", 1}}}
	tests := []struct {
		name    string
		domain  []byte
		disks   []ISCSIDisk
		problem DiskProblem
	}{
		{"not found", in, []ISCSIDisk{{VolumeID: "nope", Conn: conn}}, DiskNotFound},
		{"file disk", in, []ISCSIDisk{{DevicePath: "x", VolumeID: "", Conn: conn}}, DiskNotFound},
		{"no match key", in, []ISCSIDisk{{Conn: conn}}, DiskBadRequest},
		{"no conn", in, []ISCSIDisk{{VolumeID: "v"}}, DiskBadRequest},
		{"no targets", in, []ISCSIDisk{{VolumeID: "v", Conn: &ISCSI{}}}, DiskBadRequest},
		{"chap without usage", in, []ISCSIDisk{{VolumeID: "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", Conn: &ISCSI{Targets: conn.Targets, Auth: chapA}}}, DiskBadRequest},
		{"chap usage with slash", in, []ISCSIDisk{{VolumeID: "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", Conn: &ISCSI{Targets: conn.Targets, Auth: chapA}, SecretUsage: "a/b"}}, DiskBadRequest},
		{"bad initiator", in, []ISCSIDisk{{VolumeID: "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", Conn: conn, InitiatorIQN: "host"}}, DiskBadRequest},
		{"bad iqn", in, []ISCSIDisk{{VolumeID: "v", Conn: &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, "x'/>", 1}}}}}, DiskBadRequest},
		{"bad portal", in, []ISCSIDisk{{VolumeID: "v", Conn: &ISCSI{Targets: []ISCSITarget{{Portal{"a'b", 3260}, "iqn.2000-01.x:a", 1}}}}}, DiskBadRequest},
		{"two requests one disk", in, []ISCSIDisk{{VolumeID: "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", Conn: conn},
			{DevicePath: "/dev/disk/by-path/pci-0000:05:00.2-fc-0x500a098280feeba5-lun-1", Conn: conn}}, DiskAmbiguous},
		{"addressing mode", in, []ISCSIDisk{{VolumeID: "v", Conn: &ISCSI{Attrs: Attrs{AddressingMode: "x"}, Targets: conn.Targets}}}, DiskBadRequest},
		{"twice", in, []ISCSIDisk{{VolumeID: "v", Conn: conn}, {VolumeID: "v", Conn: conn}}, DiskBadRequest},
		{"ambiguous", []byte(`<domain><devices><disk type='block'><source dev='/a'/><serial>v</serial></disk><disk type='block'><source dev='/b'/><serial>v</serial></disk></devices></domain>`),
			[]ISCSIDisk{{VolumeID: "v", Conn: conn}}, DiskAmbiguous},
		{"rbd disk", []byte(`<domain><devices><disk type='network'><source protocol='rbd' name='p/v'/><serial>v</serial></disk></devices></domain>`),
			[]ISCSIDisk{{VolumeID: "v", Conn: conn}}, DiskUnsupported},
		{"file volume", []byte(`<domain><devices><disk type='file'><source file='/mnt/nfs/v'/><serial>v</serial></disk></devices></domain>`),
			[]ISCSIDisk{{VolumeID: "v", Conn: conn}}, DiskUnsupported},
		{"no source", []byte(`<domain><devices><disk type='block'><serial>v</serial></disk></devices></domain>`),
			[]ISCSIDisk{{VolumeID: "v", Conn: conn}}, DiskUnsupported},
		{"serial outside devices", []byte(`<domain><disk type='block'><source dev='/a'/><serial>v</serial></disk></domain>`),
			[]ISCSIDisk{{VolumeID: "v", Conn: conn}}, DiskNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RewriteDomainXML(tt.domain, tt.disks)
			var de *DiskError
			if !errors.As(err, &de) || de.Problem != tt.problem {
				t.Errorf("err = %v, want %v", err, tt.problem)
			}
		})
	}
	for _, bad := range []string{``, `<domain>`, `<domain><devices></domain>`, `<domain a='1' a='2'/>`, `<domain>&nbsp;</domain>`} {
		if _, err := RewriteDomainXML([]byte(bad), []ISCSIDisk{{VolumeID: "v", Conn: conn}}); err == nil {
			t.Errorf("malformed %q accepted", bad)
		}
	}
}

// A compact document (no white space at all) gets a compact source.
func TestRewriteDomainXMLCompact(t *testing.T) {
	in := `<domain><devices><disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/><serial>v</serial></disk></devices></domain>`
	got, err := RewriteDomainXML([]byte(in), []ISCSIDisk{{VolumeID: "v", Conn: &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.1", 3260}, "iqn.2000-01.x:a", 0}}}}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `<domain><devices><disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='iscsi' name='iqn.2000-01.x:a/0'><host name='192.0.2.1' port='3260'/></source><target dev='vdb' bus='virtio'/><serial>v</serial></disk></devices></domain>`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// No disk to rewrite: the output is the input, byte for byte.
func TestRewriteDomainXMLNothing(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "domainxml", "multipath-lun.in.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := RewriteDomainXML(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, in) {
		t.Error("output differs from input")
	}
}

func TestListDisks(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "domainxml", "multipath-lun.in.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ListDisks(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []DiskRef{
		{Type: "file", Device: "disk", TargetDev: "sda"},
		{Type: "block", Device: "lun", SourceDev: "/dev/disk/by-id/dm-uuid-mpath-3600a098038303052342445", TargetDev: "sdb"},
		{Type: "block", Device: "disk", Serial: "0d8f7e6a-1b2c-4d3e-8f9a-0b1c2d3e4f50", SourceDev: "/dev/dm-7", TargetDev: "sdc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	out, err := os.ReadFile(filepath.Join("testdata", "domainxml", "rerun-old-auth.want.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err = ListDisks(out)
	if err != nil {
		t.Fatal(err)
	}
	want = []DiskRef{{Type: "network", Device: "disk", Serial: "11111111-2222-3333-4444-555555555555",
		SourceProtocol: "iscsi", SourceName: "iqn.2010-10.org.openstack:volume-new/2", TargetDev: "vdb"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if _, err := ListDisks([]byte("<domain>")); err == nil {
		t.Error("malformed XML listed")
	}
}
