package weights

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/weightops/weightops/internal/parallel"
)

// Report is what `weightops inspect` shows of a checkpoint.
type Report struct {
	Path       string            `json:"path"`
	Tensors    []TensorReport    `json:"tensors"`
	Count      int               `json:"tensor_count"`
	Parameters int64             `json:"parameters"`
	Bytes      int64             `json:"bytes"`
	ByDType    map[string]int64  `json:"bytes_by_dtype"`
	Metadata   map[string]string `json:"metadata"`
	// NaNTotal and InfTotal count non-finite values over every tensor:
	// with stats only (null without).
	NaNTotal *int64 `json:"nan_total"`
	InfTotal *int64 `json:"inf_total"`
}

// TensorReport is one row of a Report.
type TensorReport struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	Bytes int64   `json:"bytes"`
	Stats *Stats  `json:"stats"`
}

// sectionStatsAbove is the tensor size above which Inspect reads a tensor
// stored raw in parts rather than whole. A variable for tests.
var sectionStatsAbove int64 = 1 << 20

// Inspect describes a checkpoint; with stats it reads every tensor once,
// one at a time, calling progress with each tensor's bytes.
func Inspect(ctx context.Context, c Checkpoint, stats bool, progress func(int64)) (*Report, error) {
	r := &Report{Path: c.Path(), Metadata: c.Metadata(), ByDType: map[string]int64{}}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	infos := c.Tensors()
	r.Tensors = make([]TensorReport, len(infos))
	pos := make(map[string]int, len(infos))
	for i, t := range infos {
		b, _ := t.ByteSize()
		n, _ := t.NumElements()
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		r.Tensors[i] = TensorReport{Name: t.Name, DType: t.DType.String(), Shape: shape, Bytes: b}
		pos[t.Name] = i
		r.Parameters += n
		r.Bytes += b
		r.ByDType[t.DType.String()] += b
	}
	r.Count = len(infos)
	if !stats {
		return r, nil
	}
	// Statistics are CPU-bound (decode + accumulate): one tensor per core.
	bufs := make([][]byte, 2)
	err := parallel.Items(ctx, len(infos), len(bufs), func(w, i int) error {
		t := infos[i]
		size, _ := t.ByteSize()
		var s Stats
		var err error
		if sec, ok := TensorSection(c, t.Name); ok && t.DType.Size() > 0 && size > sectionStatsAbove {
			// Large and stored raw: read in parts, so memory does not
			// follow the largest tensor.
			if s, err = sectionStats(t.DType, sec, &bufs[w]); err != nil {
				return &TensorError{File: c.Path(), Tensor: t.Name, Err: err}
			}
		} else {
			var ten Tensor
			ten, err = c.ReadTensor(t.Name, bufs[w])
			if err != nil {
				return err
			}
			bufs[w] = ten.Data
			if s, err = ComputeStats(ten); err != nil {
				return &TensorError{File: c.Path(), Tensor: t.Name, Err: err}
			}
		}
		r.Tensors[pos[t.Name]].Stats = &s
		if progress != nil {
			progress(size)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var nan, inf int64
	for _, t := range r.Tensors {
		nan += t.Stats.NaN
		inf += t.Stats.Inf
	}
	r.NaNTotal, r.InfTotal = &nan, &inf
	return r, nil
}

// WriteTable prints the report as an aligned text table with totals.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	withStats := len(r.Tensors) > 0 && r.Tensors[0].Stats != nil
	if withStats {
		fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tBYTES\tMIN\tMAX\tMEAN\tSTD\tNAN")
	} else {
		fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tBYTES")
	}
	for _, t := range r.Tensors {
		ti := TensorInfo{Shape: t.Shape}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d", t.Name, t.DType, ti.ShapeString(), t.Bytes)
		if s := t.Stats; s != nil {
			fmt.Fprintf(tw, "\t%.6g\t%.6g\t%.6g\t%.6g\t%d", s.Min, s.Max, s.Mean, s.Std, s.NaN)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d tensors, %d parameters, %s (%d bytes)\n", r.Count, r.Parameters, HumanBytes(r.Bytes), r.Bytes)
	dts := make([]string, 0, len(r.ByDType))
	for k := range r.ByDType {
		dts = append(dts, k)
	}
	sort.Strings(dts)
	for _, k := range dts {
		fmt.Fprintf(w, "  %-8s %s\n", k, HumanBytes(r.ByDType[k]))
	}
	if r.NaNTotal != nil {
		fmt.Fprintf(w, "non-finite values: %d NaN, %d Inf\n", *r.NaNTotal, *r.InfTotal)
	}
	if len(r.Metadata) > 0 {
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintln(w, "metadata:")
		for _, k := range keys {
			v := r.Metadata[k]
			if len(v) > 120 {
				v = v[:117] + "..."
			}
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	return nil
}

// HumanBytes formats a byte count with binary units (KiB, MiB, GiB).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ParseBytes reads a size such as "5GB", "500MiB", "1.5G" or "1024".
// Decimal units (KB, MB, GB) are powers of 1000 as in transformers'
// max_shard_size; binary units (KiB, MiB, GiB) are powers of 1024.
func ParseBytes(s string) (int64, error) {
	var v float64
	var unit string
	if _, err := fmt.Sscanf(s, "%g%s", &v, &unit); err != nil {
		if _, err2 := fmt.Sscanf(s, "%g", &v); err2 != nil {
			return 0, fmt.Errorf("invalid size %q", s)
		}
	}
	mult := map[string]float64{
		"": 1, "B": 1,
		"K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	}[unit]
	if mult == 0 || v <= 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 5GB, 500MiB)", s)
	}
	return int64(v * mult), nil
}
