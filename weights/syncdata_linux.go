package weights

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData is fdatasync: the data and what is needed to read it back, not
// the timestamps.
func syncData(f *os.File) { _ = unix.Fdatasync(int(f.Fd())) }
