// First-passage queries over range-minimum tables by binary lifting (liqgpu model v1).
//
// The CUDA counterpart of liqgpu.model.engine._SparseTables.first_at_or_below; the per-thread
// logic is mirrored line by line by liqgpu.testing.kernels.first_cross_emulate, which the CPU
// tests compare with the engine.
//
// Tables: for j = 0 .. J-1, level j holds, at flat index (w * S + s) * L + p, the minimum of
// the values of table w (0: trigger lows, 1: minus trigger highs) of series s over the 2^j
// positions p, p+1, ..., p + 2^j - 1 (padding past the chunk length m is +inf). L = 2^J > m.
//
// Query q asks for the first position p >= start[q] whose value is <= thr[q]; the answer is m
// when there is none. Starting from pos = start, for j = J-1 down to 0: if the 2^j values from
// pos are all > thr, the answer lies beyond them and pos advances by 2^j. pos is clamped to
// L-1 when reading (it can run past the table) and the result is clamped to m.
//
// Comparisons follow IEEE semantics: a NaN value or threshold never compares greater, so it
// stops the lifting exactly as numpy's `v > thr` does.

// One query: `levels[j]` points at level j (2 * S * L doubles each).
__device__ __forceinline__ long long first_cross_one(
    const double* const* __restrict__ levels,
    const long long base,
    const long long start,
    const double thr,
    const long long L,
    const int J,
    const long long m)
{
    long long pos = start;
    for (int j = J - 1; j >= 0; --j) {
        const long long at = pos < L - 1 ? pos : L - 1;
        const double v = levels[j][base + at];
        if (v > thr) {
            pos += (1LL << j);
        }
    }
    return pos < m ? pos : m;
}

// first_cross_f64: one thread per query (grid-stride loop over n queries).
//
// levels  : J device pointers, level j of the tables (float64, 2 * S * L each)
// which   : (n,) int64 table of each query (0 lows, 1 minus highs)
// series  : (n,) int64 series of each query
// start   : (n,) int64 first local position to search
// thr     : (n,) float64 threshold (the level for longs, minus the level for shorts)
// out     : (n,) int64 first local position >= start whose value is <= thr, else m
extern "C" __global__ void first_cross_f64(
    const double* const* __restrict__ levels,
    const long long* __restrict__ which,
    const long long* __restrict__ series,
    const long long* __restrict__ start,
    const double* __restrict__ thr,
    long long* __restrict__ out,
    const long long n,
    const long long S,
    const long long L,
    const int J,
    const long long m)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long base = (which[i] * S + series[i]) * L;
        out[i] = first_cross_one(levels, base, start[i], thr[i], L, J, m);
    }
}
