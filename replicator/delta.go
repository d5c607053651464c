package replicator

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Delta is what a sealed disk hands to the host that takes its VM back
// (rule 7): its own identity, the identity of the image it copied, and the
// blocks written here since. The receiving host keeps every other block of
// its own image if that image is still exactly Base.
type Delta struct {
	Image, Base ID
	Size, Grain int64
	Modified    *Bitmap
}

// Delta returns the disk's Delta. The disk must be sealed, or the modified
// set would not be final.
func (r *Replica) Delta() (*Delta, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.meta.Sealed {
		return nil, fmt.Errorf("delta of disk %s: %w", r.name, ErrNotSealed)
	}
	return &Delta{Image: r.meta.ID, Base: r.meta.Source, Size: r.size, Grain: r.grain, Modified: r.meta.Modified.Clone()}, nil
}

// mismatch says why d cannot complete the incremental replica m, or "".
func (d *Delta) mismatch(m *diskMeta) string {
	switch {
	case d == nil:
		return "no delta from the source"
	case d.Image != m.Source:
		return fmt.Sprintf("delta is of %s, the replica copies %s", d.Image, m.Source)
	case d.Base != m.Base:
		return fmt.Sprintf("the source copied %s, the local base is %s", d.Base, m.Base)
	case d.Size != m.Size || d.Grain != m.Grain || d.Modified.Len() != m.blocks():
		return fmt.Sprintf("delta geometry %d/%d/%d differs from %d/%d/%d", d.Size, d.Grain, d.Modified.Len(), m.Size, m.Grain, m.blocks())
	}
	return ""
}

var deltaMagic = [8]byte{'S', 'H', 'L', 'S', 'D', 'L', 'T', 'A'}

const deltaHeader = 8 + 16 + 8 + 16 + 8 + 8 + 8

// MarshalBinary encodes d for the control API: a fixed header, the modified
// set run-length encoded, and a CRC32C.
func (d *Delta) MarshalBinary() ([]byte, error) {
	le := binary.LittleEndian
	b := make([]byte, 0, deltaHeader+64)
	b = append(b, deltaMagic[:]...)
	b = append(b, d.Image.Lineage[:]...)
	b = le.AppendUint64(b, d.Image.Generation)
	b = append(b, d.Base.Lineage[:]...)
	b = le.AppendUint64(b, d.Base.Generation)
	b = le.AppendUint64(b, uint64(d.Size))
	b = le.AppendUint64(b, uint64(d.Grain))
	mod, err := d.Modified.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b = append(b, mod...)
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalBinary decodes MarshalBinary's encoding, checking it whole.
func (d *Delta) UnmarshalBinary(b []byte) error {
	le := binary.LittleEndian
	if len(b) < deltaHeader+4 || [8]byte(b[:8]) != deltaMagic {
		return fmt.Errorf("delta: not a delta encoding")
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != le.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("delta: checksum mismatch")
	}
	var n Delta
	copy(n.Image.Lineage[:], b[8:24])
	n.Image.Generation = le.Uint64(b[24:])
	copy(n.Base.Lineage[:], b[32:48])
	n.Base.Generation = le.Uint64(b[48:])
	n.Size, n.Grain = int64(le.Uint64(b[56:])), int64(le.Uint64(b[64:]))
	if err := checkGeometry(n.Size, n.Grain, n.Grain); err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	// Check the bit count against the geometry before the bitmap is
	// allocated.
	mod := b[deltaHeader : len(b)-4]
	if bits, _ := binary.Uvarint(mod); bits != uint64((n.Size+n.Grain-1)/n.Grain) {
		return fmt.Errorf("delta: %d modified bits for a %d-byte disk at grain %d", bits, n.Size, n.Grain)
	}
	n.Modified = new(Bitmap)
	if err := n.Modified.UnmarshalBinary(mod); err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	*d = n
	return nil
}
