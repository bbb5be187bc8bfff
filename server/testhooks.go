package server

import (
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// Test hooks let the chaos tests inject faults that cannot be made from
// outside the process. They exist only when the environment variable
// CAIRN_TEST_HOOKS is "1" at start; a production member has none, and the
// endpoints below answer 404.
//
//	POST /cairn/test/fsync-delay?d=<duration>  every WAL fsync first sleeps d (a slow disk); d=0 ends it
//	POST /cairn/test/unsafe-reads?on=<bool>    linearizable reads skip ReadIndex and read local state:
//	                                           deliberately broken, to prove the checker catches it
//
// They are served on the peer port, which clients do not use.
const testHooksEnv = "CAIRN_TEST_HOOKS"

type testHooks struct {
	fsyncDelay  atomic.Int64 // nanoseconds
	unsafeReads atomic.Bool
}

func newTestHooks() *testHooks {
	if os.Getenv(testHooksEnv) != "1" {
		return nil
	}
	return &testHooks{}
}

// beforeSync is the WAL's BeforeSync hook.
func (h *testHooks) beforeSync() {
	if d := time.Duration(h.fsyncDelay.Load()); d > 0 {
		time.Sleep(d)
	}
}

func (h *testHooks) skipReadIndex() bool { return h != nil && h.unsafeReads.Load() }

func (s *Server) registerTestHooks(mux *http.ServeMux) {
	h := s.hooks
	if h == nil {
		return
	}
	s.log.Warn("test hooks enabled: this member accepts fault injection on its peer port", "env", testHooksEnv)
	mux.HandleFunc("POST /cairn/test/fsync-delay", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "d must be a duration", http.StatusBadRequest)
			return
		}
		h.fsyncDelay.Store(int64(d))
		s.log.Warn("test hook: WAL fsync delay", "delay", d)
	})
	mux.HandleFunc("POST /cairn/test/unsafe-reads", func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "on must be a boolean", http.StatusBadRequest)
			return
		}
		h.unsafeReads.Store(on)
		s.log.Warn("test hook: unsafe linearizable reads", "on", on)
	})
}
