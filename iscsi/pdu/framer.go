package pdu

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// DefaultMaxRecvDataSegmentLength is the limit in force until login
// negotiates another (§13.12).
const DefaultMaxRecvDataSegmentLength = 8192

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ConnError is a failure after which the byte stream cannot be trusted:
// an I/O error, a short read, a header digest mismatch. The connection must
// be dropped.
type ConnError struct{ Err error }

func (e *ConnError) Error() string { return "iscsi connection: " + e.Err.Error() }
func (e *ConnError) Unwrap() error { return e.Err }

// PDUError is an invalid PDU that was consumed whole: the stream is still
// aligned and the peer can be answered with a Reject carrying Header.
type PDUError struct {
	Reason uint8 // a Reject reason (Reject* constants)
	Header BHS
	Err    error
}

func (e *PDUError) Error() string {
	return fmt.Sprintf("invalid %v PDU (reject reason 0x%02x): %v", e.Header.Opcode(), e.Reason, e.Err)
}
func (e *PDUError) Unwrap() error { return e.Err }

// Framer reads and writes PDUs on a byte stream. Reads and writes may run
// concurrently with each other, but neither with itself. The Set methods
// must not run concurrently with reads or writes; login calls them between
// PDUs, once the new parameters take effect.
type Framer struct {
	r            *bufio.Reader
	w            io.Writer
	headerDigest bool
	dataDigest   bool
	maxRecvData  int
	dataBuf      func(h *BHS, n int) []byte
}

// NewFramer returns a Framer with no digests and the login-phase limit on
// incoming data segments.
func NewFramer(r io.Reader, w io.Writer) *Framer {
	return &Framer{r: bufio.NewReaderSize(r, 64<<10), w: w, maxRecvData: DefaultMaxRecvDataSegmentLength}
}

// SetDigests turns CRC32C header and data digests on or off (§13.1).
func (f *Framer) SetDigests(header, data bool) { f.headerDigest, f.dataDigest = header, data }

// SetMaxRecvDataSegmentLength sets the largest data segment ReadMessage
// accepts: the value this side declared (§13.12).
func (f *Framer) SetMaxRecvDataSegmentLength(n int) {
	f.maxRecvData = min(max(n, 512), MaxDataSegmentLength)
}

// SetDataBuffer lets the reader of the stream choose where data segments
// land: buf is called with the header of each PDU that carries data, once
// the header passed its checks, and returns exactly n bytes to read the
// segment into, or nil for a fresh allocation. A target hands out the slice
// of a command's Data-Out buffer at the PDU's offset, an initiator the slice
// of a READ's buffer for a Data-In, saving an allocation and a copy per PDU.
// The slice is written even if the PDU then proves invalid.
func (f *Framer) SetDataBuffer(buf func(h *BHS, n int) []byte) { f.dataBuf = buf }

// ReadMessage reads one PDU. Errors are *ConnError or *PDUError.
func (f *Framer) ReadMessage() (Message, error) {
	var h BHS
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		return nil, &ConnError{err}
	}
	var ahs []byte
	if n := h.TotalAHSLength(); n > 0 {
		ahs = make([]byte, n)
		if _, err := io.ReadFull(f.r, ahs); err != nil {
			return nil, &ConnError{fmt.Errorf("reading AHS: %w", err)}
		}
	}
	if f.headerDigest {
		if err := f.checkDigest(h[:], ahs); err != nil {
			return nil, &ConnError{fmt.Errorf("header digest: %w", err)}
		}
	}
	dlen := h.DataSegmentLength()
	segLen := dlen + padLen(dlen)
	if dlen > f.maxRecvData {
		// Consume the segment without allocating it, so that the stream
		// stays aligned and the PDU can be rejected.
		skip := int64(segLen)
		if f.dataDigest && dlen > 0 {
			skip += 4
		}
		if _, err := io.CopyN(io.Discard, f.r, skip); err != nil {
			return nil, &ConnError{fmt.Errorf("skipping oversized data segment: %w", err)}
		}
		return nil, &PDUError{RejectProtocolError, h,
			fmt.Errorf("data segment of %d bytes exceeds MaxRecvDataSegmentLength %d", dlen, f.maxRecvData)}
	}
	var data []byte
	if dlen > 0 {
		var pad [3]byte
		if f.dataBuf != nil {
			data = f.dataBuf(&h, dlen)
			if data != nil && len(data) != dlen {
				return nil, &ConnError{fmt.Errorf("data buffer of %d bytes for a %d-byte segment", len(data), dlen)}
			}
		}
		if data == nil {
			data = make([]byte, dlen, segLen)
		}
		if _, err := io.ReadFull(f.r, data); err != nil {
			return nil, &ConnError{fmt.Errorf("reading data segment: %w", err)}
		}
		if _, err := io.ReadFull(f.r, pad[:segLen-dlen]); err != nil {
			return nil, &ConnError{fmt.Errorf("reading data segment padding: %w", err)}
		}
		if f.dataDigest {
			if err := f.checkDigest(data, pad[:segLen-dlen]); err != nil {
				return nil, &PDUError{RejectDataDigest, h, fmt.Errorf("data digest: %w", err)}
			}
		}
	}
	m := newMessage(h.Opcode())
	if m == nil {
		return nil, &PDUError{RejectNotSupported, h, errors.New("unknown opcode")}
	}
	if err := m.decode(&h, ahs, data); err != nil {
		return nil, &PDUError{RejectProtocolError, h, err}
	}
	return m, nil
}

// checkDigest reads a 4-byte CRC32C and compares it with the CRC of parts.
func (f *Framer) checkDigest(parts ...[]byte) error {
	var d [4]byte
	if _, err := io.ReadFull(f.r, d[:]); err != nil {
		return err
	}
	var crc uint32
	for _, p := range parts {
		crc = crc32.Update(crc, castagnoli, p)
	}
	// Digests go on the wire least significant byte first (§13.1, as
	// Linux and libiscsi send them).
	got := uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24
	if got != crc {
		return fmt.Errorf("got 0x%08x, computed 0x%08x", got, crc)
	}
	return nil
}

// WriteMessage writes one PDU with the digests in force.
func (f *Framer) WriteMessage(m Message) error {
	bufs, err := f.AppendMessage(nil, m)
	if err != nil {
		return err
	}
	if _, err := bufs.WriteTo(f.w); err != nil {
		return &ConnError{fmt.Errorf("writing %v: %w", m.Opcode(), err)}
	}
	return nil
}

// AppendMessage appends the wire form of m, with the digests in force, to
// bufs without copying its data segment, for a writer that gathers several
// PDUs into one writev (net.Buffers.WriteTo on a connection). m's data
// must stay unchanged until bufs is written.
func (f *Framer) AppendMessage(bufs net.Buffers, m Message) (net.Buffers, error) {
	var h BHS
	ahs := m.encode(&h)
	data := m.payload()
	if len(data) > MaxDataSegmentLength {
		return bufs, fmt.Errorf("data segment of %d bytes exceeds the 24-bit length field", len(data))
	}
	h.setLengths(len(ahs), len(data))

	head := make([]byte, 0, BHSLen+len(ahs)+4+8)
	head = append(append(head, h[:]...), ahs...)
	if f.headerDigest {
		head = appendDigest(head, crc32.Checksum(head, castagnoli))
	}
	bufs = append(bufs, head)
	if len(data) > 0 {
		// Padding and data digest share the spare capacity of head.
		tail := head[len(head) : len(head)+padLen(len(data))]
		if f.dataDigest {
			crc := crc32.Update(crc32.Checksum(data, castagnoli), castagnoli, tail)
			tail = appendDigest(tail, crc)
		}
		bufs = append(bufs, data)
		if len(tail) > 0 {
			bufs = append(bufs, tail)
		}
	}
	return bufs, nil
}

func appendDigest(b []byte, crc uint32) []byte {
	return append(b, byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24))
}
