// Batch normalisation over [outer, channels, inner]: training (batch statistics, moving
// averages), inference (moving statistics) and the backward pass. The statistics are reduced in
// double, as the CPU sums in f64, in three stages: partial sums by blocks of (channel, part of
// the images), their sums per channel in order, then an element-wise pass.
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

// Training, first stage: block (c, g) sums x and x^2 over part g of channel c, in double,
// into part[2 * (c * parts + g) + {0, 1}].
extern "C" __global__ void bn_stats_part(const float* x, double* part, unsigned int outer, unsigned int channels,
                                         unsigned int inner, unsigned int parts) {
    const unsigned int c = blockIdx.x, g = blockIdx.y;
    double sum = 0.0, sq = 0.0;
    for_part(c, g, parts, outer, channels, inner, [&](size_t i) {
        const double v = (double)x[i];
        sum += v;
        sq += v * v;
    });
    sum = block_sum_d(sum);
    sq = block_sum_d(sq);
    if (threadIdx.x == 0) {
        part[2 * ((size_t)c * parts + g)] = sum;
        part[2 * ((size_t)c * parts + g) + 1] = sq;
    }
}

// Second stage, a thread per channel: batch mean and biased variance from the partial sums
// (in order), saved = [mean; 1/sqrt(var+eps)], moving = m*moving + (1-m)*batch.
extern "C" __global__ void bn_stats_finish(const double* part, float* moving_mean, float* moving_var, float* saved,
                                           unsigned int channels, unsigned int parts, double count, float momentum,
                                           float eps) {
    GRID_STRIDE(c, channels) {
        double sum = 0.0, sq = 0.0;
        for (unsigned int g = 0; g < parts; ++g) {
            sum += part[2 * ((size_t)c * parts + g)];
            sq += part[2 * ((size_t)c * parts + g) + 1];
        }
        const double mean = sum / count;
        double var = sq / count - mean * mean;
        if (!(var > 0.0)) var = 0.0;
        const double inv = 1.0 / sqrt(var + (double)eps);
        saved[c] = (float)mean;
        saved[channels + c] = (float)inv;
        moving_mean[c] = momentum * moving_mean[c] + (1.0f - momentum) * (float)mean;
        moving_var[c] = momentum * moving_var[c] + (1.0f - momentum) * (float)var;
    }
}

// Third stage, element-wise: y = gamma*(x-mean)*inv + beta with the saved statistics.
extern "C" __global__ void bn_apply(const float* x, const float* gamma, const float* beta, const float* saved, float* y,
                                    unsigned int n, unsigned int channels, unsigned int inner) {
    GRID_STRIDE(i, n) {
        const unsigned int c = ((unsigned int)i / inner) % channels;
        y[i] = gamma[c] * (x[i] - saved[c]) * saved[channels + c] + beta[c];
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

// Backward, first stage: block (c, g) sums dy and dy*xhat over part g of channel c, in
// double, into part[2 * (c * parts + g) + {0, 1}].
extern "C" __global__ void bn_grad_part(const float* x, const float* dy, const float* saved, double* part,
                                        unsigned int outer, unsigned int channels, unsigned int inner,
                                        unsigned int parts) {
    const unsigned int c = blockIdx.x, g = blockIdx.y;
    const float mean = saved[c], inv = saved[channels + c];
    double sdy = 0.0, sdyx = 0.0;
    for_part(c, g, parts, outer, channels, inner, [&](size_t i) {
        const float d = dy[i];
        sdy += (double)d;
        sdyx += (double)(d * (x[i] - mean) * inv);
    });
    sdy = block_sum_d(sdy);
    sdyx = block_sum_d(sdyx);
    if (threadIdx.x == 0) {
        part[2 * ((size_t)c * parts + g)] = sdy;
        part[2 * ((size_t)c * parts + g) + 1] = sdyx;
    }
}

// Second stage, a thread per channel: dbeta = sum dy, dgamma = sum dy*xhat (partials in order).
extern "C" __global__ void bn_grad_finish(const double* part, float* dgamma, float* dbeta, unsigned int channels,
                                          unsigned int parts) {
    GRID_STRIDE(c, channels) {
        double sdy = 0.0, sdyx = 0.0;
        for (unsigned int g = 0; g < parts; ++g) {
            sdy += part[2 * ((size_t)c * parts + g)];
            sdyx += part[2 * ((size_t)c * parts + g) + 1];
        }
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)sdyx;
    }
}

// Third stage, element-wise: dx = gamma*inv/N * (N*dy - dbeta - xhat*dgamma), N = count.
extern "C" __global__ void bn_grad_apply(const float* x, const float* dy, const float* gamma, const float* saved,
                                         const float* dgamma, const float* dbeta, float* dx, unsigned int n,
                                         unsigned int channels, unsigned int inner, float count) {
    GRID_STRIDE(i, n) {
        const unsigned int c = ((unsigned int)i / inner) % channels;
        const float mean = saved[c], inv = saved[channels + c];
        const float k = gamma[c] * inv / count;
        const float xhat = (x[i] - mean) * inv;
        dx[i] = k * (count * dy[i] - dbeta[c] - xhat * dgamma[c]);
    }
}
