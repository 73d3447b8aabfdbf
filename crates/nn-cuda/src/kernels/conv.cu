// Convolution and pooling helpers: im2col / col2im, the axis swap between the GEMM layout and
// [c, n, h, w] (channels-major), max and average pooling with their gradients. Mirrors nn-core/src/cpu/conv.rs;
// the gathers below add their terms in the CPU's order, so they match it bit for bit.

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

// nn_core::device::Window as 32-bit integers (the host's `WinArgs`, same field order).
struct Win {
    int n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// x [c, n, h, w] (channels-major) -> cols [c*kh*kw, n*oh*ow], zero outside the image. One thread per column
// element (coalesced writes).
extern "C" __global__ void im2col(const float* x, float* cols, Win p, unsigned int total) {
    const unsigned int ohw = (unsigned int)(p.oh * p.ow);
    const unsigned int ncols = (unsigned int)p.n * ohw;
    GRID_STRIDE(i, total) {
        const unsigned int idx = (unsigned int)i;
        const unsigned int r = idx / ncols, col = idx - r * ncols;
        const unsigned int ni = col / ohw, pix = col - ni * ohw;
        const int oy = (int)(pix / (unsigned int)p.ow), ox = (int)(pix % (unsigned int)p.ow);
        const int kj = (int)(r % (unsigned int)p.kw);
        const int ki = (int)((r / (unsigned int)p.kw) % (unsigned int)p.kh);
        const int ci = (int)(r / (unsigned int)(p.kw * p.kh));
        const int iy = oy * p.sh + ki - p.ph, ix = ox * p.sw + kj - p.pw;
        float v = 0.0f;
        if (iy >= 0 && iy < p.h && ix >= 0 && ix < p.w)
            v = x[(((size_t)ci * p.n + ni) * p.h + iy) * p.w + ix];
        cols[i] = v;
    }
}

// dx [c, n, h, w] = sum of the column entries that im2col read from each pixel (overwrites dx).
// One thread per pixel gathers its terms in (ki, kj) order, as the CPU adds them.
extern "C" __global__ void col2im(const float* cols, float* dx, Win p, unsigned int total) {
    const unsigned int ohw = (unsigned int)(p.oh * p.ow);
    const size_t ncols = (size_t)p.n * ohw;
    GRID_STRIDE(i, total) {
        unsigned int t = (unsigned int)i;
        const int x = (int)(t % (unsigned int)p.w);
        t /= (unsigned int)p.w;
        const int y = (int)(t % (unsigned int)p.h);
        t /= (unsigned int)p.h;
        const unsigned int ni = t % (unsigned int)p.n;
        const int ci = (int)(t / (unsigned int)p.n);
        float acc = 0.0f;
        for (int ki = 0; ki < p.kh; ++ki) {
            const int ty = y + p.ph - ki;
            if (ty < 0 || ty % p.sh != 0) continue;
            const int oy = ty / p.sh;
            if (oy >= p.oh) continue;
            for (int kj = 0; kj < p.kw; ++kj) {
                const int tx = x + p.pw - kj;
                if (tx < 0 || tx % p.sw != 0) continue;
                const int ox = tx / p.sw;
                if (ox >= p.ow) continue;
                const size_t r = ((size_t)ci * p.kh + ki) * p.kw + kj;
                acc += cols[r * ncols + (size_t)ni * ohw + (size_t)oy * p.ow + ox];
            }
        }
        dx[i] = acc;
    }
}

// src [a, b, r] -> dst [b, a, r]; one thread per destination element.
extern "C" __global__ void swap_axes01(const float* src, float* dst, unsigned int a, unsigned int b, unsigned int r,
                                       unsigned int total) {
    GRID_STRIDE(i, total) {
        const unsigned int idx = (unsigned int)i;
        const unsigned int k = idx % r, q = idx / r;
        const unsigned int ai = q % a, bj = q / a;
        dst[i] = src[((size_t)ai * b + bj) * r + k];
    }
}

// Max pooling of x [n, c, h, w] into y [n, c, oh, ow]; arg holds each winner's offset in its
// input plane (as f32; the first maximum wins, as on the CPU).
extern "C" __global__ void max_pool_fwd(const float* x, float* y, float* arg, Win p, unsigned int total) {
    GRID_STRIDE(i, total) {
        unsigned int t = (unsigned int)i;
        const int ox = (int)(t % (unsigned int)p.ow);
        t /= (unsigned int)p.ow;
        const int oy = (int)(t % (unsigned int)p.oh);
        const unsigned int plane = t / (unsigned int)p.oh;
        const float* xp = x + (size_t)plane * p.h * p.w;
        const int y0 = oy * p.sh - p.ph, x0 = ox * p.sw - p.pw;
        float best = neg_inf();
        int at = 0;
        for (int ki = 0; ki < p.kh; ++ki) {
            const int yy = y0 + ki;
            if (yy < 0 || yy >= p.h) continue;
            for (int kj = 0; kj < p.kw; ++kj) {
                const int xx = x0 + kj;
                if (xx < 0 || xx >= p.w) continue;
                const float v = xp[yy * p.w + xx];
                if (v > best) {
                    best = v;
                    at = yy * p.w + xx;
                }
            }
        }
        y[i] = best;
        arg[i] = (float)at;
    }
}

// dx[plane, arg] += dy for every output (dx zeroed beforehand by the host). Windows that do not
// overlap (stride >= size, the usual case) never collide, so the result is exact.
extern "C" __global__ void max_pool_bwd(const float* dy, const float* arg, float* dx, Win p, unsigned int total) {
    const unsigned int ohw = (unsigned int)(p.oh * p.ow);
    const size_t hw = (size_t)p.h * p.w;
    GRID_STRIDE(i, total) {
        const unsigned int plane = (unsigned int)i / ohw;
        atomicAdd(&dx[(size_t)plane * hw + (size_t)arg[i]], dy[i]);
    }
}

// Average pooling; padding cells are not counted.
extern "C" __global__ void avg_pool_fwd(const float* x, float* y, Win p, unsigned int total) {
    GRID_STRIDE(i, total) {
        unsigned int t = (unsigned int)i;
        const int ox = (int)(t % (unsigned int)p.ow);
        t /= (unsigned int)p.ow;
        const int oy = (int)(t % (unsigned int)p.oh);
        const unsigned int plane = t / (unsigned int)p.oh;
        const float* xp = x + (size_t)plane * p.h * p.w;
        const int y0 = oy * p.sh - p.ph, x0 = ox * p.sw - p.pw;
        float s = 0.0f;
        int k = 0;
        for (int ki = 0; ki < p.kh; ++ki) {
            const int yy = y0 + ki;
            if (yy < 0 || yy >= p.h) continue;
            for (int kj = 0; kj < p.kw; ++kj) {
                const int xx = x0 + kj;
                if (xx < 0 || xx >= p.w) continue;
                s += xp[yy * p.w + xx];
                k += 1;
            }
        }
        y[i] = k > 0 ? s / (float)k : 0.0f;
    }
}

// Gradient of average pooling (overwrites dx): each pixel gathers dy / count of every window
// that covers it, in output order.
extern "C" __global__ void avg_pool_bwd(const float* dy, float* dx, Win p, unsigned int total) {
    const unsigned int ohw = (unsigned int)(p.oh * p.ow);
    GRID_STRIDE(i, total) {
        unsigned int t = (unsigned int)i;
        const int x = (int)(t % (unsigned int)p.w);
        t /= (unsigned int)p.w;
        const int y = (int)(t % (unsigned int)p.h);
        const unsigned int plane = t / (unsigned int)p.h;
        const float* dyp = dy + (size_t)plane * ohw;
        // Outputs whose window [o*s - pad, o*s - pad + k) holds the pixel.
        const int oy_lo = y + p.ph - p.kh < 0 ? 0 : (y + p.ph - p.kh) / p.sh + 1;
        const int oy_hi = imin(p.oh - 1, (y + p.ph) / p.sh);
        const int ox_lo = x + p.pw - p.kw < 0 ? 0 : (x + p.pw - p.kw) / p.sw + 1;
        const int ox_hi = imin(p.ow - 1, (x + p.pw) / p.sw);
        float acc = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy) {
            const int y0 = oy * p.sh - p.ph;
            if (y < y0 || y >= y0 + p.kh) continue;
            const int rows = imin(y0 + p.kh, p.h) - imax(y0, 0);
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                const int x0 = ox * p.sw - p.pw;
                if (x < x0 || x >= x0 + p.kw) continue;
                const int count = rows * (imin(x0 + p.kw, p.w) - imax(x0, 0));
                acc += dyp[oy * p.ow + ox] / (float)count;
            }
        }
        dx[i] = acc;
    }
}
