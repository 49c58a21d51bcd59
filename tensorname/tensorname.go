// Package tensorname reads what a checkpoint's tensor names say about the
// network — which numbered block a tensor is in, whether it is an input
// embedding or part of the output head — the one place signature layer
// selection, merge gradients and LoRA adapters ask. Names are all a
// checkpoint has: module types are not recorded.
package tensorname

import (
	"regexp"
	"strconv"
	"strings"
)

// Module strips a tensor name's last component: the module that owns it
// ("model.layers.0.mlp.up_proj" for "model.layers.0.mlp.up_proj.weight").
func Module(tensor string) string {
	if i := strings.LastIndexByte(tensor, '.'); i > 0 {
		return tensor[:i]
	}
	return tensor
}

// Leaf is a name's last component ("up_proj" for
// "model.layers.0.mlp.up_proj").
func Leaf(name string) string { return name[strings.LastIndexByte(name, '.')+1:] }

// blockRe finds a numbered block: transformers' model.layers.N,
// transformer.h.N, encoder.layer.N, blocks.N.
var blockRe = regexp.MustCompile(`(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.`)

// Layer is the index of the numbered block a tensor belongs to, and false
// for tensors outside the blocks (embeddings, final norm, head).
func Layer(tensor string) (int, bool) {
	m := blockRe.FindStringSubmatch(tensor)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// Group is the part of the network a tensor belongs to for per-layer
// figures: its numbered block ("model.layers.3" for every tensor of block
// 3), else its module ("model.embed_tokens", "features.0").
func Group(tensor string) string {
	if loc := blockRe.FindStringSubmatchIndex(tensor); loc != nil {
		return tensor[:loc[3]] // up to the block number
	}
	return Module(tensor)
}

// Layers is one more than the highest block index among the tensors (0
// without numbered blocks).
func Layers(tensors []string) int {
	n := 0
	for _, t := range tensors {
		if i, ok := Layer(t); ok {
			n = max(n, i+1)
		}
	}
	return n
}

// embeddingTables are the module names transformers gives nn.Embedding
// layers.
var embeddingTables = map[string]bool{
	"embed_tokens": true, "wte": true, "wpe": true, "word_embeddings": true,
	"position_embeddings": true, "token_type_embeddings": true, "embed_in": true,
	"embed_positions": true, "tok_embeddings": true, "shared": true,
}

// IsEmbeddingTable reports whether a module is an embedding lookup table
// (an nn.Embedding: rows indexed by token), by its leaf name. LoRA adapts
// these differently from linear layers.
func IsEmbeddingTable(module string) bool { return embeddingTables[Leaf(module)] }

// inputPart matches a module component at a network's input: embedding
// tables and the groups holding them (BERT's "embeddings"), patch
// embeddings, a convolutional stem.
var inputPart = regexp.MustCompile(`(?i)^(embed\w*|\w*_embed\w*|\w*embeddings|wte|wpe|shared|stem)$`)

// headPart matches a module component after the blocks: output heads,
// classifiers and final norms.
var headPart = regexp.MustCompile(`(?i)^(lm_head|head|heads|classifier|output|out|logits|fc_out|fc|final\w*|ln_f|norm)$`)

// Kind is where a tensor sits in a network, read from its name.
type Kind int

// Kinds, in network order.
const (
	// Input: embeddings and a stem, before everything else.
	Input Kind = iota
	// Body: everything between (numbered blocks, a sequential network's
	// feature layers).
	Body
	// Head: after the blocks: final norm, output head, classifier.
	Head
)

// KindOf places a tensor (or module) name: Body inside a numbered block,
// else Input or Head when one of its module components says so, else Body.
func KindOf(name string) Kind {
	if _, ok := Layer(name + "."); ok {
		return Body
	}
	parts := strings.Split(name, ".")
	for _, p := range parts {
		if inputPart.MatchString(p) {
			return Input
		}
	}
	for _, p := range parts {
		if headPart.MatchString(p) {
			return Head
		}
	}
	return Body
}
