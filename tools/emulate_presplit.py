"""CPU emulation of chunk_bwd's pre-split operand path (kPre: bf16, C = D = 64) against the
accessor path it replaces, fragment by fragment (docs/cuda_scan_perf.md, Round 6).

Transcribes csrc/cuda/chunk_delta_scan.cuh (chunk_bwd_kernel after the pair loop) and
csrc/cuda/mma_tile.cuh (SplitRows, swizzled, load_a, load_b2, warp_tile's loops); run it after
changing either: python3 tools/emulate_presplit.py

For each of the four products (X = dT T_realᵀ, dA = T_realᵀ X, dK, dQ), every warp tile, k step,
lane and register: the bf16 (hi, lo) pair that the SplitRows path loads by ldmatrix (PTX
semantics: .x4, lane 8i + r addresses row r of matrix i; without .trans thread t gets
(row t/4, cols 2(t%4), +1), with .trans (rows 2(t%4), +1; col t/4)) from the swizzled tiles
must equal what pack<true> makes from the accessor values. Also the n-tile loop and break logic
and the (M, N, K) of each call. Values as float32, bf16 by round-to-nearest-even."""
import numpy as np

def bf16(x):
    x = np.asarray(x, np.float32)
    b = x.view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)

def split(x):
    x = np.float32(x); h = bf16(x); return h, bf16(np.float32(x - h))

def swz(r, c, ld): return r * ld + (((c >> 3) ^ (r & 7)) << 3) + (c & 7)

class Split:  # SplitRows: hi/lo tiles in one flat shared array
    def __init__(self, mem, hi, lo, ld, kc): self.mem, self.hi, self.lo, self.ld, self.kc = mem, hi, lo, ld, kc
    def store(self, r, c, x):
        h, l = split(x); i = swz(r, c, self.ld); self.mem[self.hi + i] = h; self.mem[self.lo + i] = l
    def view(self, kc, off=0): return Split(self.mem, self.hi + off, self.lo + off, self.ld, kc)

def ldmatrix(mem, base, ld, addr_of_lane, trans):
    """returns regs[lane][i] = (e0, e1) for the 4 matrices"""
    rows = [[mem[base + addr_of_lane(8 * i + r) + e] for e in range(8)] for i in range(4) for r in range(8)]
    out = []
    for t in range(32):
        regs = []
        for i in range(4):
            M = rows[8 * i: 8 * i + 8]
            if not trans: regs.append((M[t // 4][2 * (t % 4)], M[t // 4][2 * (t % 4) + 1]))
            else: regs.append((M[2 * (t % 4)][t // 4], M[2 * (t % 4) + 1][t // 4]))
        out.append(regs)
    return out

def tile_load_a(S, part, i0, k0, kc):
    base = S.hi if part == 0 else S.lo
    if kc: f = lambda l: swz(i0 + l % 16, k0 + 8 * (l // 16), S.ld)
    else: f = lambda l: swz(k0 + l % 8 + 8 * ((l // 8) // 2), i0 + 8 * ((l // 8) % 2), S.ld)
    return ldmatrix(S.mem, base, S.ld, f, not kc)

def tile_load_b2(S, part, k0, j0, kc):
    base = S.hi if part == 0 else S.lo
    if kc: f = lambda l: swz(j0 + l % 8 + 8 * ((l // 8) // 2), k0 + 8 * ((l // 8) % 2), S.ld)
    else: f = lambda l: swz(k0 + l % 8 + 8 * ((l // 8) % 2), j0 + 8 * ((l // 8) // 2), S.ld)
    return ldmatrix(S.mem, base, S.ld, f, not kc)

def check_product(M, N, K, Aacc, Bacc, At, Bt, Mt, Nt):
    """accessor path (M, N, K) with bounded accessors vs tile path (Mt, Nt, K); returns #fragments compared.
    Bt None: B is an exact Rows tile in both paths (only A compared)."""
    A = lambda i, k: Aacc(i, k) if i < M and k < K else np.float32(0)
    B = lambda k, j: Bacc(k, j) if k < K and j < N else np.float32(0)
    tiles_m, tiles_n = (M + 15) // 16, (N + 31) // 32
    assert ((Mt + 15) // 16, (Nt + 31) // 32) == (tiles_m, tiles_n)
    n_cmp = 0
    for w in range(tiles_m * tiles_n):
        i0, j0 = (w // tiles_n) * 16, (w % tiles_n) * 32
        for k0 in range(0, K, 16):
            ah = tile_load_a(At, 0, i0, k0, At.kc); al = tile_load_a(At, 1, i0, k0, At.kc)
            for lane in range(32):
                g, c = lane // 4, lane % 4; r0, ka = i0 + g, k0 + 2 * c
                for q, (rr, kk) in enumerate([(r0, ka), (r0 + 8, ka), (r0, ka + 8), (r0 + 8, ka + 8)]):
                    for e in range(2):
                        h, l = split(A(rr, kk + e))
                        assert ah[lane][q][e] == h and al[lane][q][e] == l, ('A', i0, k0, lane, q, e)
                        n_cmp += 1
            # the tile path runs the n-tiles with j0 + 8n < Nt; beyond N the accessor gives zeros
            if Bt is None: continue
            for n in range(4):
                if j0 + 8 * n >= Nt: break
                if n % 2 == 0:
                    bh = tile_load_b2(Bt, 0, k0, j0 + 8 * n, Bt.kc); bl = tile_load_b2(Bt, 1, k0, j0 + 8 * n, Bt.kc)
                for lane in range(32):
                    g, c = lane // 4, lane % 4; j, ka = j0 + 8 * n + g, k0 + 2 * c
                    for q, kk in enumerate([ka, ka + 8]):
                        for e in range(2):
                            h, l = split(B(kk + e, j))
                            got = (bh[lane][2 * (n % 2) + q][e], bl[lane][2 * (n % 2) + q][e])
                            assert got == (h, l), ('B', j0, n, k0, lane, q, e, got, (h, l))
                            n_cmp += 1
    return n_cmp

def run(m, C=64, seed=0):
    rng = np.random.default_rng(seed)
    LC = C + 1
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    # fp32 tiles as the kernel holds them (garbage outside the meaningful ranges)
    T = f32(C, LC); dT = f32(C, LC); beta = rng.random(C).astype(np.float32)
    for t in range(m):
        for j in range(t + 1, m): T[t, j] = 0  # unit_lower_inverse zeroes the upper triangle
    R = 2 * C * (C + 1); CC = C * C
    mem = np.full(6 * C * (C + 1), np.float32(np.nan), np.float32)  # the T + EH region, bf16 elements
    Xs = Split(mem, 0, CC, C, True); Ts = Split(mem, R, R + CC, C, True); dTs = Split(mem, R + 2 * CC, R + 3 * CC, C, True)
    for i in range(CC // 2):
        t, j = i // (C // 2), 2 * (i % (C // 2))
        for jj in (j, j + 1):
            inn = t < m and jj < m
            Ts.store(t, jj, T[t, jj] if inn else 0.0)
            dTs.store(t, jj, dT[t, jj] if inn and jj < t else 0.0)
    m16 = (m + 15) // 16 * 16
    # P1: X = dT_lower T_realᵀ
    n1 = check_product(m, m, m, lambda l, k: dT[l, k] if k < l else np.float32(0), lambda k, j: T[j, k],
                       dTs, Ts, m16, m16)
    X = np.zeros((C, C), np.float32)
    dTl = np.where(np.tril(np.ones((m, m), bool), -1), dT[:m, :m], 0).astype(np.float64)
    Xfull = (dTl @ T[:m, :m].T.astype(np.float64)).astype(np.float32)  # stand-in values for the mma output
    # the output functor writes l, j < m16 (warp_tile_out bound); values beyond m are exact zeros
    tiles_n = (m16 + 31) // 32
    for l in range(m16):
        for j in range(min(m16, tiles_n * 32)):
            v = Xfull[l, j] if l < m and j < m else np.float32(0)
            Xs.store(l, j, v); X[l, j] = v
    # P2: dA = T_realᵀ X, A(t,l) = T[l][t], B(l,j) = X[l][j]
    n2 = check_product(m, m, m, lambda t, l: T[l, t], lambda l, j: X[l, j],
                       Ts.view(False), Xs.view(False), m, m)
    # dT lower ← dA (stand-in), then the dK operand
    dA = f32(C, C)
    for t in range(m):
        for j in range(t): dT[t, j] = -dA[t, j]
    def dk_a(t, k):
        if k >= C: return dT[t, k - C] if (k - C < m and t <= k - C) else np.float32(0)
        return np.float32(0) if k >= m else (np.float32(beta[t] * dT[t, k]) if k < t else (np.float32(beta[k] * dT[k, t]) if k > t else np.float32(0)))
    dKs = Split(mem, 0, 2 * CC, 2 * C, True)
    for i in range(CC):
        t, k = i // C, 2 * (i % C)
        for kk in (k, k + 1): dKs.store(t, kk, dk_a(t, kk) if t < m else 0.0)
    n3 = check_product(m, 64, 2 * C, dk_a, lambda k, d: np.float32(0), dKs, None, m, 64)
    n4 = check_product(m, 64, m, lambda t, j: dT[j, t] if j <= t else np.float32(0), lambda k, d: np.float32(0),
                       dKs.view(False, C), None, m, 64)
    # tile regions stay inside the T + EH region, in-bounds, no NaN read (checked by the asserts: NaN != NaN)
    return n1, n2, n3, n4

for m in (1, 7, 16, 17, 33, 50, 64):  # chunk lengths
    print('m', m, 'fragments compared (P1, P2, dK, dQ):', run(m, seed=m))
# swizzle is a bijection on each row (ld = 64, 128)
for ld in (64, 128):
    for r in range(16):
        assert sorted(swz(r, c, ld) - r * ld for c in range(ld)) == list(range(ld))
print('ok')

# Emulator sanity: the GPU-validated Rows path (plain addressing, ld = D + 8) for dK's B operand
# (Rows<false> over the K and Q tiles back to back) and dQ's (rows_b<true, false>(K)) gives the
# accessor's values too (ldmatrix semantics as emulated above).
def plain_b2(mem, ld, k0, j0, kc):
    if kc: f = lambda l: (j0 + l % 8 + 8 * ((l // 8) // 2)) * ld + k0 + 8 * ((l // 8) % 2)
    else: f = lambda l: (k0 + l % 8 + 8 * ((l // 8) % 2)) * ld + j0 + 8 * ((l // 8) // 2)
    return ldmatrix(mem, 0, ld, f, not kc)
C, D, LD = 64, 64, 72
rng = np.random.default_rng(1)
KQ = bf16(rng.standard_normal((2 * C, LD)).astype(np.float32))
mem = KQ.reshape(-1)
for k0 in range(0, 2 * C, 16):
    for j0 in range(0, D, 16):
        b = plain_b2(mem, LD, k0, j0, False)
        for lane in range(32):
            g, c = lane // 4, lane % 4
            for n in range(2):
                for q, kk in enumerate([k0 + 2 * c, k0 + 2 * c + 8]):
                    for e in range(2):
                        assert b[lane][2 * n + q][e] == KQ[kk + e, j0 + 8 * n + g]
print('emulator agrees with the validated Rows path')
