// Fused softmax + cross-entropy (or cross-entropy on probabilities), one warp per row: writes
// the gradient with respect to the outputs and adds [sum loss, sum correct] of the batch to
// stats[0..2] with one atomicAdd per block, so the loss never leaves the device until the host
// asks for it. Mirrors nn-core/src/cpu/xent.rs.

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Index of the first maximum of v[0..n) (the CPU's `argmax`), the same in every lane.
__device__ int warp_argmax(const float* v, unsigned int n, unsigned int lane) {
    float best = neg_inf();
    int at = -1;
    for (unsigned int j = lane; j < n; j += 32) {
        const float x = v[j];
        if (at < 0 || x > best) {
            best = x;
            at = (int)j;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oa = __shfl_xor_sync(0xffffffffu, at, o);
        if (oa >= 0 && (at < 0 || ob > best || (ob == best && oa < at))) {
            best = ob;
            at = oa;
        }
    }
    return at < 0 ? 0 : at;
}

// out, grad: [rows, cols]; targets: [rows] labels (sparse) or [rows, cols]; stats[0] += loss,
// stats[1] += correct. eps is Keras's epsilon (1e-7), min_positive f32::MIN_POSITIVE.
extern "C" __global__ void cross_entropy(const float* out, const float* targets, float* grad, float* stats,
                                         unsigned int rows, unsigned int cols, int logits, int sparse,
                                         float grad_scale, float eps, float min_positive) {
    __shared__ float s_loss[32];
    __shared__ float s_correct[32];
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float loss_acc = 0.0f, correct_acc = 0.0f;
    for (size_t r = (size_t)blockIdx.x * warps + warp; r < rows; r += (size_t)gridDim.x * warps) {
        const float* o = out + r * cols;
        float* g = grad + r * cols;
        const float* t = sparse ? (const float*)0 : targets + r * cols;
        const int label = sparse ? (int)targets[r] : warp_argmax(t, cols, lane);
        if (warp_argmax(o, cols, lane) == label) correct_acc += 1.0f;
        const bool valid = label >= 0 && (unsigned int)label < cols;
        float row_loss = 0.0f;
        if (logits) {
            float m = neg_inf();
            for (unsigned int j = lane; j < cols; j += 32) m = fmaxf(m, o[j]);
            m = warp_max(m);
            float s = 0.0f;
            for (unsigned int j = lane; j < cols; j += 32) {
                const float e = expf(o[j] - m);
                g[j] = e;
                s += e;
            }
            s = warp_sum(s);
            const float lse = m + logf(s);
            const float inv = 1.0f / s;
            if (sparse) {
                row_loss = valid ? lse - o[label] : quiet_nan();
                const float k = inv * grad_scale;
                for (unsigned int j = lane; j < cols; j += 32) {
                    float v = g[j] * k;
                    if ((int)j == label) v -= grad_scale;
                    g[j] = v;
                }
            } else {
                float tsum = 0.0f, l = 0.0f;
                for (unsigned int j = lane; j < cols; j += 32) {
                    tsum += t[j];
                    l += t[j] * (lse - o[j]);
                }
                tsum = warp_sum(tsum);
                row_loss = warp_sum(l);
                for (unsigned int j = lane; j < cols; j += 32) g[j] = (g[j] * inv * tsum - t[j]) * grad_scale;
            }
        } else {
            float psum = 0.0f, tsum = 0.0f;
            for (unsigned int j = lane; j < cols; j += 32) {
                psum += o[j];
                if (!sparse) tsum += t[j];
            }
            psum = fmaxf(warp_sum(psum), min_positive);
            tsum = sparse ? 1.0f : warp_sum(tsum);
            float l = 0.0f;
            for (unsigned int j = lane; j < cols; j += 32) {
                const float p = o[j];
                const float tj = sparse ? ((int)j == label ? 1.0f : 0.0f) : t[j];
                const float q = p / psum;
                const bool clipped = !(q >= eps && q <= 1.0f - eps);
                l -= tj * logf(fminf(fmaxf(q, eps), 1.0f - eps));
                const float direct = (clipped || tj == 0.0f) ? 0.0f : -tj / p;
                g[j] = (direct + tsum / psum) * grad_scale;
            }
            row_loss = warp_sum(l);
            if (sparse && !valid) row_loss = quiet_nan();
        }
        loss_acc += row_loss;
    }
    if (lane == 0) {
        s_loss[warp] = loss_acc;
        s_correct[warp] = correct_acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float l = 0.0f, c = 0.0f;
        for (unsigned int w = 0; w < warps; ++w) {
            l += s_loss[w];
            c += s_correct[w];
        }
        atomicAdd(&stats[0], l);
        atomicAdd(&stats[1], c);
    }
}
