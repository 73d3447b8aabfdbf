// Batch normalisation over [outer, channels, inner]: training (batch statistics, moving
// averages), inference (moving statistics) and the backward pass. The statistics kernels run
// one block per channel and reduce in double through shared memory, as the CPU sums in f64.
// Mirrors nn-core/src/cpu/norm.rs.

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

// Sum over the block; valid in thread 0. Every thread of the block must call it.
__device__ double block_sum_d(double v) {
    __shared__ double part[32];
    __syncthreads();  // the shared array may still be read by a previous call
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

// Flat index of the t-th element (t < outer*inner) of channel c.
__device__ __forceinline__ size_t channel_index(size_t t, unsigned int c, unsigned int channels, unsigned int inner) {
    const unsigned int o = (unsigned int)t / inner, k = (unsigned int)t - o * inner;
    return ((size_t)o * channels + c) * inner + k;
}

// One block per channel: batch mean and biased variance, saved = [mean; 1/sqrt(var+eps)],
// y = gamma*(x-mean)*inv + beta, moving = m*moving + (1-m)*batch.
extern "C" __global__ void batch_norm_train(const float* x, const float* gamma, const float* beta, float* moving_mean,
                                            float* moving_var, float* saved, float* y, unsigned int outer,
                                            unsigned int channels, unsigned int inner, float momentum, float eps) {
    __shared__ float s_mean, s_inv;
    const unsigned int c = blockIdx.x;
    const size_t count = (size_t)outer * inner;
    double sum = 0.0, sq = 0.0;
    for (size_t t = threadIdx.x; t < count; t += blockDim.x) {
        const double v = (double)x[channel_index(t, c, channels, inner)];
        sum += v;
        sq += v * v;
    }
    sum = block_sum_d(sum);
    sq = block_sum_d(sq);
    if (threadIdx.x == 0) {
        const double n = (double)count;
        const double mean = sum / n;
        double var = sq / n - mean * mean;
        if (!(var > 0.0)) var = 0.0;
        const double inv = 1.0 / sqrt(var + (double)eps);
        saved[c] = (float)mean;
        saved[channels + c] = (float)inv;
        s_mean = (float)mean;
        s_inv = (float)inv;
        moving_mean[c] = momentum * moving_mean[c] + (1.0f - momentum) * (float)mean;
        moving_var[c] = momentum * moving_var[c] + (1.0f - momentum) * (float)var;
    }
    __syncthreads();
    const float m = s_mean, inv = s_inv, g = gamma[c], b = beta[c];
    for (size_t t = threadIdx.x; t < count; t += blockDim.x) {
        const size_t i = channel_index(t, c, channels, inner);
        y[i] = g * (x[i] - m) * inv + b;
    }
}

// y = gamma*(x - moving_mean)/sqrt(moving_var + eps) + beta, element-wise.
extern "C" __global__ void batch_norm_infer(const float* x, const float* gamma, const float* beta,
                                            const float* moving_mean, const float* moving_var, float* y,
                                            unsigned int n, unsigned int channels, unsigned int inner, float eps) {
    GRID_STRIDE(i, n) {
        const unsigned int c = ((unsigned int)i / inner) % channels;
        const float inv = 1.0f / sqrtf(moving_var[c] + eps);
        y[i] = gamma[c] * (x[i] - moving_mean[c]) * inv + beta[c];
    }
}

// One block per channel: dbeta = sum dy, dgamma = sum dy*xhat,
// dx = gamma*inv/N * (N*dy - dbeta - xhat*dgamma).
extern "C" __global__ void batch_norm_backward(const float* x, const float* dy, const float* gamma, const float* saved,
                                               float* dx, float* dgamma, float* dbeta, unsigned int outer,
                                               unsigned int channels, unsigned int inner) {
    __shared__ float s_sdy, s_sdyx;
    const unsigned int c = blockIdx.x;
    const size_t count = (size_t)outer * inner;
    const float mean = saved[c], inv = saved[channels + c];
    double sdy = 0.0, sdyx = 0.0;
    for (size_t t = threadIdx.x; t < count; t += blockDim.x) {
        const size_t i = channel_index(t, c, channels, inner);
        const float d = dy[i];
        sdy += (double)d;
        sdyx += (double)(d * (x[i] - mean) * inv);
    }
    sdy = block_sum_d(sdy);
    sdyx = block_sum_d(sdyx);
    if (threadIdx.x == 0) {
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)sdyx;
        s_sdy = (float)sdy;
        s_sdyx = (float)sdyx;
    }
    __syncthreads();
    const float n = (float)count;
    const float k = gamma[c] * inv / n;
    const float a = s_sdy, b = s_sdyx;
    for (size_t t = threadIdx.x; t < count; t += blockDim.x) {
        const size_t i = channel_index(t, c, channels, inner);
        const float xhat = (x[i] - mean) * inv;
        dx[i] = k * (n * dy[i] - a - xhat * b);
    }
}
