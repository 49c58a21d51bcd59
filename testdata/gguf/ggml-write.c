// Writes ggml.gguf with ggml's own GGUF writer (gguf_write_to_file): one
// metadata value of every type, then six tensors [16 rows × 256] of the
// floats in inputs.f32 as F32, F16, Q8_0, Q4_0, Q4_K and Q6_K (ggml's
// reference quantizers). TestGGMLWrittenFile reads it and writes the same
// file byte for byte. Run once, by hand, against a ggml build of your own:
//
//   cc -O2 ggml-write.c -I GGML/include -L GGML_BUILD/src -lggml-base -o gw
//   LD_LIBRARY_PATH=GGML_BUILD/src ./gw inputs.f32 ggml.gguf
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
#include "gguf.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s inputs.f32 out.gguf\n", argv[0]); return 2; }
    static float x[4096];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, 4, 4096, f) != 4096) { perror(argv[1]); return 1; }
    fclose(f);
    struct ggml_init_params ip = {64 << 20, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    struct gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_u8(g, "test.u8", 200);
    gguf_set_val_i8(g, "test.i8", -100);
    gguf_set_val_u16(g, "test.u16", 60000);
    gguf_set_val_i16(g, "test.i16", -30000);
    gguf_set_val_u32(g, "test.u32", 4000000000u);
    gguf_set_val_i32(g, "test.i32", -2000000000);
    gguf_set_val_f32(g, "test.f32", 0.1f);
    gguf_set_val_bool(g, "test.bool", true);
    gguf_set_val_u64(g, "test.u64", 18000000000000000000ull);
    gguf_set_val_i64(g, "test.i64", -9000000000000000000ll);
    gguf_set_val_f64(g, "test.f64", 0.1);
    const char *strs[] = {"a", "βγ", ""};
    gguf_set_arr_str(g, "test.strings", strs, 3);
    const int32_t ints[] = {1, -2, 3};
    gguf_set_arr_data(g, "test.i32s", GGUF_TYPE_INT32, ints, 3);
    const enum ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    for (int i = 0; i < 6; i++) {
        struct ggml_tensor *t = ggml_new_tensor_2d(ctx, types[i], 256, 16);
        char name[64];
        snprintf(name, sizeof name, "t_%s", ggml_type_name(types[i]));
        ggml_set_name(t, name);
        const struct ggml_type_traits *tr = ggml_get_type_traits(types[i]);
        if (types[i] == GGML_TYPE_F32) {
            for (int j = 0; j < 4096; j++) ((float *)t->data)[j] = x[j];
        } else {
            tr->from_float_ref(x, t->data, 4096);
        }
        gguf_add_tensor(g, t);
    }
    if (!gguf_write_to_file(g, argv[2], false)) { fprintf(stderr, "write failed\n"); return 1; }
    return 0;
}
