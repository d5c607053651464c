package initiator

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/shareless/shareless/iscsi/target"
)

// BenchmarkRead4KQD32 reads 4 KiB at random offsets through a Session from
// our own target, 32 reads outstanding: the per-command cost of the
// initiator and the target together, which a replica pays on every read of
// a block it does not hold yet.
func BenchmarkRead4KQD32(b *testing.B) {
	const size = 256 << 20
	addr, _ := startOwnTarget(b, size, func(c *target.Config) { c.Logger = slog.New(slog.DiscardHandler) })
	ctx := context.Background()
	s, err := Dial(ctx, Config{Addr: addr, Target: testIQN, Credentials: creds(b, true)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(4096)
	b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
		for pb.Next() {
			if err := s.ReadAt(ctx, buf, rng.Int64N(size/4096)*4096); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
