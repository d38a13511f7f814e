// Scatter-adds of float64 values by int64 flat index (liqgpu model v1).
//
// atomicAdd on double is native on sm_60 and newer, so duplicate indices are summed in
// hardware; the order of the additions (and so the last bits of a sum) is not deterministic.
// Indices outside [0, size) are skipped so that a bad index can never write out of bounds; the
// Python wrappers can check the indices first and raise (check=True).

// scatter_add_f64: target[index[i]] += values[i] for i < n (grid-stride loop).
extern "C" __global__ void scatter_add_f64(
    double* __restrict__ target,
    const long long size,
    const long long* __restrict__ index,
    const double* __restrict__ values,
    const long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long k = index[i];
        if (k >= 0 && k < size) {
            atomicAdd(target + k, values[i]);
        }
    }
}

// diff_scatter_f64: the fused "difference array" update of a span of rows.
//
// target is a (rows, width) row-major array. For each i < n with lo[i] < hi[i]:
//     target[lo[i], col[i]] += values[i]
//     target[hi[i], col[i]] -= values[i]
// so that a cumulative sum over rows adds values[i] to rows lo[i] .. hi[i]-1 of column col[i].
// Empty spans (lo >= hi) add nothing (not +v and -v, which would cancel only to rounding).
// This replaces two masked scatter_add calls (four gathers of the masked entries) by one pass.
extern "C" __global__ void diff_scatter_f64(
    double* __restrict__ target,
    const long long rows,
    const long long width,
    const long long* __restrict__ lo,
    const long long* __restrict__ hi,
    const long long* __restrict__ col,
    const double* __restrict__ values,
    const long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long a = lo[i];
        const long long b = hi[i];
        const long long c = col[i];
        if (a < b && c >= 0 && c < width) {
            const double v = values[i];
            if (a >= 0 && a < rows) {
                atomicAdd(target + a * width + c, v);
            }
            if (b >= 0 && b < rows) {
                atomicAdd(target + b * width + c, -v);
            }
        }
    }
}
