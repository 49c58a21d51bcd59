package weights

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestSyncAheadSyncsAlongTheWay(t *testing.T) {
	var syncs atomic.Int64
	old := syncFile
	syncFile = func(*os.File) { syncs.Add(1) }
	defer func() { syncFile = old }()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := StartSyncAhead(f)
	s.Wrote(syncAheadEvery - 1)
	time.Sleep(20 * time.Millisecond)
	if n := syncs.Load(); n != 0 {
		t.Fatalf("%d syncs before %d bytes were written", n, syncAheadEvery)
	}
	s.Wrote(1)
	for deadline := time.Now().Add(10 * time.Second); syncs.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no sync after the threshold was reached")
		}
	}
	s.Stop()
	s.Stop() // a second Stop does nothing
	n := syncs.Load()
	s.Wrote(3 * syncAheadEvery) // after Stop: neither blocks nor syncs
	time.Sleep(20 * time.Millisecond)
	if syncs.Load() != n {
		t.Fatal("a sync after Stop")
	}
}
