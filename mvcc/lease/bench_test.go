package lease

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkLeaseGrantRevoke(b *testing.B) {
	for _, keys := range []int{0, 1, 10} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			e := newEnv(b, Options{})
			e.le.Promote(0)
			names := make([]string, keys)
			for i := range names {
				names[i] = fmt.Sprintf("key-%d", i)
			}
			b.ReportAllocs()
			id := int64(0)
			for b.Loop() {
				id++
				e.grant(id, 60)
				for _, k := range names {
					e.put(k, id)
				}
				e.revoke(id)
			}
		})
	}
}

func BenchmarkLeaseRenew(b *testing.B) {
	const leases = 1000
	for _, par := range []bool{false, true} {
		b.Run(fmt.Sprintf("parallel=%v", par), func(b *testing.B) {
			e := newEnv(b, Options{Clock: SystemClock{}})
			e.le.Promote(time.Hour)
			for id := int64(1); id <= leases; id++ {
				e.grant(id, 600)
			}
			ctx := context.Background()
			b.ReportAllocs()
			if !par {
				id := int64(0)
				for b.Loop() {
					id = id%leases + 1
					if _, err := e.le.Renew(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := next.Add(1)%leases + 1
					if _, err := e.le.Renew(ctx, id); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
