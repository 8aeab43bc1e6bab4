// Fused CUDA kernels for sampling (see src/kernels.rs): each replaces two or three of candle's
// kernels, whose broadcast and reduction forms read and write whole tensors more than once.
// Built to PTX by build.rs with the `cuda` feature. Every kernel is instantiated for f32 and bf16
// (`_f32` / `_bf16` suffixes) and computes in f32, rounding once on store.
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float load(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }

// out[r, c] = act(y[r, c] + bias[c]) + residual[r, c] (residual may be null; act 0: none,
// 1: ReLU, 2: tanh): a linear layer's bias, its activation and the residual connection after it,
// in one pass over the product. Index arithmetic is 32-bit when the tensor allows it (64-bit
// division is slow on a GPU).
template <typename T, typename I>
__device__ void bias_act(const T *y, const T *bias, const T *residual, T *out, I total, I cols, int act) {
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
        // Same order of operations as the unfused path: (y + b), the activation, + residual.
        float v = load(y, i) + load(bias, i % cols);
        if (act == 1) v = fmaxf(v, 0.0f);
        else if (act == 2) v = tanhf(v);
        if (residual) v = load(residual, i) + v;
        store(out, i, v);
    }
}

// The attention input projection's output [B, L, 3, H, D] (without its bias) to q, k and v, each
// [B, H, L, D], stacked as out[3, B, H, L, D]: adds the bias and scales q, in one pass. One block
// per (b, l) row of the product.
template <typename T>
__device__ void split_heads(const T *y, const T *bias, T *out, unsigned B, unsigned L, unsigned H, unsigned D,
                            float scale) {
    const unsigned row = blockIdx.x;
    const unsigned b = row / L, l = row % L, hd = H * D;
    const size_t part = (size_t)B * hd * L;
    for (unsigned within = threadIdx.x; within < 3 * hd; within += blockDim.x) {
        const unsigned s = within / hd, rem = within % hd, h = rem / D, d = rem % D;
        float v = load(y, (size_t)row * 3 * hd + within) + load(bias, within);
        if (s == 0) v = v * scale;
        store(out, s * part + (((size_t)b * H + h) * L + l) * D + d, v);
    }
}

// The heads' outputs [B, H, L, D] merged to [B, L, H * D] (the transpose before the attention's
// output projection). One block per (b, l) row of the output.
template <typename T>
__device__ void merge_heads(const T *x, T *out, unsigned L, unsigned H, unsigned D) {
    const unsigned row = blockIdx.x;
    const unsigned b = row / L, l = row % L, hd = H * D;
    for (unsigned within = threadIdx.x; within < hd; within += blockDim.x) {
        const unsigned h = within / D, d = within % D;
        store(out, (size_t)row * hd + within, load(x, (((size_t)b * H + h) * L + l) * D + d));
    }
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Softmax over rows of `cols` values, one warp per row (attention rows are short: candle's kernel
// gives each row a block of 32 threads and passes over it three times). Rows of up to 256 values
// stay in registers between the passes.
template <typename T>
__device__ void softmax_rows(const T *x, T *y, size_t rows, int cols) {
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t base = row * cols;
    if (cols <= 256) {
        float v[8];
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int j = lane + 32 * k;
            v[k] = j < cols ? load(x, base + j) : -INFINITY;
            m = fmaxf(m, v[k]);
        }
        m = warp_max(m);
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int j = lane + 32 * k;
            v[k] = j < cols ? expf(v[k] - m) : 0.0f;
            s += v[k];
        }
        s = warp_sum(s);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int j = lane + 32 * k;
            if (j < cols) store(y, base + j, v[k] / s);
        }
        return;
    }
    float m = -INFINITY;
    for (int j = lane; j < cols; j += 32) m = fmaxf(m, load(x, base + j));
    m = warp_max(m);
    float s = 0.0f;
    for (int j = lane; j < cols; j += 32) s += expf(load(x, base + j) - m);
    s = warp_sum(s);
    for (int j = lane; j < cols; j += 32) store(y, base + j, expf(load(x, base + j) - m) / s);
}

// Backward of the softmax over rows: dx = y * (dy - sum(dy * y)), one warp per row (f32).
__device__ void softmax_rows_bwd(const float *y, const float *dy, float *dx, size_t rows, int cols) {
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t base = row * cols;
    float dot = 0.0f;
    for (int j = lane; j < cols; j += 32) dot += dy[base + j] * y[base + j];
    dot = warp_sum(dot);
    for (int j = lane; j < cols; j += 32) dx[base + j] = (dy[base + j] - dot) * y[base + j];
}

// Backward of layer norm over rows of h values, from the input x (normalised again here), the
// upstream gradient dy and the gain w, one warp per row (f32). Writes out[0] = dx and
// out[1] = dy * x_hat (whose sums over rows are the gain's gradient):
// dx = (g - mean(g) - x_hat * mean(g * x_hat)) * rstd, g = dy * w.
__device__ void layer_norm_bwd(const float *x, const float *dy, const float *w, float *out, size_t rows, int h,
                               float eps) {
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t base = row * h;
    float s = 0.0f;
    for (int j = lane; j < h; j += 32) s += x[base + j];
    const float mean = warp_sum(s) / h;
    float var = 0.0f;
    for (int j = lane; j < h; j += 32) {
        float c = x[base + j] - mean;
        var += c * c;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(var) / h + eps);
    float sg = 0.0f, sgx = 0.0f;
    for (int j = lane; j < h; j += 32) {
        float xh = (x[base + j] - mean) * rstd;
        float g = dy[base + j] * w[j];
        sg += g;
        sgx += g * xh;
    }
    const float mean_g = warp_sum(sg) / h;
    const float mean_gx = warp_sum(sgx) / h;
    float *dx = out;
    float *dyxh = out + rows * h;
    for (int j = lane; j < h; j += 32) {
        float xh = (x[base + j] - mean) * rstd;
        float g = dy[base + j] * w[j];
        dx[base + j] = (g - mean_g - xh * mean_gx) * rstd;
        dyxh[base + j] = dy[base + j] * xh;
    }
}

// Nearest word for each row of `dots` = x · Eᵀ [rows, V]: argmin_v (norms[v] - 2 dots[r, v]),
// the smallest index on ties, one warp per row. Replaces a scale, a broadcast subtraction and
// candle's argmin (three passes over the largest tensor of a sampling step).
__device__ void nearest_rows_impl(const float *dots, const float *norms, uint32_t *ids, size_t rows, int V) {
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *d = dots + row * V;
    float best = INFINITY;
    int best_j = V;
    for (int j = lane; j < V; j += 32) {
        float dist = norms[j] - d[j] * 2.0f;
        if (dist < best) {
            best = dist;
            best_j = j;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffff, best, o);
        int other_j = __shfl_xor_sync(0xffffffff, best_j, o);
        if (other < best || (other == best && other_j < best_j)) {
            best = other;
            best_j = other_j;
        }
    }
    // A row of NaNs has no minimum: fall back to word 0 rather than write out of range.
    if (lane == 0) ids[row] = best_j < V ? (uint32_t)best_j : 0u;
}

#define INSTANTIATE(T, SUFFIX)                                                                      \
    extern "C" __global__ void bias_act_##SUFFIX(const T *y, const T *bias, const T *residual, T *out, \
                                                 size_t total, int cols, int act) {                 \
        if (total < (1u << 31))                                                                     \
            bias_act<T, uint32_t>(y, bias, residual, out, (uint32_t)total, (uint32_t)cols, act);   \
        else                                                                                        \
            bias_act<T, size_t>(y, bias, residual, out, total, (size_t)cols, act);                  \
    }                                                                                               \
    extern "C" __global__ void split_heads_##SUFFIX(const T *y, const T *bias, T *out, int B, int L, \
                                                    int H, int D, float scale) {                    \
        split_heads<T>(y, bias, out, B, L, H, D, scale);                                            \
    }                                                                                               \
    extern "C" __global__ void merge_heads_##SUFFIX(const T *x, T *out, int L, int H, int D) {       \
        merge_heads<T>(x, out, L, H, D);                                                            \
    }                                                                                               \
    extern "C" __global__ void softmax_rows_##SUFFIX(const T *x, T *y, size_t rows, int cols) {      \
        softmax_rows<T>(x, y, rows, cols);                                                          \
    }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)

extern "C" __global__ void nearest_rows_f32(const float *dots, const float *norms, uint32_t *ids, size_t rows,
                                            int V) {
    nearest_rows_impl(dots, norms, ids, rows, V);
}

extern "C" __global__ void softmax_rows_bwd_f32(const float *y, const float *dy, float *dx, size_t rows, int cols) {
    softmax_rows_bwd(y, dy, dx, rows, cols);
}

extern "C" __global__ void layer_norm_bwd_f32(const float *x, const float *dy, const float *w, float *out, size_t rows,
                                              int h, float eps) {
    layer_norm_bwd(x, dy, w, out, rows, h, eps);
}

// Inverted-dropout mask: keep (= 1 / (1 - p)) with probability 1 - p, else 0, from a counter-based
// hash of (seed, index), so a training step's masks need no generator state on the device.
__device__ __forceinline__ float uniform_from(unsigned long long seed, unsigned long long i) {
    unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;  // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);  // top 24 bits: uniform in [0, 1)
}

extern "C" __global__ void dropout_mask_f32(float *out, size_t total, unsigned long long seed, float p, float keep) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        out[i] = uniform_from(seed, i) < p ? 0.0f : keep;
    }
}
