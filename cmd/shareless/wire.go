package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// wireCount counts what our initiator receives from a target, on the wire
// rather than as the replica accounts it: every byte read from the TCP
// connections it dials, and the payload of the SCSI Data-In PDUs among them,
// decoded by the project's PDU codec from a copy of the stream. The
// commands sent are decoded too, so that wait can tell the data of READs
// from the rest (GET LBA STATUS answers, INQUIRY, ...). Use its dial as
// initiator.Config.Dial; call wait after the session is closed.
type wireCount struct {
	bytes, dataIn atomic.Int64
	// readIn is the Data-In payload of READ commands, set by wait.
	readIn int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error // the first stream the codec could not follow
	// Data-In payload by task tag, and the tags of READ commands: the
	// two streams are decoded apart, so they are matched in wait.
	byTag map[uint32]int64
	reads map[uint32]bool
}

// countedWayBack brings the disk home from away (goBack) through a session
// whose traffic w counts; what the login and the geometry Dial reads took
// is taken off w's counts, so that they are the way back's alone.
func (d *demo) countedWayBack(ctx context.Context, home, away *host, w *wireCount) (trip, error) {
	cfg, err := d.initiatorConfig(away.addr)
	if err != nil {
		return trip{}, err
	}
	cfg.Dial = w.dial
	src, err := initiator.Dial(ctx, cfg)
	if err != nil {
		return trip{}, err
	}
	loginData, loginBytes := w.dataIn.Load(), w.bytes.Load()
	t, err := d.goBack(ctx, home, away, src)
	err = errors.Join(err, src.Close(), w.wait())
	w.dataIn.Add(-loginData)
	w.bytes.Add(-loginBytes)
	return t, err
}

func (w *wireCount) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	in, inw := io.Pipe()
	out, outw := io.Pipe()
	w.wg.Add(2)
	go w.decode(in, w.received)
	go w.decode(out, w.sent)
	return &countingConn{Conn: c, w: w, copy: inw, sent: outw}, nil
}

// decode passes the PDUs of one direction of a connection to fn. It reads
// to the end even past an error, so that the connection never blocks on it.
func (w *wireCount) decode(r *io.PipeReader, fn func(pdu.Message)) {
	defer w.wg.Done()
	defer io.Copy(io.Discard, r)
	f := pdu.NewFramer(r, io.Discard)
	f.SetMaxRecvDataSegmentLength(pdu.MaxDataSegmentLength)
	for {
		m, err := f.ReadMessage()
		var pe *pdu.PDUError
		switch {
		case errors.As(err, &pe):
			continue // one whole PDU we do not decode; the stream goes on
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			w.mu.Lock()
			w.err = errors.Join(w.err, err)
			w.mu.Unlock()
			return
		}
		fn(m)
	}
}

// received counts a PDU from the target.
func (w *wireCount) received(m pdu.Message) {
	d, ok := m.(*pdu.DataIn)
	if !ok {
		return
	}
	w.dataIn.Add(int64(len(d.Data)))
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byTag == nil {
		w.byTag = map[uint32]int64{}
	}
	w.byTag[d.ITT] += int64(len(d.Data))
}

// sent notes the READ commands among the PDUs to the target.
func (w *wireCount) sent(m pdu.Message) {
	c, ok := m.(*pdu.SCSICommand)
	if !ok || len(c.CDB) == 0 || c.CDB[0] != scsi.OpRead16 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reads == nil {
		w.reads = map[uint32]bool{}
	}
	w.reads[c.ITT] = true
}

// wait waits for every connection's streams to be decoded, sets readIn and
// reports a stream the codec could not follow (the counts would be short).
func (w *wireCount) wait() error {
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.readIn = 0
	for tag, n := range w.byTag {
		if w.reads[tag] {
			w.readIn += n
		}
	}
	if w.err != nil {
		return fmt.Errorf("decoding the PDUs: %w", w.err)
	}
	return nil
}

type countingConn struct {
	net.Conn
	w    *wireCount
	copy *io.PipeWriter // what the target sends
	sent *io.PipeWriter // what the initiator sends
	once sync.Once
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.sent.Write(p[:n])
	}
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.w.bytes.Add(int64(n))
		c.copy.Write(p[:n])
	}
	if err != nil {
		c.once.Do(c.closeCopies)
	}
	return n, err
}

func (c *countingConn) closeCopies() {
	c.copy.Close()
	c.sent.Close()
}

func (c *countingConn) Close() error {
	c.once.Do(c.closeCopies)
	return c.Conn.Close()
}

// modify writes to share of dev's grain-sized blocks, as a guest would,
// and flushes. Scattered: one 4 KiB write at a random place in each of
// randomly chosen blocks (the worst case for the way back, which moves whole
// blocks). Clustered: whole 1 MiB extents at random places. It returns the
// number of blocks it wrote to.
func modify(ctx context.Context, dev blockdev.Device, rng *rand.Rand, grain int64, share float64, clustered bool) (int64, error) {
	blocks := dev.Size() / grain
	want := int64(share*float64(blocks) + 0.5)
	if clustered {
		const extent = 1 << 20
		per := extent / grain
		buf := make([]byte, extent)
		var n int64
		for _, e := range rng.Perm(int(dev.Size() / extent)) {
			if n >= want {
				break
			}
			k := min(per, want-n)
			fillRandom(rng, buf[:k*grain])
			if err := dev.WriteAt(ctx, buf[:k*grain], int64(e)*extent, false); err != nil {
				return 0, err
			}
			n += k
		}
		return n, dev.Flush(ctx)
	}
	buf := make([]byte, 4096)
	for _, b := range rng.Perm(int(blocks))[:want] {
		fillRandom(rng, buf)
		off := int64(b)*grain + rng.Int64N(grain/4096)*4096
		if err := dev.WriteAt(ctx, buf, off, false); err != nil {
			return 0, err
		}
	}
	return want, dev.Flush(ctx)
}

// fillRandom fills p with rng's bytes, eight at a time.
func fillRandom(rng *rand.Rand, p []byte) {
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(p[i:], w[:])
	}
}
