package novahook

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The journal is an append-only file of records, each
//
//	length uint32 (little endian) | crc32c(payload) uint32 | payload
//
// where payload is the JSON of the []Op of one Step. A record is durable
// once Append returns (the file is fsynced; a new file's directory too). A
// crash can only leave a torn last record, which Open cuts off: it was never
// acknowledged. A bad record followed by good data is corruption, reported
// as ErrCorrupt rather than silently dropping acknowledged state.
//
// When the file grows past the compaction size, the current state is
// written as one record to a new file that atomically replaces the old one
// (write, fsync, rename, fsync directory).

const (
	journalName   = "journal"
	journalTmp    = "journal.tmp"
	headerSize    = 8
	maxRecordSize = 64 << 20 // far above any state the machine keeps
	// DefaultCompactSize is the journal size that triggers compaction.
	DefaultCompactSize = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned by OpenJournal when a record other than the last
// fails its checksum or cannot be decoded.
var ErrCorrupt = errors.New("journal corrupt")

// Journal persists the machine's ops. It is not safe for concurrent use.
type Journal struct {
	fs          FS
	dir         string
	f           File
	size        int64
	base        int64 // size right after the last compaction
	compactSize int64
	state       *State // mirror of what the file holds, for compaction
}

// OpenJournal opens (creating if needed) the journal in dir on fsys and
// returns it with the state it holds. compactSize <= 0 means
// DefaultCompactSize.
func OpenJournal(fsys FS, dir string, compactSize int64) (*Journal, *State, error) {
	if compactSize <= 0 {
		compactSize = DefaultCompactSize
	}
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	// A leftover temporary file is an interrupted compaction: the old
	// journal is still complete.
	if err := fsys.Remove(filepath.Join(dir, journalTmp)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	path := filepath.Join(dir, journalName)
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil {
			err = fsys.SyncDir(dir)
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	state := NewState()
	good, err := replay(f, state)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("journal %s: cut torn tail: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	// The caller gets its own copy: the journal's mirror must only change
	// through Append.
	caller := NewState()
	caller.Apply(state.Snapshot())
	return &Journal{fs: fsys, dir: dir, f: f, size: good, compactSize: compactSize, state: state}, caller, nil
}

// replay applies every complete record of f to s and returns the offset
// after the last good one.
func replay(f io.Reader, s *State) (int64, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	var off int64
	for int64(len(data)) > off {
		rest := data[off:]
		if len(rest) < headerSize || allZero(rest) {
			// A torn header, or a tail the file system extended but the
			// crash left unwritten.
			return off, nil
		}
		n := int64(binary.LittleEndian.Uint32(rest[0:4]))
		sum := binary.LittleEndian.Uint32(rest[4:8])
		end := headerSize + n
		if end > int64(len(rest)) {
			return off, nil // torn: the record runs past the end of the file
		}
		payload := rest[headerSize:end]
		if crc32.Checksum(payload, crcTable) != sum {
			if allZero(rest[end:]) {
				return off, nil // torn last record; nothing was written after it
			}
			return 0, fmt.Errorf("%w: checksum of record at %d", ErrCorrupt, off)
		}
		var ops []Op
		if err := json.Unmarshal(payload, &ops); err != nil {
			return 0, fmt.Errorf("%w: record at %d: %v", ErrCorrupt, off, err)
		}
		s.Apply(ops)
		off += end
	}
	return off, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func encodeRecord(ops []Op) ([]byte, error) {
	payload, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	if len(payload) > maxRecordSize {
		return nil, fmt.Errorf("record of %d bytes exceeds %d", len(payload), maxRecordSize)
	}
	rec := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32.Checksum(payload, crcTable))
	copy(rec[headerSize:], payload)
	return rec, nil
}

// Append writes ops durably. An empty ops is a no-op.
func (j *Journal) Append(ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	rec, err := encodeRecord(ops)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if _, err := j.f.Write(rec); err != nil {
		return fmt.Errorf("journal: write: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal: fsync: %w", err)
	}
	j.size += int64(len(rec))
	j.state.Apply(ops)
	// Compact only once the log is twice the last snapshot: a state larger
	// than compactSize must not make every Append rewrite it.
	if j.size > j.compactSize && j.size > 2*j.base {
		return j.compact()
	}
	return nil
}

// compact replaces the file by one record holding the current state.
func (j *Journal) compact() error {
	rec, err := encodeRecord(j.state.Snapshot())
	if err != nil {
		return fmt.Errorf("journal compaction: %w", err)
	}
	tmp := filepath.Join(j.dir, journalTmp)
	f, err := j.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal compaction: %w", err)
	}
	if _, err := f.Write(rec); err != nil {
		f.Close()
		return fmt.Errorf("journal compaction: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("journal compaction: %w", err)
	}
	if err := j.fs.Rename(tmp, filepath.Join(j.dir, journalName)); err != nil {
		f.Close()
		return fmt.Errorf("journal compaction: %w", err)
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		f.Close()
		return fmt.Errorf("journal compaction: fsync %s: %w", j.dir, err)
	}
	j.f.Close()
	j.f, j.size, j.base = f, int64(len(rec)), int64(len(rec))
	return nil
}

// Close closes the file.
func (j *Journal) Close() error { return j.f.Close() }
