// Writes the quantization fixtures of testdata/gguf: for each ggml type,
// the bytes ggml's reference quantizer (from_float_ref) makes of the
// floats in inputs.f32, and the floats ggml's dequantizer (to_float)
// makes of those bytes. Run once, by hand, against a ggml build of your
// own (https://github.com/ggml-org/ggml, library ggml-base):
//
//   cc -O2 quant-fixtures.c -I GGML/include -L GGML_BUILD/src -lggml-base -o qf
//   LD_LIBRARY_PATH=GGML_BUILD/src ./qf inputs.f32 .
//
// inputs.f32 is little-endian float32, rows of 256 (TestQuantFixtures
// documents its patterns). Output: TYPE.q (the blocks) and TYPE.f32.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s inputs.f32 outdir\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    long n = bytes / 4;
    struct ggml_init_params ip = {1 << 20, NULL, true};
    ggml_free(ggml_init(ip)); // fills the fp16 tables
    float *x = malloc(bytes), *y = malloc(bytes);
    if (fread(x, 4, n, f) != (size_t)n) { perror("read"); return 1; }
    fclose(f);
    const enum ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,
        GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_F16, GGML_TYPE_BF16};
    for (size_t t = 0; t < sizeof(types)/sizeof(types[0]); t++) {
        const struct ggml_type_traits *tr = ggml_get_type_traits(types[t]);
        if (!tr->from_float_ref || !tr->to_float) { fprintf(stderr, "%s: no reference functions\n", tr->type_name); return 1; }
        size_t qb = ggml_row_size(types[t], n);
        void *q = malloc(qb);
        tr->from_float_ref(x, q, n);
        tr->to_float(q, y, n);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.q", argv[2], tr->type_name);
        FILE *o = fopen(path, "wb"); fwrite(q, 1, qb, o); fclose(o);
        snprintf(path, sizeof path, "%s/%s.f32", argv[2], tr->type_name);
        o = fopen(path, "wb"); fwrite(y, 4, n, o); fclose(o);
        free(q);
    }
    return 0;
}
