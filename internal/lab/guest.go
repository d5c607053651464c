package lab

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Guest is the tiny guest: Debian's kernel (as an uncompressed ELF that
// QEMU boots directly, about twice as fast under TCG as the bzImage) and an
// initramfs of busybox-static and the virtio block modules. Its init
// writes a counter to sector 0 of every virtio disk once a second, with
// fsync, so a test sees from outside that the guest runs and where its
// writes land. It prints "SHARELESS-GUEST-UP" on the serial console when
// it starts counting.
type Guest struct {
	Kernel string
	Initrd string
}

// BootMarker is what the guest prints on its console once it counts.
const BootMarker = "SHARELESS-GUEST-UP"

// guestModules are loaded in this order (dependencies first).
const guestModules = "virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"

// guestInit is the guest's /init.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ` + guestModules + `; do insmod /mods/$m.ko; done
n=0
echo "` + BootMarker + ` disks: $(cd /sys/block && echo vd*)"
while true; do
	n=$((n+1))
	for d in /sys/block/vd*; do
		[ -e "$d" ] || continue
		printf 'SHARELESS-COUNTER %012d\n' $n | dd of=/dev/${d##*/} bs=512 count=1 conv=sync,notrunc,fsync 2>/dev/null
	done
	[ $((n % 10)) -eq 0 ] && echo "tick $n"
	sleep 1
done
`

// ensureGuest returns the guest, building it on first use from the .debs
// of the running Debian (apt-get download) into CacheDir. Concurrent runs
// serialize on a lock; a change of kernel or of the guest's recipe makes a
// new build.
func ensureGuest(t testing.TB) (Guest, error) {
	kpkg, err := kernelPackage()
	if err != nil {
		return Guest{}, err
	}
	sum := sha256.Sum256([]byte(guestInit))
	dir := filepath.Join(CacheDir, "guest", kpkg+"-"+hex.EncodeToString(sum[:4]))
	g := Guest{Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.gz")}
	if _, err := os.Stat(g.Initrd); err == nil {
		return g, nil
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return Guest{}, err
	}
	lock, err := os.OpenFile(filepath.Join(CacheDir, "guest.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Guest{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return Guest{}, fmt.Errorf("locking the guest cache: %w", err)
	}
	if _, err := os.Stat(g.Initrd); err == nil {
		return g, nil // built by a concurrent run
	}
	start := time.Now()
	if err := buildGuest(kpkg, dir); err != nil {
		return Guest{}, err
	}
	t.Logf("lab: built the guest from %s in %v (cached in %s)", kpkg, time.Since(start).Round(time.Millisecond), dir)
	return g, nil
}

// kernelPackage names the versioned kernel package that linux-image-amd64
// depends on, e.g. linux-image-6.1.0-56-amd64.
func kernelPackage() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %w", err)
	}
	for f := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(f, "linux-image-") && f != "linux-image-amd64" && f[len("linux-image-")] >= '0' && f[len("linux-image-")] <= '9' {
			return f, nil
		}
	}
	return "", fmt.Errorf("no versioned kernel package among the dependencies of linux-image-amd64:\n%s", out)
}

func buildGuest(kpkg, dir string) error {
	debs := filepath.Join(CacheDir, "debs")
	kdeb, err := download(debs, kpkg)
	if err != nil {
		return err
	}
	bdeb, err := download(debs, "busybox-static")
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for m := range strings.FieldsSeq(guestModules) {
		want[m+".ko"] = true
	}
	var vmlinuz []byte
	mods := map[string][]byte{}
	err = debFiles(kdeb, func(name string, r io.Reader) error {
		base := filepath.Base(name)
		switch {
		case strings.HasPrefix(name, "./boot/vmlinuz-"):
			vmlinuz, err = io.ReadAll(r)
			return err
		case strings.Contains(name, "/kernel/drivers/") && want[base]:
			mods[base], err = io.ReadAll(r)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if vmlinuz == nil || len(mods) != len(want) {
		return fmt.Errorf("%s: found kernel %v and modules %d of %d", kdeb, vmlinuz != nil, len(mods), len(want))
	}
	var busybox []byte
	if err := debFiles(bdeb, func(name string, r io.Reader) error {
		if name == "./bin/busybox" {
			busybox, err = io.ReadAll(r)
		}
		return err
	}); err != nil {
		return err
	}
	if busybox == nil {
		return fmt.Errorf("%s: no ./bin/busybox", bdeb)
	}
	vmlinux, err := extractVmlinux(vmlinuz)
	if err != nil {
		return err
	}

	var cpio newcWriter
	for _, d := range []string{"bin", "dev", "mods", "proc", "sys", "tmp"} {
		cpio.dir(d)
	}
	cpio.charDev("dev/console", 5, 1) // the kernel's stdio for init, before devtmpfs
	cpio.file("init", []byte(guestInit), 0o755)
	cpio.file("bin/busybox", busybox, 0o755)
	for m := range strings.FieldsSeq(guestModules) {
		cpio.file("mods/"+m+".ko", mods[m+".ko"], 0o644)
	}
	var initrd bytes.Buffer
	zw := gzip.NewWriter(&initrd)
	if _, err := zw.Write(cpio.finish()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}

	tmp := dir + ".tmp-" + randomHex(4)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "vmlinux"), vmlinux, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "initrd.gz"), initrd.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// download fetches a package's .deb into dir unless it is there, and
// returns its path.
func download(dir, pkg string) (string, error) {
	glob := filepath.Join(dir, pkg+"_*.deb")
	if m, _ := filepath.Glob(glob); len(m) == 1 {
		return m[0], nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("apt-get", "-o", "APT::Sandbox::User=root", "download", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
	}
	m, _ := filepath.Glob(glob)
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s: expected one %s, found %v", pkg, glob, m)
	}
	return m[0], nil
}

// debFiles calls fn for each regular file of a .deb's data archive.
func debFiles(deb string, fn func(name string, r io.Reader) error) error {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("%s: %w", deb, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(h.Name, tr); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("%s: %s: %w", deb, h.Name, err)
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
	}
	return nil
}

// extractVmlinux unpacks the xz-compressed ELF kernel inside a bzImage.
// xz complains about the bytes after the stream; the ELF header decides.
func extractVmlinux(bzImage []byte) ([]byte, error) {
	off := bytes.Index(bzImage, []byte("\xfd7zXZ\x00"))
	if off < 0 {
		return nil, fmt.Errorf("vmlinuz: no xz stream (the guest build expects an xz-compressed kernel)")
	}
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(bzImage[off:])
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if !bytes.HasPrefix(out.Bytes(), []byte("\x7fELF")) {
		return nil, fmt.Errorf("vmlinuz: xz -dc gave no ELF kernel: %v: %s", err, stderr.String())
	}
	return out.Bytes(), nil
}

// newcWriter writes a cpio archive in the "newc" format the kernel reads
// as an initramfs.
type newcWriter struct {
	buf bytes.Buffer
	ino int
}

func (w *newcWriter) entry(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	w.ino++
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *newcWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *newcWriter) dir(name string) { w.entry(name, syscall.S_IFDIR|0o755, 0, 0, nil) }

func (w *newcWriter) file(name string, data []byte, perm uint32) {
	w.entry(name, syscall.S_IFREG|perm, 0, 0, data)
}

func (w *newcWriter) charDev(name string, major, minor int) {
	w.entry(name, syscall.S_IFCHR|0o600, major, minor, nil)
}

func (w *newcWriter) finish() []byte {
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	return w.buf.Bytes()
}

// Disk is one disk of a lab domain: a local raw file, or an iSCSI LUN
// that QEMU reaches itself (a libvirt network disk, like a managed disk).
type Disk struct {
	Target string // guest device, e.g. "vda"
	File   string
	ISCSI  *LUN
	// Block is a block device path: a Cinder volume as Nova's FC and
	// local volume drivers attach it.
	Block string
	// Serial, when set, is the disk's <serial>: Nova writes the Cinder
	// volume id there.
	Serial string
}

// DomainXML returns a persistent domain definition of the tiny guest named
// name with the given disks, its serial console appended to consoleLog.
// Disks use cache='none', so libvirt deems a migration safe.
func (g Guest) DomainXML(name, consoleLog string, disks ...Disk) string {
	return g.InstanceXML("", name, consoleLog, disks...)
}

// InstanceXML is DomainXML with the domain's UUID set to uuid, as Nova
// sets it to the instance's: the shareless agent and its hook know an
// instance by it. An empty uuid lets libvirt choose one.
func (g Guest) InstanceXML(uuid, name, consoleLog string, disks ...Disk) string {
	var d strings.Builder
	for _, disk := range disks {
		switch {
		case disk.ISCSI != nil:
			var auth string
			if l := disk.ISCSI; l.Username != "" {
				auth = fmt.Sprintf(`
      <auth username='%s'><secret type='iscsi' usage='%s'/></auth>`, xmlEscape(l.Username), xmlEscape(l.SecretUsage))
			}
			fmt.Fprintf(&d, `    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='iscsi' name='%s/%d'><host name='%s' port='%d'/></source>%s
      <target dev='%s' bus='virtio'/>
    </disk>
`, xmlEscape(disk.ISCSI.IQN), disk.ISCSI.LUN, disk.ISCSI.Host, disk.ISCSI.Port, auth, xmlEscape(disk.Target))
		case disk.Block != "":
			var serial string
			if disk.Serial != "" {
				serial = "\n      <serial>" + xmlEscape(disk.Serial) + "</serial>"
			}
			fmt.Fprintf(&d, `    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='%s'/>
      <target dev='%s' bus='virtio'/>%s
    </disk>
`, xmlEscape(disk.Block), xmlEscape(disk.Target), serial)
		default:
			fmt.Fprintf(&d, `    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='%s'/>
      <target dev='%s' bus='virtio'/>
    </disk>
`, xmlEscape(disk.File), xmlEscape(disk.Target))
		}
	}
	var uuidElem string
	if uuid != "" {
		uuidElem = "\n  <uuid>" + xmlEscape(uuid) + "</uuid>"
	}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>%s
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
%s    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>
    <console type='file'><source path='%s' append='on'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
`, xmlEscape(name), uuidElem, xmlEscape(g.Kernel), xmlEscape(g.Initrd), d.String(), xmlEscape(consoleLog), xmlEscape(consoleLog))
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}

// WaitConsole waits until the console log contains s.
func WaitConsole(path, s string, timeout time.Duration) error {
	err := waitFor(timeout, 100*time.Millisecond, func() (bool, error) {
		b, _ := os.ReadFile(path)
		return bytes.Contains(b, []byte(s)), nil
	})
	if err != nil {
		return fmt.Errorf("%q not on the console: %v\n  %s", s, err, tail(path, 15))
	}
	return nil
}

// ReadCounter returns the guest's counter from sector 0 of a disk image
// (a raw file, or the file behind an iSCSI LUN).
func ReadCounter(image string) (uint64, error) {
	f, err := os.Open(image)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 32)
	if _, err := io.ReadFull(f, buf); err != nil {
		return 0, fmt.Errorf("%s: %w", image, err)
	}
	const prefix = "SHARELESS-COUNTER "
	if !bytes.HasPrefix(buf, []byte(prefix)) {
		return 0, fmt.Errorf("%s: no counter in sector 0 (%q)", image, buf)
	}
	return strconv.ParseUint(string(buf[len(prefix):len(prefix)+12]), 10, 64)
}
