// Device helpers shared by the kernel sources: prepended to each `.cu` file before NVRTC
// compiles it (`Source::program` in kernels.rs).

// Calls f(i) for every element i of channel c of [outer, channels, inner] whose position in
// the channel (o * inner + k) lies in part g of `parts` equal slices of them: the block's
// threads take consecutive positions (coalesced). Blocks (channel, part) keep the whole GPU
// busy whatever the layout: a block per channel left all but a few multiprocessors idle, and
// between conv layers, where images are channels-major (outer 1), slices of images would give
// a block one image plane for the whole batch.
template <typename F>
__device__ __forceinline__ void for_part(unsigned int c, unsigned int g, unsigned int parts, unsigned int outer,
                                         unsigned int channels, unsigned int inner, F f) {
    const size_t total = (size_t)outer * inner;
    const size_t t1 = total * (g + 1) / parts;
    for (size_t t = total * g / parts + threadIdx.x; t < t1; t += blockDim.x) {
        const size_t o = t / inner, k = t - o * inner;
        f((o * channels + c) * inner + k);
    }
}
