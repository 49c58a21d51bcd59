package weights

// The legacy format (torch < 1.6): consecutive pickles (magic number,
// protocol, system info, the object, the storage keys) followed by the raw
// storages.

import (
	"bufio"
	"encoding/binary"
	"io"
	"math/big"

	"github.com/weightops/weightops/internal/pickle"
)

func (c *torchCheckpoint) loadLegacy(l *torchLoader) (any, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(c.f, 0, c.size), 64<<10)
	var pos int64
	next := func(what string) (any, error) {
		n, body, err := pickle.Scan(br, c.size-pos, true)
		pos += n
		if err != nil {
			return nil, c.errorf("legacy format: %s pickle: %w", what, err)
		}
		obj, err := l.unpickle(body)
		if err != nil {
			return nil, c.errorf("legacy format: %s pickle: %w", what, err)
		}
		return obj, nil
	}
	magic, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Text(16) != legacyMagic {
		return nil, c.errorf("not a PyTorch checkpoint (a pickle without the torch.save magic number)")
	}
	proto, err := next("protocol version")
	if err != nil {
		return nil, err
	}
	if p, ok := proto.(int); !ok || p != legacyProtocol {
		return nil, c.errorf("unsupported legacy protocol version %s (want %d)", pickle.Short(proto), legacyProtocol)
	}
	sysInfo, err := next("sys_info")
	if err != nil {
		return nil, err
	}
	if le, ok := pickle.Lookup(sysInfo, "little_endian"); ok && le == false {
		return nil, c.errorf("big-endian checkpoint is unsupported; re-save it on a little-endian machine")
	}
	obj, err := next("main")
	if err != nil {
		return nil, err
	}
	keysObj, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	keys, ok := pickle.Items(keysObj)
	if !ok {
		return nil, c.errorf("legacy format: storage keys are a %s, not a list", pickle.TypeName(keysObj))
	}
	// The storages follow in the order of the keys, each an 8-byte
	// little-endian element count and the raw bytes. Only seek over them.
	var count [8]byte
	for _, k := range keys {
		key, ok := pickle.String(k)
		if !ok {
			return nil, c.errorf("legacy format: storage key is a %s, not a string", pickle.TypeName(k))
		}
		r := l.roots[key]
		if r == nil {
			return nil, c.errorf("legacy format: storage %.40q is listed but the pickle never refers to it", key)
		}
		if r.resolved {
			return nil, c.errorf("legacy format: storage %.40q listed twice", key)
		}
		if _, err := c.f.ReadAt(count[:], pos); err != nil {
			return nil, c.errorf("legacy format: storage %.40q: reading its size at byte %d: %w", key, pos, noEOF(err))
		}
		pos += 8
		n := int64(binary.LittleEndian.Uint64(count[:]))
		es := int64(r.elem.size)
		if n < 0 || n > (c.size-pos)/es {
			return nil, c.errorf("legacy format: storage %.40q of %d elements of %d bytes at byte %d overruns the %d-byte file", key, uint64(n), es, pos, c.size)
		}
		r.off, r.size, r.resolved = pos, n*es, true
		pos += n * es
	}
	for _, r := range l.order {
		if !r.resolved {
			return nil, c.errorf("legacy format: storage %.40q has no data in the file", r.key)
		}
	}
	return obj, nil
}
