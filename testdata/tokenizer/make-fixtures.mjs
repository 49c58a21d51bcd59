// Builds the small tokenizers in this directory from real vocabularies and
// records the ids an independent implementation gives for test texts.
// Run once, by hand, in a scratch directory:
//
//   npm install @huggingface/tokenizers@0.2.0 gpt-3-encoder llama-tokenizer-js
//   cp /path/to/testdata/tokenizer/make-fixtures.mjs . && node make-fixtures.mjs /path/to/testdata/tokenizer
//
// gpt2 and llama3 share GPT-2's byte-level vocabulary cut to its first
// 3000 merges (gpt2 with GPT-2's pre-tokenizer, llama3 with Llama-3's
// split pattern and ignore_merges, qwen2 with Qwen2's pattern and NFC); llama2 is Llama-2's SentencePiece-style
// vocabulary cut to its first 3000 ids and its single characters, with
// byte fallback. The expected
// ids come from @huggingface/tokenizers (a JavaScript implementation).
import fs from "fs";
import path from "path";
import { createRequire } from "module";
import { Tokenizer } from "@huggingface/tokenizers";
import llama from "llama-tokenizer-js";

const out = process.argv[2];
const require = createRequire(import.meta.url);
const gptDir = path.dirname(require.resolve("gpt-3-encoder"));
const encoder = JSON.parse(fs.readFileSync(path.join(gptDir, "encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(gptDir, "vocab.bpe"), "utf8").split("\n").slice(1).filter((l) => l.length > 0);

const K = 3000;
function byteLevelVocab() {
  const keep = new Set();
  const byId = Object.entries(encoder).sort((a, b) => a[1] - b[1]);
  for (const [tok, id] of byId) if (id < 256) keep.add(tok);
  const ms = merges.slice(0, K);
  for (const m of ms) keep.add(m.replace(" ", ""));
  const vocab = {};
  let n = 0;
  for (const [tok] of byId) if (keep.has(tok)) vocab[tok] = n++;
  return { vocab, merges: ms, next: n };
}

const gptRegex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function added(id, content, special = true) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special };
}

function gpt2() {
  const { vocab, merges, next } = byteLevelVocab();
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(next, "<|endoftext|>")],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

function llama3() {
  const { vocab, merges, next } = byteLevelVocab();
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(next, "<|begin_of_text|>"), added(next + 1, "<|end_of_text|>"), added(next + 2, "<|eot_id|>")],
    normalizer: null,
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: llama3Regex }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ] },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
  };
}

const qwen2Regex = llama3Regex.replace("\\p{N}{1,3}", "\\p{N}");

function qwen2() {
  const t = llama3();
  t.normalizer = { type: "NFC" };
  t.pre_tokenizer.pretokenizers[0].pattern.Regex = qwen2Regex;
  t.model.ignore_merges = false;
  t.added_tokens = [added(t.added_tokens[0].id, "<|endoftext|>"), added(t.added_tokens[0].id + 1, "<|im_start|>")];
  return t;
}

function llama2() {
  // Llama-2 keeps its single characters at the end of the vocabulary.
  const pieces = llama.vocabById.filter((p, i) => i < K || [...p].length === 1);
  const vocab = {};
  pieces.forEach((p, i) => { vocab[p] = i; });
  const ms = [...llama.merges.entries()].sort((a, b) => a[1] - b[1]).map(([m]) => m)
    .filter((m) => { const [a, b] = m.split(" "); return a in vocab && b in vocab && (a + b) in vocab; });
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: ms },
  };
}

const texts = [
  "Hello world",
  "Hello, world! It's 2026; they're here.",
  "  leading and   inner   spaces, trailing  ",
  "tabs\tand\nnew\r\nlines\n\n\nend",
  "numbers 1234567 and 3.14159, 1,000,000",
  "Unicode: naïve café, Ærøskøbing, Привет мир, 日本語のテキスト, عربى",
  "emoji 🙂👍🏽 and 🇩🇪 flags",
  "CAPS I'LL WE'VE You'D",
  "code: for (i = 0; i < n; i++) { x += y[i]; }",
  "<s>special tokens</s> in text <|endoftext|> and <|begin_of_text|>hi<|eot_id|>",
  "",
  " ",
  "a\u00a0b\u2003c",
  "decomposed cafe\u0301 and 12345 digits <|im_start|>user",
];

const cases = {};
for (const [name, tj] of [["gpt2", gpt2()], ["llama3", llama3()], ["qwen2", qwen2()], ["llama2", llama2()]]) {
  const dir = path.join(out, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tj));
  const cfg = { add_bos_token: false, add_eos_token: false, model_max_length: 2048 };
  const tok = new Tokenizer(tj, cfg);
  cases[name] = texts.map((text) => ({ text, ids: tok.encode(text, { add_special_tokens: false }).ids }));
}
fs.writeFileSync(path.join(out, "cases.json"), JSON.stringify(cases, null, 1));
