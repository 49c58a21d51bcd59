# Writes inputs.f32: 16 rows of 256 float32 values, one test pattern per
# row (see TestQuantFixtures). Deterministic; run once.
import math, random, struct, sys
random.seed(14)
rows = []
def normal(s=1.0): return [random.gauss(0, s) for _ in range(256)]
rows.append([0.0] * 256)                                  # 0 all zero
rows.append([0.5] * 256)                                  # 1 constant
rows.append([-3.25] * 256)                                # 2 negative constant
r = normal(); r[5], r[77] = 4.0, -4.0; rows.append(r)     # 3 ±max tie, + first
r = normal(); r[5], r[77] = -4.0, 4.0; rows.append(r)     # 4 ±max tie, − first
rows.append(normal(1e-30))                                # 5 scales underflow f16
rows.append(normal(1e-6))                                 # 6 subnormal f16 scales
rows.append(normal())                                     # 7 standard normal
rows.append(normal(0.02))                                 # 8 weight-like
r = normal(0.02)
for i in (3, 100, 200, 255): r[i] = 1.0 if i % 2 else -1.0
rows.append(r)                                            # 9 outliers
rows.append(normal(1e3))                                  # 10 large
rows.append([random.random() for _ in range(256)])        # 11 all positive
rows.append([-random.random() for _ in range(256)])       # 12 all negative
rows.append([float((i % 16) - 8) for i in range(256)])    # 13 integers -8..7
r = [(j % 127) - 63 + 0.5 for j in range(256)]; r[0] = 127.0; rows.append(r)  # 14 .5 ties after scaling
r = normal()
for i in range(32, 64): r[i] = 0.0
for i in range(64, 96): r[i] *= 1e-3
rows.append(r)                                            # 15 mixed sub-block scales
with open(sys.argv[1], "wb") as f:
    for r in rows:
        f.write(struct.pack("<256f", *r))
