// Element-wise and row-wise kernels of nn-cuda: fill, row gathering, bias + activation (fused), softmax rows,
// activation gradients, channel sums (bias gradients), dropout, mul, L1/L2 regularisers.
//
// Each kernel mirrors the CPU reference in nn-core/src/cpu (same formulas, same operation
// order where it matters). Element-wise kernels walk their range with a grid-stride loop, so
// any grid size is correct; indices fit in 32 bits (the host checks every length).

#define ACT_LINEAR 0
#define ACT_RELU 1
#define ACT_SIGMOID 2
#define ACT_TANH 3
#define ACT_SOFTMAX 4

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

// Threads along y of channel_sums_cols (launch::CS_ROWS on the host).
#define CS_ROWS 8

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; the result is valid in thread 0. Every thread of the block must call it.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __syncthreads();  // the shared array may still be read by a previous call
    v = warp_sum(v);
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    const unsigned int warps = (blockDim.x + 31u) >> 5;
    v = threadIdx.x < warps ? part[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    return v;
}

__device__ double block_sum_d(double v) {
    __shared__ double part[32];
    __syncthreads();
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    const unsigned int warps = (blockDim.x + 31u) >> 5;
    v = threadIdx.x < warps ? part[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float act_apply(int act, float x) {
    switch (act) {
    case ACT_RELU: return fmaxf(x, 0.0f);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case ACT_TANH: return tanhf(x);
    default: return x;
    }
}

// buf[i] = value for i < n.
extern "C" __global__ void fill_f32(float* buf, float value, unsigned int n) {
    GRID_STRIDE(i, n) buf[i] = value;
}

// dst[i, :] = src[rows[i], :] for i < n, rows of `width` values; the row numbers are floats
// (exact below 2^24), checked by the host.
extern "C" __global__ void gather_rows(const float* src, const float* rows, float* dst, unsigned int width,
                                       unsigned int n) {
    GRID_STRIDE(i, (size_t)width * n) {
        size_t r = i / width, c = i - r * width;
        dst[i] = src[(size_t)rows[r] * width + c];
    }
}

// y = act(y + bias[(i / inner) % channels]) over [outer, channels, inner] (not softmax).
extern "C" __global__ void bias_act(float* y, const float* bias, int has_bias, int act, unsigned int n,
                                    unsigned int channels, unsigned int inner) {
    GRID_STRIDE(i, n) {
        float v = y[i];
        if (has_bias) v += bias[((unsigned int)i / inner) % channels];
        y[i] = act_apply(act, v);
    }
}

// Softmax of each contiguous row of `cols` values, one warp per row.
extern "C" __global__ void softmax_rows(float* y, unsigned int rows, unsigned int cols) {
    const unsigned int lane = threadIdx.x & 31u, warps = blockDim.x >> 5;
    for (size_t r = (size_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (size_t)gridDim.x * warps) {
        float* row = y + r * cols;
        float m = neg_inf();
        for (unsigned int j = lane; j < cols; j += 32) m = fmaxf(m, row[j]);
        m = warp_max(m);
        float s = 0.0f;
        for (unsigned int j = lane; j < cols; j += 32) {
            const float e = expf(row[j] - m);
            row[j] = e;
            s += e;
        }
        s = warp_sum(s);
        const float inv = 1.0f / s;
        for (unsigned int j = lane; j < cols; j += 32) row[j] *= inv;
    }
}

// dy *= act'(y), the derivative written through the output y (relu, sigmoid, tanh).
extern "C" __global__ void act_backward(const float* y, float* dy, int act, unsigned int n) {
    GRID_STRIDE(i, n) {
        const float v = y[i];
        switch (act) {
        case ACT_RELU:
            if (v <= 0.0f) dy[i] = 0.0f;
            break;
        case ACT_SIGMOID: dy[i] *= v * (1.0f - v); break;
        case ACT_TANH: dy[i] *= 1.0f - v * v; break;
        default: break;
        }
    }
}

// Softmax Jacobian-vector product per row of `cols`: dy = y * (dy - <dy, y>), one warp per row.
extern "C" __global__ void softmax_backward(const float* y, float* dy, unsigned int rows, unsigned int cols) {
    const unsigned int lane = threadIdx.x & 31u, warps = blockDim.x >> 5;
    for (size_t r = (size_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (size_t)gridDim.x * warps) {
        const float* yr = y + r * cols;
        float* dr = dy + r * cols;
        float dot = 0.0f;
        for (unsigned int j = lane; j < cols; j += 32) dot += dr[j] * yr[j];
        dot = warp_sum(dot);
        for (unsigned int j = lane; j < cols; j += 32) dr[j] = yr[j] * (dr[j] - dot);
    }
}

// out[c] = beta*out[c] + sum_o dy[o, c] for inner == 1: block (32, CS_ROWS), 32 channels per
// block, coalesced reads along the channels.
extern "C" __global__ void channel_sums_cols(const float* dy, float* out, float beta, unsigned int outer,
                                             unsigned int channels) {
    __shared__ float part[CS_ROWS][33];
    const unsigned int c = blockIdx.x * 32u + threadIdx.x;
    float s = 0.0f;
    if (c < channels)
        for (unsigned int o = threadIdx.y; o < outer; o += CS_ROWS) s += dy[(size_t)o * channels + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < channels) {
        float t = 0.0f;
        for (int k = 0; k < CS_ROWS; ++k) t += part[k][threadIdx.x];
        out[c] = beta == 0.0f ? t : beta * out[c] + t;
    }
}

// Channel sums over planes (inner > 1), first stage: block (c, g) sums part g of channel c
// into part[c * parts + g].
extern "C" __global__ void channel_sums_part(const float* dy, float* part, unsigned int outer, unsigned int channels,
                                             unsigned int inner, unsigned int parts) {
    const unsigned int c = blockIdx.x, g = blockIdx.y;
    float s = 0.0f;
    for_part(c, g, parts, outer, channels, inner, [&](size_t i) { s += dy[i]; });
    s = block_sum(s);
    if (threadIdx.x == 0) part[(size_t)c * parts + g] = s;
}

// Second stage: out[c] = beta*out[c] + the channel's partial sums, in order.
extern "C" __global__ void channel_sums_finish(const float* part, float* out, float beta, unsigned int channels,
                                               unsigned int parts) {
    GRID_STRIDE(c, channels) {
        float s = 0.0f;
        for (unsigned int g = 0; g < parts; ++g) s += part[c * parts + g];
        out[c] = beta == 0.0f ? s : beta * out[c] + s;
    }
}

// The SplitMix64 finaliser of nn_core::device::dropout_uniform: uniform in [0, 1) from
// (seed, index), top 24 bits.
__device__ __forceinline__ float dropout_uniform(unsigned long long seed, unsigned long long index) {
    unsigned long long z = seed ^ (index * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// Inverted dropout: mask = 0 or keep (= 1/(1-rate), computed on the host), x *= mask.
extern "C" __global__ void dropout_mask(float* x, float* mask, float rate, float keep, unsigned long long seed,
                                        unsigned int n) {
    GRID_STRIDE(i, n) {
        const float m = dropout_uniform(seed, (unsigned long long)i) < rate ? 0.0f : keep;
        mask[i] = m;
        x[i] *= m;
    }
}

// x *= m.
extern "C" __global__ void mul_inplace(float* x, const float* m, unsigned int n) {
    GRID_STRIDE(i, n) x[i] *= m[i];
}

// dw += 2*l2*w + l1*sign(w).
extern "C" __global__ void regularizer_grad(const float* w, float* dw, float l1, float l2, unsigned int n) {
    GRID_STRIDE(i, n) {
        const float v = w[i];
        const float s = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
        dw[i] += 2.0f * l2 * v + l1 * s;
    }
}

// acc[0] += l1*sum|w| + l2*sum w^2, summed in double by one block (no atomics: deterministic).
extern "C" __global__ void regularizer_penalty(const float* w, float l1, float l2, unsigned int n, float* acc) {
    double a = 0.0, s = 0.0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = w[i];
        a += (double)fabsf(v);
        s += (double)(v * v);
    }
    a = block_sum_d(a);
    s = block_sum_d(s);
    if (threadIdx.x == 0) acc[0] += (float)((double)l1 * a + (double)l2 * s);
}
