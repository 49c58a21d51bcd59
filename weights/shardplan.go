package weights

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
)

// ShardSpec is one worker's part of a run split over n workers (batch
// engines: Kubernetes indexed Jobs, Slurm arrays). Index is 1-based.
type ShardSpec struct{ Index, Count int }

// ParseShardSpec reads "i/n" with 1 ≤ i ≤ n.
func ParseShardSpec(s string) (ShardSpec, error) {
	var sp ShardSpec
	if _, err := fmt.Sscanf(s, "%d/%d", &sp.Index, &sp.Count); err != nil || sp.Count < 1 || sp.Index < 1 || sp.Index > sp.Count {
		return sp, fmt.Errorf("shard %q: want i/n with 1 ≤ i ≤ n (e.g. 1/4)", s)
	}
	return sp, nil
}

// FileName is the output file this shard writes.
func (s ShardSpec) FileName() string { return ShardName(s.Index, s.Count) }

// PlanBalanced partitions tensors into n groups of nearly equal bytes,
// deterministically: largest first (ties by name) into the currently
// lightest group (ties to the lowest index); each group in natural order.
// Every worker computes the same plan from the same inputs.
func PlanBalanced(infos []TensorInfo, n int) [][]TensorInfo {
	sorted := append([]TensorInfo(nil), infos...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, _ := sorted[i].ByteSize()
		b, _ := sorted[j].ByteSize()
		if a != b {
			return a > b
		}
		return NaturalLess(sorted[i].Name, sorted[j].Name)
	})
	groups := make([][]TensorInfo, n)
	load := make([]int64, n)
	for _, t := range sorted {
		best := 0
		for g := 1; g < n; g++ {
			if load[g] < load[best] {
				best = g
			}
		}
		b, _ := t.ByteSize()
		load[best] += b
		groups[best] = append(groups[best], t)
	}
	for _, g := range groups {
		SortNatural(g)
	}
	return groups
}

// Select returns this shard's tensors of a balanced plan.
func (s ShardSpec) Select(infos []TensorInfo) []TensorInfo {
	return PlanBalanced(infos, s.Count)[s.Index-1]
}

var shardFileRe = regexp.MustCompile(`^model-(\d{5})-of-(\d{5})\.safetensors$`)

// WriteIndex stitches the shard files model-i-of-n.safetensors in dir into
// a model.safetensors.index.json. Every shard 1..n must be present, with
// the same n, and no tensor may appear in two shards.
func WriteIndex(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	found := map[int]string{}
	count := 0
	for _, e := range ents {
		m := shardFileRe.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		if count != 0 && n != count {
			return "", fmt.Errorf("%s: shards of different runs: %s says %d shards, others %d", dir, e.Name(), n, count)
		}
		count = n
		found[i] = e.Name()
	}
	if count == 0 {
		return "", fmt.Errorf("%s: no model-XXXXX-of-XXXXX.safetensors files", dir)
	}
	weightMap := map[string]string{}
	var total int64
	var first map[string]string
	for i := 1; i <= count; i++ {
		name, ok := found[i]
		if !ok {
			return "", fmt.Errorf("%s: shard %s is missing (%d of %d present)", dir, ShardName(i, count), len(found), count)
		}
		c, err := OpenSafetensors(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		// The shards of one run carry the same metadata (recipe, inputs
		// and their digests, patches): any difference means shards of
		// different runs.
		md := c.Metadata()
		if i == 1 {
			first = md
		} else if k, ok := metadataDiff(first, md); ok {
			c.Close()
			return "", fmt.Errorf("%s: %s and %s come from different runs: their metadata %q differs", dir, found[1], name, k)
		}
		for _, t := range c.Tensors() {
			if prev, dup := weightMap[t.Name]; dup {
				c.Close()
				return "", &TensorError{File: filepath.Join(dir, name), Tensor: t.Name, Err: fmt.Errorf("also in %s", prev)}
			}
			weightMap[t.Name] = name
			b, _ := t.ByteSize()
			total += b
		}
		c.Close()
	}
	idx, err := MarshalIndex(total, weightMap)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, IndexName)
	if err := WriteFileAtomic(p, idx); err != nil {
		return "", err
	}
	keep := map[string]bool{IndexName: true}
	for _, name := range found {
		keep[name] = true
	}
	return p, RemoveStale(dir, keep)
}

// metadataDiff returns the first key (in sorted order) whose value
// differs between two metadata maps.
func metadataDiff(a, b map[string]string) (string, bool) {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		va, oka := a[k]
		vb, okb := b[k]
		if va != vb || oka != okb {
			return k, true
		}
	}
	return "", false
}
