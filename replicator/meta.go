package replicator

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path/filepath"

	"github.com/shareless/shareless/replicator/vfs"
)

// A managed disk's directory holds:
//
//	image     the raw sparse image, Size bytes
//	meta      the checkpoint: every field and both bitmaps, checksummed,
//	          replaced atomically (write meta.tmp, fsync, rename, fsync dir)
//	journal   checksummed records appended since the checkpoint, each made
//	          durable (fsync) before the change it records is acted upon
//
// A guest flush touches a few blocks, and rewriting a 4 MiB checkpoint (two
// bitmaps of a 1 TiB disk) for each would cost more than the flush, so small
// changes go to the journal and the checkpoint is rewritten only when the
// journal has grown past a limit.
const (
	imageName   = "image"
	metaName    = "meta"
	metaTmpName = "meta.tmp"
	journalName = "journal"
)

// ID identifies one version of a disk image's contents: Lineage is random per
// image (a new base or a new replica), Generation is bumped, durably, before
// a sealed image can change again: when it is unsealed and when it becomes
// the base of an incremental replica. Two sealed images with equal IDs hold
// equal contents.
type ID struct {
	Lineage    [16]byte
	Generation uint64
}

// IsZero reports whether id is the zero ID (no image).
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) String() string {
	return fmt.Sprintf("%s/%d", hex.EncodeToString(id.Lineage[:]), id.Generation)
}

// ErrCorruptMetadata is wrapped by every CorruptError.
var ErrCorruptMetadata = errors.New("corrupt disk metadata")

// CorruptError reports metadata that fails its checks. The store never
// guesses past it: the disk does not open.
type CorruptError struct {
	Path   string
	Off    int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s at offset %d: %s: %v", e.Path, e.Off, e.Reason, ErrCorruptMetadata)
}

func (e *CorruptError) Unwrap() error { return ErrCorruptMetadata }

// diskMeta is everything persisted about a disk besides its data.
type diskMeta struct {
	ID           ID
	Size         int64
	Grain, Chunk int64 // tracking block and copy chunk, bytes
	// Sealed: the image is exported read-only to a host that copies it.
	Sealed bool
	// Replica: the image copies Source; blocks not Valid live there.
	Replica bool
	// SourceSealed: Source has released the disk; copying may run.
	SourceSealed bool
	// CopyRequested: an operator switched the replica from remote-only
	// (Method B) to copying (Replica.StartCopying); it copies whatever
	// ReplicaOptions.RemoteOnly says when it is opened again.
	CopyRequested bool
	Source        ID
	// Base is set while an incremental return waits for its source's seal:
	// the image held Base, and blocks outside both the source's final
	// modified set and Modified will become valid without a copy.
	Base     ID
	Progress int64 // next chunk the copier takes
	// Valid: the block's data is local. Modified: the guest wrote the block
	// here (or may have: set before the data is written, see Replica).
	Valid, Modified *Bitmap
}

func (m *diskMeta) blocks() int64 { return (m.Size + m.Grain - 1) / m.Grain }
func (m *diskMeta) chunks() int64 { return (m.Size + m.Chunk - 1) / m.Chunk }

const (
	flagSealed = 1 << iota
	flagReplica
	flagSourceSealed
	flagCopyRequested
)

func (m *diskMeta) flags() uint32 {
	var f uint32
	if m.Sealed {
		f |= flagSealed
	}
	if m.Replica {
		f |= flagReplica
	}
	if m.SourceSealed {
		f |= flagSourceSealed
	}
	if m.CopyRequested {
		f |= flagCopyRequested
	}
	return f
}

func (m *diskMeta) setFlags(f uint32) {
	m.Sealed, m.Replica, m.SourceSealed = f&flagSealed != 0, f&flagReplica != 0, f&flagSourceSealed != 0
	m.CopyRequested = f&flagCopyRequested != 0
}

var (
	castagnoli      = crc32.MakeTable(crc32.Castagnoli)
	checkpointMagic = [8]byte{'S', 'H', 'L', 'S', 'M', 'E', 'T', 'A'}
)

const (
	checkpointVersion = 1
	checkpointHeader  = 128
	// maxGrain and minGrain bound the tracking block for sanity checks.
	minGrain = 512
	maxGrain = 64 << 20
)

// encodeCheckpoint lays out m: a fixed 128-byte header, the valid and
// modified bitmaps as little-endian words, and a CRC32C of all of it.
func encodeCheckpoint(m *diskMeta, epoch uint64) []byte {
	words := len(m.Valid.w)
	b := make([]byte, checkpointHeader, checkpointHeader+16*words+4)
	le := binary.LittleEndian
	copy(b, checkpointMagic[:])
	le.PutUint32(b[8:], checkpointVersion)
	le.PutUint32(b[12:], m.flags())
	le.PutUint64(b[16:], epoch)
	copy(b[24:40], m.ID.Lineage[:])
	le.PutUint64(b[40:], m.ID.Generation)
	le.PutUint64(b[48:], uint64(m.Size))
	le.PutUint64(b[56:], uint64(m.Grain))
	le.PutUint64(b[64:], uint64(m.Chunk))
	copy(b[72:88], m.Source.Lineage[:])
	le.PutUint64(b[88:], m.Source.Generation)
	copy(b[96:112], m.Base.Lineage[:])
	le.PutUint64(b[112:], m.Base.Generation)
	le.PutUint64(b[120:], uint64(m.Progress))
	for _, bm := range []*Bitmap{m.Valid, m.Modified} {
		for _, w := range bm.w {
			b = le.AppendUint64(b, w)
		}
	}
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeCheckpointHeader checks the header and returns the file length it
// implies, so that the caller allocates only once the length is known sane.
func decodeCheckpointHeader(b []byte) (m *diskMeta, epoch uint64, total int64, reason string) {
	le := binary.LittleEndian
	if [8]byte(b[:8]) != checkpointMagic {
		return nil, 0, 0, "bad magic"
	}
	if v := le.Uint32(b[8:]); v != checkpointVersion {
		return nil, 0, 0, fmt.Sprintf("unknown version %d", v)
	}
	m = &diskMeta{}
	m.setFlags(le.Uint32(b[12:]))
	epoch = le.Uint64(b[16:])
	copy(m.ID.Lineage[:], b[24:40])
	m.ID.Generation = le.Uint64(b[40:])
	m.Size = int64(le.Uint64(b[48:]))
	m.Grain = int64(le.Uint64(b[56:]))
	m.Chunk = int64(le.Uint64(b[64:]))
	copy(m.Source.Lineage[:], b[72:88])
	m.Source.Generation = le.Uint64(b[88:])
	copy(m.Base.Lineage[:], b[96:112])
	m.Base.Generation = le.Uint64(b[112:])
	m.Progress = int64(le.Uint64(b[120:]))
	if err := checkGeometry(m.Size, m.Grain, m.Chunk); err != nil {
		return nil, 0, 0, err.Error()
	}
	if m.Progress < 0 || m.Progress > m.chunks() {
		return nil, 0, 0, fmt.Sprintf("progress %d beyond %d chunks", m.Progress, m.chunks())
	}
	words := (m.blocks() + 63) / 64
	return m, epoch, checkpointHeader + 16*words + 4, ""
}

// checkGeometry validates a disk's size, tracking grain and copy chunk.
func checkGeometry(size, grain, chunk int64) error {
	switch {
	case grain < minGrain || grain > maxGrain || grain&(grain-1) != 0:
		return fmt.Errorf("tracking grain %d is not a power of two in [%d, %d]", grain, minGrain, maxGrain)
	case chunk < grain || chunk%grain != 0 || chunk > maxGrain:
		return fmt.Errorf("copy chunk %d is not a multiple of the grain %d up to %d", chunk, grain, maxGrain)
	case size <= 0 || size%minGrain != 0 || size/grain > maxBits:
		return fmt.Errorf("size %d is not a positive multiple of %d within %d blocks", size, minGrain, int64(maxBits))
	}
	return nil
}

// readCheckpoint loads and verifies the checkpoint of dir.
func readCheckpoint(fsys vfs.FS, dir string) (*diskMeta, uint64, error) {
	name := filepath.Join(dir, metaName)
	f, err := fsys.Open(name)
	if err != nil {
		return nil, 0, fmt.Errorf("open checkpoint: %w", err)
	}
	defer f.Close()
	corrupt := func(off int64, reason string) error { return &CorruptError{Path: name, Off: off, Reason: reason} }
	size, err := f.Size()
	if err != nil {
		return nil, 0, fmt.Errorf("checkpoint size: %w", err)
	}
	if size < checkpointHeader+4 {
		return nil, 0, corrupt(0, fmt.Sprintf("%d bytes, shorter than a header", size))
	}
	hdr := make([]byte, checkpointHeader)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, 0, fmt.Errorf("read checkpoint: %w", err)
	}
	m, epoch, total, reason := decodeCheckpointHeader(hdr)
	if reason != "" {
		return nil, 0, corrupt(0, reason)
	}
	if size != total {
		return nil, 0, corrupt(size, fmt.Sprintf("%d bytes, want %d for the recorded geometry", size, total))
	}
	b := make([]byte, total)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, 0, fmt.Errorf("read checkpoint: %w", err)
	}
	le := binary.LittleEndian
	if got, want := crc32.Checksum(b[:total-4], castagnoli), le.Uint32(b[total-4:]); got != want {
		return nil, 0, corrupt(total-4, fmt.Sprintf("checksum %08x, want %08x", got, want))
	}
	words := (m.blocks() + 63) / 64
	m.Valid, m.Modified = NewBitmap(m.blocks()), NewBitmap(m.blocks())
	for i := range words {
		m.Valid.w[i] = le.Uint64(b[checkpointHeader+8*i:])
		m.Modified.w[i] = le.Uint64(b[checkpointHeader+8*(words+i):])
	}
	return m, epoch, nil
}

// writeCheckpoint replaces dir's checkpoint atomically.
func writeCheckpoint(fsys vfs.FS, dir string, m *diskMeta, epoch uint64) error {
	tmp := filepath.Join(dir, metaTmpName)
	f, err := fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("create checkpoint: %w", err)
	}
	_, err = f.WriteAt(encodeCheckpoint(m, epoch), 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := fsys.Rename(tmp, filepath.Join(dir, metaName)); err != nil {
		return fmt.Errorf("install checkpoint: %w", err)
	}
	return fsys.SyncDir(dir)
}

// run is a range of blocks [start, start+count).
type run struct{ start, count int64 }

// record is one journal entry: the scalar fields after the change, and the
// blocks that became valid or modified.
type record struct {
	generation      uint64
	flags           uint32
	progress        int64
	valid, modified []run
}

const (
	recordMagic  = 0x524a4853 // "SHJR"
	recordHeader = 28
	// recordAlign: records start on sector boundaries, so that recovery can
	// look past a bad record for later ones (see openJournal).
	recordAlign = 512
	// maxRecord bounds a record's payload before it is allocated.
	maxRecord = 64 << 20
)

func appendRuns(b []byte, runs []run) []byte {
	b = binary.AppendUvarint(b, uint64(len(runs)))
	prev := int64(0)
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r.start-prev))
		b = binary.AppendUvarint(b, uint64(r.count))
		prev = r.start + r.count
	}
	return b
}

func decodeRuns(b []byte, blocks int64) ([]run, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, nil, false
	}
	b = b[k:]
	runs := make([]run, 0, n)
	pos := uint64(0)
	for range n {
		gap, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return nil, nil, false
		}
		count, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 || count == 0 || gap > uint64(blocks)-pos || count > uint64(blocks)-pos-gap {
			return nil, nil, false
		}
		runs = append(runs, run{int64(pos + gap), int64(count)})
		pos += gap + count
		b = b[k1+k2:]
	}
	return runs, b, true
}

func encodeRecord(r *record, epoch, seq uint64) []byte {
	le := binary.LittleEndian
	b := make([]byte, recordHeader, recordAlign)
	b = le.AppendUint64(b, r.generation)
	b = le.AppendUint32(b, r.flags)
	b = le.AppendUint64(b, uint64(r.progress))
	b = appendRuns(b, r.valid)
	b = appendRuns(b, r.modified)
	le.PutUint32(b[0:], recordMagic)
	le.PutUint64(b[8:], epoch)
	le.PutUint64(b[16:], seq)
	le.PutUint32(b[24:], uint32(len(b)-recordHeader))
	le.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	if pad := len(b) % recordAlign; pad != 0 {
		b = append(b, make([]byte, recordAlign-pad)...)
	}
	return b
}

// readRecord reads the record at off. ok is false if there is no intact
// record there; next is the offset after it.
func readRecord(f vfs.File, off, fileSize int64, blocks int64) (r *record, epoch, seq uint64, next int64, ok bool) {
	le := binary.LittleEndian
	hdr := make([]byte, recordHeader)
	if off+recordHeader > fileSize {
		return nil, 0, 0, 0, false
	}
	if _, err := f.ReadAt(hdr, off); err != nil || le.Uint32(hdr) != recordMagic {
		return nil, 0, 0, 0, false
	}
	n := int64(le.Uint32(hdr[24:]))
	if n > maxRecord || off+recordHeader+n > fileSize {
		return nil, 0, 0, 0, false
	}
	b := make([]byte, recordHeader+n)
	if _, err := f.ReadAt(b, off); err != nil || crc32.Checksum(b[8:], castagnoli) != le.Uint32(hdr[4:]) {
		return nil, 0, 0, 0, false
	}
	p := b[recordHeader:]
	if len(p) < 20 {
		return nil, 0, 0, 0, false
	}
	r = &record{generation: le.Uint64(p), flags: le.Uint32(p[8:]), progress: int64(le.Uint64(p[12:]))}
	p = p[20:]
	if r.valid, p, ok = decodeRuns(p, blocks); !ok {
		return nil, 0, 0, 0, false
	}
	if r.modified, p, ok = decodeRuns(p, blocks); !ok || len(p) != 0 {
		return nil, 0, 0, 0, false
	}
	next = off + recordHeader + n
	if pad := next % recordAlign; pad != 0 {
		next += recordAlign - pad
	}
	return r, le.Uint64(hdr[8:]), le.Uint64(hdr[16:]), next, true
}

func (m *diskMeta) apply(r *record) {
	m.ID.Generation = r.generation
	m.setFlags(r.flags)
	m.Progress = r.progress
	for _, x := range r.valid {
		m.Valid.SetRange(x.start, x.start+x.count)
	}
	for _, x := range r.modified {
		m.Modified.SetRange(x.start, x.start+x.count)
	}
}

// metaLog appends records to a disk's journal and rewrites its checkpoint.
// Its methods are not safe for concurrent use.
type metaLog struct {
	fs      vfs.FS
	dir     string
	journal vfs.File
	epoch   uint64 // the checkpoint's epoch; only records of it count
	seq     uint64 // last record appended in this epoch
	off     int64  // where the next record goes
}

// createMeta writes the first checkpoint of a new disk and an empty journal.
func createMeta(fsys vfs.FS, dir string, m *diskMeta) (*metaLog, error) {
	j, err := fsys.Create(filepath.Join(dir, journalName))
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	l := &metaLog{fs: fsys, dir: dir, journal: j, epoch: 1}
	if err := writeCheckpoint(fsys, dir, m, l.epoch); err != nil {
		j.Close()
		return nil, err
	}
	return l, nil
}

// openMeta loads a disk's metadata: the checkpoint, then the journal's
// records of the checkpoint's epoch, in sequence.
//
// Each commit is one record made durable before the next is written, so
// only the last record can be torn by a crash: a bad record with no intact
// later record of the same epoch is that torn tail, never acknowledged, and
// is cut off. A bad record followed by an intact later one is corruption of
// acknowledged metadata and fails with a CorruptError.
func openMeta(fsys vfs.FS, dir string) (*metaLog, *diskMeta, error) {
	m, epoch, err := readCheckpoint(fsys, dir)
	if err != nil {
		return nil, nil, err
	}
	name := filepath.Join(dir, journalName)
	j, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		// The journal is created before the first checkpoint but its name
		// may not have been synced with it; no record can be lost with it,
		// as none is appended before both names are durable.
		j, err = fsys.Create(name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	l := &metaLog{fs: fsys, dir: dir, journal: j, epoch: epoch}
	if err := l.replay(m, name); err != nil {
		j.Close()
		return nil, nil, err
	}
	return l, m, nil
}

func (l *metaLog) replay(m *diskMeta, name string) error {
	size, err := l.journal.Size()
	if err != nil {
		return fmt.Errorf("journal size: %w", err)
	}
	for {
		r, epoch, seq, next, ok := readRecord(l.journal, l.off, size, m.blocks())
		if ok && epoch == l.epoch && seq == l.seq+1 {
			m.apply(r)
			l.seq, l.off = seq, next
			continue
		}
		if ok && epoch < l.epoch {
			break // left over from before the checkpoint: already in it
		}
		if ok && epoch > l.epoch {
			// The checkpoint went back in time (the journal is only
			// emptied once the new checkpoint's name is durable).
			return &CorruptError{Path: name, Off: l.off, Reason: fmt.Sprintf("record of epoch %d after a checkpoint of epoch %d", epoch, l.epoch)}
		}
		for off := l.off + recordAlign; off < size; off += recordAlign {
			if _, epoch, seq, _, ok := readRecord(l.journal, off, size, m.blocks()); ok && epoch == l.epoch && seq > l.seq {
				return &CorruptError{Path: name, Off: l.off, Reason: fmt.Sprintf("record %d unreadable but record %d follows", l.seq+1, seq)}
			}
		}
		break
	}
	if l.off < size {
		if err := l.journal.Truncate(l.off); err != nil {
			return fmt.Errorf("cut journal tail: %w", err)
		}
		if err := l.journal.Sync(); err != nil {
			return fmt.Errorf("cut journal tail: %w", err)
		}
	}
	return nil
}

// append makes r durable.
func (l *metaLog) append(r *record) error {
	b := encodeRecord(r, l.epoch, l.seq+1)
	if _, err := l.journal.WriteAt(b, l.off); err != nil {
		return fmt.Errorf("append journal record: %w", err)
	}
	if err := l.journal.Sync(); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	l.seq++
	l.off += int64(len(b))
	return nil
}

// checkpoint makes m durable as a new checkpoint and empties the journal.
// A crash in between leaves records of the old epoch, which openMeta skips.
func (l *metaLog) checkpoint(m *diskMeta) error {
	if err := writeCheckpoint(l.fs, l.dir, m, l.epoch+1); err != nil {
		return err
	}
	l.epoch, l.seq, l.off = l.epoch+1, 0, 0
	if err := l.journal.Truncate(0); err != nil {
		return fmt.Errorf("empty journal: %w", err)
	}
	if err := l.journal.Sync(); err != nil {
		return fmt.Errorf("empty journal: %w", err)
	}
	return nil
}

func (l *metaLog) close() error { return l.journal.Close() }
