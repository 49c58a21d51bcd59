package weights

// The zip format (torch ≥ 1.6): an archive holding <name>/data.pkl and
// one <name>/data/<key> entry per storage.

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"strings"

	"github.com/weightops/weightops/internal/pickle"
)

func (c *torchCheckpoint) loadZip(l *torchLoader) (any, error) {
	zr, err := zip.NewReader(c.f, c.size)
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return nil, c.errorf("reading zip archive: %w", err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	for _, e := range zr.File {
		if _, dup := entries[e.Name]; !dup {
			entries[e.Name] = e
		}
		if path.Base(e.Name) == "data.pkl" {
			if pkl == nil || strings.Count(e.Name, "/") < strings.Count(pkl.Name, "/") {
				pkl = e
			}
		}
	}
	if pkl == nil {
		return nil, c.errorf("zip archive has no data.pkl: not a torch.save checkpoint")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if _, ok := entries[prefix+"constants.pkl"]; ok {
		return nil, c.errorf("TorchScript archive (torch.jit.save) is unsupported; save the model's state_dict() with torch.save")
	}
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readZipEntry(bo, 64)
		if err != nil {
			return nil, c.errorf("reading %s: %w", bo.Name, err)
		}
		switch s := strings.TrimSpace(string(b)); s {
		case "little":
		case "big":
			return nil, c.errorf("big-endian checkpoint is unsupported; re-save it on a little-endian machine")
		default:
			return nil, c.errorf("unknown byte order %q in %s", s, bo.Name)
		}
	}
	// A pickle describes tensors: its size is bounded by what the
	// archive's entries can need (a deflated pickle could otherwise expand
	// a thousandfold), and reading stops at that bound.
	data, err := readZipEntry(pkl, pickleLimit(len(zr.File)))
	if err != nil {
		return nil, c.errorf("reading %s: %w", pkl.Name, err)
	}
	n, _, err := pickle.Scan(bytes.NewReader(data), int64(len(data)), false)
	if err != nil {
		return nil, c.errorf("%s: %w", pkl.Name, err)
	}
	obj, err := l.unpickle(data[:n])
	if err != nil {
		return nil, c.errorf("%s: %w", pkl.Name, err)
	}
	for _, r := range l.order {
		name := prefix + "data/" + r.key
		e, ok := entries[name]
		if !ok {
			return nil, c.errorf("storage %.40q: no entry %s in the archive", r.key, name)
		}
		if e.UncompressedSize64 > math.MaxInt64/2 {
			return nil, c.errorf("%s: bad size %d", name, e.UncompressedSize64)
		}
		r.size = int64(e.UncompressedSize64)
		switch e.Method {
		case zip.Store:
			off, err := e.DataOffset()
			if err != nil {
				return nil, c.errorf("%s: %w", name, err)
			}
			if e.CompressedSize64 != e.UncompressedSize64 || off < 0 || off > c.size || r.size > c.size-off {
				return nil, c.errorf("%s: entry of %d bytes at offset %d overruns the %d-byte file", name, r.size, off, c.size)
			}
			r.off = off
		case zip.Deflate:
			// torch never compresses; allow it anyway, streaming. The
			// declared size cannot exceed what deflate can expand to.
			if e.CompressedSize64 > uint64(c.size) || r.size/1032 > int64(e.CompressedSize64)+1 {
				return nil, c.errorf("%s: implausible sizes (%d compressed, %d uncompressed)", name, e.CompressedSize64, r.size)
			}
			r.zf = e
		default:
			return nil, c.errorf("%s: unsupported zip compression method %d", name, e.Method)
		}
	}
	return obj, nil
}

// pickleLimit bounds the data.pkl of an archive of entries: 16 MiB plus
// 64 KiB per entry (a tensor's rebuild call and name take a few hundred
// bytes; real pickles are a few MB at most), within pickle.MaxSize.
func pickleLimit(entries int) int64 {
	return min(int64(pickle.MaxSize), 16<<20+int64(entries)*(64<<10))
}

// readZipEntry reads a whole entry of at most limit bytes.
func readZipEntry(e *zip.File, limit int64) ([]byte, error) {
	rc, err := e.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("entry larger than %d bytes", limit)
	}
	return b, nil
}
