// Optimiser updates, one fused pass per parameter tensor: Keras 3's formulas, exactly those of
// nn_core::optim::update_host. Adam's bias-corrected learning rate is computed on the host.

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

// w -= lr * g.
extern "C" __global__ void sgd(float* w, const float* g, float lr, unsigned int n) {
    GRID_STRIDE(i, n) w[i] -= lr * g[i];
}

// v = mu*v - lr*g; w += v (Nesterov: w += mu*v - lr*g).
extern "C" __global__ void sgd_momentum(float* w, const float* g, float* v, float lr, float momentum, int nesterov,
                                        unsigned int n) {
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        const float vi = momentum * v[i] - lr * gi;
        v[i] = vi;
        w[i] += nesterov ? momentum * vi - lr * gi : vi;
    }
}

// m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr_t * m / (sqrt(v) + eps).
extern "C" __global__ void adam(float* w, const float* g, float* m, float* v, float lr_t, float one_minus_b1,
                                float one_minus_b2, float eps, unsigned int n) {
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        float mi = m[i], vi = v[i];
        mi += (gi - mi) * one_minus_b1;
        vi += (gi * gi - vi) * one_minus_b2;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr_t * mi / (sqrtf(vi) + eps);
    }
}

// v = rho*v + (1-rho)*g^2; w -= lr*g / sqrt(v + eps).
extern "C" __global__ void rmsprop(float* w, const float* g, float* v, float lr, float rho, float eps,
                                   unsigned int n) {
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        const float vi = rho * v[i] + (1.0f - rho) * gi * gi;
        v[i] = vi;
        w[i] -= lr * gi / sqrtf(vi + eps);
    }
}

// As rmsprop, with momentum: m = mu*m + lr*g / sqrt(v + eps); w -= m.
extern "C" __global__ void rmsprop_momentum(float* w, const float* g, float* v, float* m, float lr, float rho,
                                            float momentum, float eps, unsigned int n) {
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        const float vi = rho * v[i] + (1.0f - rho) * gi * gi;
        v[i] = vi;
        const float mi = momentum * m[i] + lr * gi / sqrtf(vi + eps);
        m[i] = mi;
        w[i] -= mi;
    }
}
