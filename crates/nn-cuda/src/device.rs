//! The CUDA device through cudarc: one context, one stream, one cuBLAS handle, and the kernels
//! of `src/kernels/*.cu` compiled by NVRTC.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use nn_core::activation::Activation;
use nn_core::device::{BatchNormArgs, Channels, Device, Gemm, Window};
use nn_core::loss::{XentArgs, EPSILON};
use nn_core::optim::{StepParams, UpdateRule};
use nn_core::Result;

use crate::error::CudaError;
use crate::gemm::{blas_gemm, required_lens};
use crate::kernels::{activation_code, Kernel, Source};
use crate::launch::{self, index_i32, index_u32, Launch};
use crate::{DeviceInfo, Libraries};

type Buf = CudaSlice<f32>;

fn driver_err(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(e.to_string())
}

fn blas_err(e: cudarc::cublas::result::CublasError) -> CudaError {
    CudaError::Blas(e.to_string())
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a panic inside the CUDA libraries' loaders (cudarc panics when a library or
/// a symbol is missing) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(CudaError::Panic(panic_text(p.as_ref()))))
}

/// Which CUDA libraries can be opened (probed once per process).
pub fn libraries() -> Libraries {
    static FOUND: OnceLock<Libraries> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let probe = |f: unsafe fn() -> bool| {
            // SAFETY: the probes only dlopen and dlclose the libraries by name; no symbol is called.
            catch_unwind(|| unsafe { f() }).unwrap_or(false)
        };
        Libraries {
            driver: probe(cudarc::driver::sys::is_culib_present),
            nvrtc: probe(cudarc::nvrtc::sys::is_culib_present),
            cublas: probe(cudarc::cublas::sys::is_culib_present),
        }
    })
}

fn check_driver(libs: Libraries) -> Result<(), CudaError> {
    if libs.driver {
        Ok(())
    } else {
        Err(CudaError::NoDriver(
            "install the NVIDIA driver, or add the folder holding libcuda.so.1 to LD_LIBRARY_PATH".into(),
        ))
    }
}

fn check_libraries() -> Result<(), CudaError> {
    let libs = libraries();
    check_driver(libs)?;
    if !libs.nvrtc {
        return Err(CudaError::MissingLibrary {
            lib: "libnvrtc.so (NVRTC)",
            hint: "install the CUDA toolkit's runtime compiler (cuda-nvrtc), or add its folder to LD_LIBRARY_PATH",
        });
    }
    if !libs.cublas {
        return Err(CudaError::MissingLibrary {
            lib: "libcublas.so (cuBLAS)",
            hint: "install the CUDA toolkit's cuBLAS (libcublas), or add its folder to LD_LIBRARY_PATH",
        });
    }
    Ok(())
}

/// Number of CUDA GPUs, once the driver, NVRTC and cuBLAS libraries are found.
///
/// # Errors
/// A missing library or a driver failure, as [`nn_core::NnError::Device`].
pub fn device_count() -> Result<usize> {
    check_libraries()?;
    let n = guarded(|| CudaContext::device_count().map_err(driver_err))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn info_of(ctx: &CudaContext) -> Result<DeviceInfo, CudaError> {
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name().map_err(driver_err)?,
        total_memory: ctx.total_mem().map_err(driver_err)?,
        compute_capability: ctx.compute_capability().map_err(driver_err)?,
    })
}

/// Name, memory and compute capability of GPU `ordinal` (needs only the driver).
///
/// # Errors
/// No driver, no such device.
pub fn device_info(ordinal: usize) -> Result<DeviceInfo> {
    check_driver(libraries())?;
    Ok(guarded(|| info_of(&*CudaContext::new(ordinal).map_err(driver_err)?))?)
}

/// The compiled kernels, shared by every device of the process.
static PTX: OnceLock<Vec<(Source, Ptx)>> = OnceLock::new();

fn compile_log(e: &CompileError) -> String {
    match e {
        CompileError::CompileError { log, .. } => log.to_string_lossy().trim().to_string(),
        other => other.to_string(),
    }
}

fn compiled() -> Result<&'static [(Source, Ptx)], CudaError> {
    if let Some(p) = PTX.get() {
        return Ok(p);
    }
    let mut out = Vec::with_capacity(Source::ALL.len());
    for s in Source::ALL {
        // No fused multiply-add contraction: each kernel rounds like the CPU reference.
        let opts = CompileOptions { fmad: Some(false), name: Some(s.file_name().into()), ..Default::default() };
        let ptx = compile_ptx_with_opts(s.program(), opts)
            .map_err(|e| CudaError::Compile { file: s.file_name(), log: compile_log(&e) })?;
        out.push((s, ptx));
    }
    Ok(PTX.get_or_init(|| out))
}

/// `nn_core::device::Window` as the kernels' `struct Win` (twelve `int`s, same order).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct WinArgs {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    ph: i32,
    pw: i32,
    oh: i32,
    ow: i32,
}

// SAFETY: a #[repr(C)] struct of twelve i32 without padding, laid out as `struct Win` in conv.cu.
unsafe impl DeviceRepr for WinArgs {}

impl WinArgs {
    fn new(w: &Window) -> Result<WinArgs, CudaError> {
        if w.kh == 0 || w.kw == 0 || w.sh == 0 || w.sw == 0 {
            return Err(CudaError::Invalid(format!("window with an empty kernel or a zero stride: {w:?}")));
        }
        let i = |v: usize| index_i32(v, "window");
        Ok(WinArgs {
            n: i(w.n)?,
            c: i(w.c)?,
            h: i(w.h)?,
            w: i(w.w)?,
            kh: i(w.kh)?,
            kw: i(w.kw)?,
            sh: i(w.sh)?,
            sw: i(w.sw)?,
            ph: i(w.ph)?,
            pw: i(w.pw)?,
            oh: i(w.oh)?,
            ow: i(w.ow)?,
        })
    }
}

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: l.grid, block_dim: l.block, shared_mem_bytes: 0 }
}

/// Checks that `buf` holds at least `len` elements, so that no kernel reads or writes past it.
fn need(buf: &Buf, len: usize, what: &str) -> Result<(), CudaError> {
    if buf.len() < len {
        return Err(CudaError::Invalid(format!("{what}: buffer of {} elements, {len} needed", buf.len())));
    }
    Ok(())
}

/// Launches `kernel` on the device's stream with the given arguments, which must be references
/// to locals (the builder keeps pointers to them until the launch).
macro_rules! launch {
    ($dev:expr, $kernel:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        let cfg = config($cfg);
        let mut builder = $dev.stream.launch_builder($dev.function($kernel));
        $( builder.arg($arg); )*
        // SAFETY: the arguments match the kernel's C signature; `need` checked every buffer's length.
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(driver_err)
    }};
}

/// The CUDA device: one GPU, one stream, one cuBLAS handle and the compiled kernels.
///
/// Buffers are `CudaSlice<f32>` owned by the stream; everything is queued on that stream and
/// runs asynchronously, and [`Device::download`] synchronises it.
pub struct Cuda {
    info: DeviceInfo,
    functions: Vec<CudaFunction>,
    /// Stands in for an absent bias (never read).
    dummy: Buf,
    /// cuBLAS handles must not be used by two threads at once.
    blas: Mutex<CudaBlas>,
    /// The partial sums of per-channel reductions (bias gradients over planes, batch norm),
    /// grown as needed; every use is ordered on the one stream.
    partials: Mutex<Buf>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

impl Drop for Cuda {
    fn drop(&mut self) {
        // Let queued kernels finish before their modules are unloaded; nothing to report to.
        let _ = self.stream.synchronize();
    }
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Cuda {
    /// Opens GPU `ordinal`: its primary context, a stream, a cuBLAS handle, and the kernels
    /// (compiled by NVRTC on first use in the process).
    ///
    /// # Errors
    /// [`nn_core::NnError::Device`] when the driver (`no CUDA driver found (libcuda.so): ...`),
    /// NVRTC or cuBLAS cannot be opened, there is no such GPU, or a kernel does not compile.
    /// Never panics.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        check_libraries()?;
        Ok(guarded(|| Cuda::open(ordinal))?)
    }

    fn open(ordinal: usize) -> Result<Cuda, CudaError> {
        let ctx = CudaContext::new(ordinal).map_err(driver_err)?;
        // SAFETY: every buffer (and cuBLAS) uses this device's one stream, whose order alone orders all uses and frees.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err)?;
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err)?;
        let mut modules = Vec::new();
        for (source, ptx) in compiled()? {
            modules.push((*source, ctx.load_module(ptx.clone()).map_err(driver_err)?));
        }
        let functions = Kernel::ALL
            .iter()
            .map(|k| {
                let (_, module) = modules
                    .iter()
                    .find(|(s, _)| *s == k.source())
                    .ok_or_else(|| CudaError::Invalid(format!("no module for {}", k.name())))?;
                module.load_function(k.name()).map_err(driver_err)
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let dummy = stream.alloc_zeros::<f32>(1).map_err(driver_err)?;
        let partials = Mutex::new(stream.alloc_zeros::<f32>(1).map_err(driver_err)?);
        let info = info_of(&ctx)?;
        Ok(Cuda { info, functions, dummy, blas: Mutex::new(blas), partials, stream, ctx })
    }

    /// The GPU's name, memory and compute capability.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Waits until all queued work has finished.
    ///
    /// # Errors
    /// A failure of any queued operation.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err)?;
        self.ctx.check_err().map_err(driver_err)?;
        Ok(())
    }

    fn function(&self, k: Kernel) -> &CudaFunction {
        &self.functions[k.index()]
    }

    /// The partial-sums buffer, at least `len` floats long (its lock held while in use).
    fn partials(&self, len: usize) -> Result<std::sync::MutexGuard<'_, Buf>, CudaError> {
        let mut p = self.partials.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < len {
            *p = self.stream.alloc_zeros::<f32>(len).map_err(driver_err)?;
        }
        Ok(p)
    }

    fn fill_len(&self, buf: &mut Buf, value: f32, len: usize) -> Result<(), CudaError> {
        need(buf, len, "fill")?;
        if len == 0 {
            return Ok(());
        }
        let n = index_u32(len, "fill")?;
        launch!(self, Kernel::Fill, launch::elementwise(len); buf, &value, &n)
    }
}

impl Device for Cuda {
    type Buf = Buf;

    fn describe(&self) -> String {
        self.info.to_string()
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        // At least one element: CUDA refuses empty allocations.
        Ok(self.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver_err)?)
    }

    fn upload(&self, src: &[f32], dst: &mut Buf) -> Result<()> {
        need(dst, src.len(), "upload")?;
        if src.is_empty() {
            return Ok(());
        }
        let mut view = dst.try_slice_mut(..src.len()).ok_or_else(|| CudaError::Invalid("upload: bad range".into()))?;
        self.stream.memcpy_htod(src, &mut view).map_err(driver_err)?;
        Ok(())
    }

    fn download(&self, src: &Buf, dst: &mut [f32]) -> Result<()> {
        need(src, dst.len(), "download")?;
        if !dst.is_empty() {
            let view = src.try_slice(..dst.len()).ok_or_else(|| CudaError::Invalid("download: bad range".into()))?;
            self.stream.memcpy_dtoh(&view, dst).map_err(driver_err)?;
        }
        self.synchronize()
    }

    fn copy(&self, src: &Buf, dst: &mut Buf, len: usize) -> Result<()> {
        need(src, len, "copy source")?;
        need(dst, len, "copy destination")?;
        if len == 0 {
            return Ok(());
        }
        let from = src.try_slice(..len).ok_or_else(|| CudaError::Invalid("copy: bad range".into()))?;
        let mut to = dst.try_slice_mut(..len).ok_or_else(|| CudaError::Invalid("copy: bad range".into()))?;
        self.stream.memcpy_dtod(&from, &mut to).map_err(driver_err)?;
        Ok(())
    }

    fn gather_rows(&self, src: &Buf, width: usize, rows: &Buf, n: usize, dst: &mut Buf) -> Result<()> {
        need(rows, n, "gather_rows rows")?;
        need(dst, n * width, "gather_rows dst")?;
        if n * width == 0 {
            return Ok(());
        }
        let (w, nn) = (index_u32(width, "gather_rows width")?, index_u32(n, "gather_rows n")?);
        index_u32(n * width, "gather_rows")?;
        Ok(launch!(self, Kernel::GatherRows, launch::elementwise(n * width); src, rows, dst, &w, &nn)?)
    }

    fn fill(&self, buf: &mut Buf, value: f32, len: usize) -> Result<()> {
        Ok(self.fill_len(buf, value, len)?)
    }

    fn gemm(&self, g: &Gemm, a: &Buf, b: &Buf, c: &mut Buf) -> Result<()> {
        let (la, lb, lc) = required_lens(g);
        need(a, la, "gemm A")?;
        need(b, lb, "gemm B")?;
        need(c, lc, "gemm C")?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let bg = blas_gemm(g);
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let i = |v: usize| index_i32(v, "gemm");
        let cfg = GemmConfig {
            transa: op(bg.transa),
            transb: op(bg.transb),
            m: i(bg.m)?,
            n: i(bg.n)?,
            k: i(bg.k)?,
            alpha: g.alpha,
            lda: i(bg.lda)?,
            ldb: i(bg.ldb)?,
            beta: g.beta,
            ldc: i(bg.ldc)?,
        };
        self.ctx.bind_to_thread().map_err(driver_err)?;
        let blas = self.blas.lock().unwrap_or_else(|e| e.into_inner());
        // cuBLAS's A is our B and its B our A (see crate::gemm).
        if bg.batch == 1 {
            // SAFETY: `required_lens` checked above that every operand lies inside its buffer.
            unsafe { blas.gemm(cfg, b, a, c) }.map_err(blas_err)?;
        } else {
            let stride = |v: usize| i64::try_from(v).map_err(|_| CudaError::Invalid("gemm stride".into()));
            let cfg = StridedBatchedConfig {
                gemm: cfg,
                batch_size: i(bg.batch)?,
                stride_a: stride(bg.stride_a)?,
                stride_b: stride(bg.stride_b)?,
                stride_c: stride(bg.stride_c)?,
            };
            // SAFETY: `required_lens` checked above that every matrix of the batch lies inside its buffer.
            unsafe { blas.gemm_strided_batched(cfg, b, a, c) }.map_err(blas_err)?;
        }
        Ok(())
    }

    fn bias_act(&self, y: &mut Buf, bias: Option<&Buf>, act: Activation, s: Channels) -> Result<()> {
        let len = s.len();
        need(y, len, "bias_act")?;
        if let Some(b) = bias {
            need(b, s.channels, "bias")?;
        }
        if len == 0 || (bias.is_none() && act == Activation::Linear) {
            return Ok(());
        }
        let n = index_u32(len, "bias_act")?;
        let (channels, inner) = (index_u32(s.channels, "channels")?, index_u32(s.inner, "inner")?);
        let has_bias = i32::from(bias.is_some());
        let bias = bias.unwrap_or(&self.dummy);
        let code = if act == Activation::Softmax { activation_code(Activation::Linear) } else { activation_code(act) };
        if has_bias != 0 || act != Activation::Softmax {
            launch!(self, Kernel::BiasAct, launch::elementwise(len); &mut *y, bias, &has_bias, &code, &n, &channels, &inner)?;
        }
        if act == Activation::Softmax {
            let rows = len / s.channels;
            let r = index_u32(rows, "softmax rows")?;
            launch!(self, Kernel::SoftmaxRows, launch::warp_rows(rows); y, &r, &channels)?;
        }
        Ok(())
    }

    fn act_backward(&self, y: &Buf, dy: &mut Buf, act: Activation, s: Channels) -> Result<()> {
        let len = s.len();
        need(y, len, "act_backward y")?;
        need(dy, len, "act_backward dy")?;
        if len == 0 {
            return Ok(());
        }
        match act {
            Activation::Linear => Ok(()),
            Activation::Softmax => {
                let rows = len / s.channels;
                let (r, c) = (index_u32(rows, "softmax rows")?, index_u32(s.channels, "softmax columns")?);
                Ok(launch!(self, Kernel::SoftmaxBackward, launch::warp_rows(rows); y, dy, &r, &c)?)
            }
            _ => {
                let (code, n) = (activation_code(act), index_u32(len, "act_backward")?);
                Ok(launch!(self, Kernel::ActBackward, launch::elementwise(len); y, dy, &code, &n)?)
            }
        }
    }

    fn channel_sums(&self, dy: &Buf, s: Channels, beta: f32, out: &mut Buf) -> Result<()> {
        need(dy, s.len(), "channel_sums dy")?;
        need(out, s.channels, "channel_sums out")?;
        if s.channels == 0 {
            return Ok(());
        }
        index_u32(s.len(), "channel_sums")?;
        let (outer, channels) = (index_u32(s.outer, "outer")?, index_u32(s.channels, "channels")?);
        if s.inner == 1 {
            launch!(self, Kernel::ChannelSumsCols, launch::channel_columns(s.channels); dy, out, &beta, &outer, &channels)?;
        } else {
            let inner = index_u32(s.inner, "inner")?;
            let (first, parts) = launch::channel_parts(s.channels, s.outer * s.inner)?;
            let mut part = self.partials(s.channels * parts as usize)?;
            launch!(self, Kernel::ChannelSumsPart, first; dy, &mut *part, &outer, &channels, &inner, &parts)?;
            launch!(self, Kernel::ChannelSumsFinish, launch::elementwise(s.channels); &*part, out, &beta, &channels, &parts)?;
        }
        Ok(())
    }

    fn cross_entropy(&self, a: &XentArgs, out: &Buf, targets: &Buf, grad: &mut Buf, stats: &mut Buf) -> Result<()> {
        let len = a.rows * a.cols;
        need(out, len, "cross_entropy outputs")?;
        need(targets, if a.sparse { a.rows } else { len }, "cross_entropy targets")?;
        need(grad, len, "cross_entropy gradient")?;
        need(stats, 2, "cross_entropy stats")?;
        if a.rows == 0 || a.cols == 0 {
            return Ok(());
        }
        index_u32(len, "cross_entropy")?;
        let (rows, cols) = (index_u32(a.rows, "rows")?, index_u32(a.cols, "classes")?);
        let (logits, sparse) = (i32::from(a.logits), i32::from(a.sparse));
        let (scale, eps, min_positive) = (a.grad_scale, EPSILON, f32::MIN_POSITIVE);
        Ok(launch!(self, Kernel::CrossEntropy, launch::warp_rows(a.rows);
            out, targets, grad, stats, &rows, &cols, &logits, &sparse, &scale, &eps, &min_positive)?)
    }

    fn dropout(&self, x: &Buf, y: &mut Buf, mask: &mut Buf, rate: f32, seed: u64, len: usize) -> Result<()> {
        need(x, len, "dropout x")?;
        need(mask, len, "dropout mask")?;
        if len == 0 {
            return Ok(());
        }
        // The kernel works in place: on a copy of x.
        self.copy(x, y, len)?;
        let keep = 1.0 / (1.0 - rate);
        let n = index_u32(len, "dropout")?;
        Ok(launch!(self, Kernel::Dropout, launch::elementwise(len); y, mask, &rate, &keep, &seed, &n)?)
    }

    fn mul(&self, x: &Buf, m: &Buf, y: &mut Buf, len: usize) -> Result<()> {
        need(x, len, "mul x")?;
        need(m, len, "mul m")?;
        if len == 0 {
            return Ok(());
        }
        // The kernel works in place: on a copy of x.
        self.copy(x, y, len)?;
        let n = index_u32(len, "mul")?;
        Ok(launch!(self, Kernel::Mul, launch::elementwise(len); y, m, &n)?)
    }

    fn regularizer_grad(&self, w: &Buf, dw: &mut Buf, l1: f32, l2: f32, len: usize) -> Result<()> {
        need(w, len, "regularizer w")?;
        need(dw, len, "regularizer dw")?;
        if len == 0 {
            return Ok(());
        }
        let n = index_u32(len, "regularizer")?;
        Ok(launch!(self, Kernel::RegularizerGrad, launch::elementwise(len); w, dw, &l1, &l2, &n)?)
    }

    fn regularizer_penalty(&self, w: &Buf, l1: f32, l2: f32, len: usize, acc: &mut Buf) -> Result<()> {
        need(w, len, "penalty w")?;
        need(acc, 1, "penalty accumulator")?;
        let n = index_u32(len, "penalty")?;
        Ok(launch!(self, Kernel::RegularizerPenalty, launch::single_block(); w, &l1, &l2, &n, acc)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        rule: &UpdateRule,
        sp: StepParams,
        w: &mut Buf,
        g: &Buf,
        slots: &mut [Buf],
        len: usize,
        _cols: usize,
    ) -> Result<()> {
        need(w, len, "update w")?;
        need(g, len, "update g")?;
        if slots.len() < rule.slots() {
            return Err(CudaError::Invalid(format!(
                "{rule:?} needs {} state slots, got {}",
                rule.slots(),
                slots.len()
            ))
            .into());
        }
        for s in slots.iter().take(rule.slots()) {
            need(s, len, "optimizer slot")?;
        }
        if len == 0 {
            return Ok(());
        }
        let n = index_u32(len, "update")?;
        let cfg = launch::elementwise(len);
        let lr = sp.lr;
        match *rule {
            UpdateRule::Sgd { momentum: 0.0, .. } => {
                launch!(self, Kernel::Sgd, cfg; w, g, &lr, &n)?;
            }
            UpdateRule::Sgd { momentum, nesterov } => {
                let nesterov = i32::from(nesterov);
                launch!(self, Kernel::SgdMomentum, cfg; w, g, &mut slots[0], &lr, &momentum, &nesterov, &n)?;
            }
            UpdateRule::Adam { beta_1, beta_2, epsilon } => {
                // The bias-corrected rate, exactly as nn_core::optim::update_host computes it.
                // Past 2^31 steps β^t is 0 in f32 anyway: the exponent saturates, not wraps.
                let t = i32::try_from(sp.t).unwrap_or(i32::MAX);
                let lr_t = lr * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t));
                let (b1, b2) = (1.0 - beta_1, 1.0 - beta_2);
                let (m, v) = slots.split_at_mut(1);
                launch!(self, Kernel::Adam, cfg; w, g, &mut m[0], &mut v[0], &lr_t, &b1, &b2, &epsilon, &n)?;
            }
            UpdateRule::RmsProp { rho, momentum: 0.0, epsilon } => {
                launch!(self, Kernel::RmsProp, cfg; w, g, &mut slots[0], &lr, &rho, &epsilon, &n)?;
            }
            UpdateRule::RmsProp { rho, momentum, epsilon } => {
                let (v, m) = slots.split_at_mut(1);
                launch!(self, Kernel::RmsPropMomentum, cfg; w, g, &mut v[0], &mut m[0], &lr, &rho, &momentum, &epsilon, &n)?;
            }
        }
        Ok(())
    }

    fn im2col(&self, x: &Buf, win: &Window, cols: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.c * win.kh * win.kw * win.n * win.oh * win.ow;
        need(x, win.n * win.c * win.h * win.w, "im2col x")?;
        need(cols, total, "im2col cols")?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "im2col")?;
        Ok(launch!(self, Kernel::Im2col, launch::elementwise(total); x, cols, &p, &t)?)
    }

    fn col2im(&self, cols: &Buf, win: &Window, dx: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.n * win.c * win.h * win.w;
        let ncols = win.c * win.kh * win.kw * win.n * win.oh * win.ow;
        need(cols, ncols, "col2im cols")?;
        need(dx, total, "col2im dx")?;
        if total == 0 {
            return Ok(());
        }
        index_u32(ncols, "col2im columns")?;
        let t = index_u32(total, "col2im")?;
        Ok(launch!(self, Kernel::Col2im, launch::elementwise(total); cols, dx, &p, &t)?)
    }

    fn swap_axes01(&self, src: &Buf, a: usize, b: usize, r: usize, dst: &mut Buf) -> Result<()> {
        let total = a * b * r;
        need(src, total, "swap_axes01 src")?;
        need(dst, total, "swap_axes01 dst")?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "swap_axes01")?;
        let (a, b, r) = (index_u32(a, "a")?, index_u32(b, "b")?, index_u32(r, "r")?);
        Ok(launch!(self, Kernel::SwapAxes01, launch::elementwise(total); src, dst, &a, &b, &r, &t)?)
    }

    fn max_pool(&self, x: &Buf, win: &Window, y: &mut Buf, arg: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.n * win.c * win.oh * win.ow;
        need(x, win.n * win.c * win.h * win.w, "max_pool x")?;
        need(y, total, "max_pool y")?;
        need(arg, total, "max_pool arg")?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "max_pool")?;
        Ok(launch!(self, Kernel::MaxPool, launch::elementwise(total); x, y, arg, &p, &t)?)
    }

    fn max_pool_backward(&self, dy: &Buf, arg: &Buf, win: &Window, dx: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.n * win.c * win.oh * win.ow;
        let inputs = win.n * win.c * win.h * win.w;
        need(dy, total, "max_pool_backward dy")?;
        need(arg, total, "max_pool_backward arg")?;
        need(dx, inputs, "max_pool_backward dx")?;
        index_u32(inputs, "max_pool_backward")?;
        self.fill_len(dx, 0.0, inputs)?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "max_pool_backward")?;
        Ok(launch!(self, Kernel::MaxPoolBackward, launch::elementwise(total); dy, arg, dx, &p, &t)?)
    }

    fn avg_pool(&self, x: &Buf, win: &Window, y: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.n * win.c * win.oh * win.ow;
        need(x, win.n * win.c * win.h * win.w, "avg_pool x")?;
        need(y, total, "avg_pool y")?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "avg_pool")?;
        Ok(launch!(self, Kernel::AvgPool, launch::elementwise(total); x, y, &p, &t)?)
    }

    fn avg_pool_backward(&self, dy: &Buf, win: &Window, dx: &mut Buf) -> Result<()> {
        let p = WinArgs::new(win)?;
        let total = win.n * win.c * win.h * win.w;
        need(dy, win.n * win.c * win.oh * win.ow, "avg_pool_backward dy")?;
        need(dx, total, "avg_pool_backward dx")?;
        if total == 0 {
            return Ok(());
        }
        let t = index_u32(total, "avg_pool_backward")?;
        Ok(launch!(self, Kernel::AvgPoolBackward, launch::elementwise(total); dy, dx, &p, &t)?)
    }

    fn batch_norm_train(
        &self,
        a: &BatchNormArgs,
        x: &Buf,
        gamma: &Buf,
        beta: &Buf,
        moving_mean: &mut Buf,
        moving_var: &mut Buf,
        saved: &mut Buf,
        y: &mut Buf,
    ) -> Result<()> {
        let s = a.shape;
        need(x, s.len(), "batch_norm x")?;
        need(y, s.len(), "batch_norm y")?;
        for (b, what) in
            [(gamma, "gamma"), (beta, "beta"), (&*moving_mean, "moving_mean"), (&*moving_var, "moving_var")]
        {
            need(b, s.channels, what)?;
        }
        need(saved, 2 * s.channels, "batch_norm saved")?;
        if s.channels == 0 {
            return Ok(());
        }
        index_u32(s.len(), "batch_norm")?;
        let (outer, channels, inner) =
            (index_u32(s.outer, "outer")?, index_u32(s.channels, "channels")?, index_u32(s.inner, "inner")?);
        let (momentum, eps, n, count) =
            (a.momentum, a.epsilon, index_u32(s.len(), "batch_norm")?, (s.outer * s.inner) as f64);
        let (first, parts) = launch::channel_parts(s.channels, s.outer * s.inner)?;
        // Two doubles (four floats) per channel and part.
        let mut part = self.partials(4 * s.channels * parts as usize)?;
        launch!(self, Kernel::BatchNormStatsPart, first; x, &mut *part, &outer, &channels, &inner, &parts)?;
        launch!(self, Kernel::BatchNormStatsFinish, launch::elementwise(s.channels);
            &*part, &mut *moving_mean, &mut *moving_var, &mut *saved, &channels, &parts, &count, &momentum, &eps)?;
        Ok(
            launch!(self, Kernel::BatchNormApply, launch::elementwise(s.len()); x, gamma, beta, &*saved, y, &n, &channels, &inner)?,
        )
    }

    fn batch_norm_infer(
        &self,
        a: &BatchNormArgs,
        x: &Buf,
        gamma: &Buf,
        beta: &Buf,
        moving_mean: &Buf,
        moving_var: &Buf,
        y: &mut Buf,
    ) -> Result<()> {
        let s = a.shape;
        let len = s.len();
        need(x, len, "batch_norm x")?;
        need(y, len, "batch_norm y")?;
        for (b, what) in [(gamma, "gamma"), (beta, "beta"), (moving_mean, "moving_mean"), (moving_var, "moving_var")] {
            need(b, s.channels, what)?;
        }
        if len == 0 {
            return Ok(());
        }
        let n = index_u32(len, "batch_norm")?;
        let (channels, inner, eps) = (index_u32(s.channels, "channels")?, index_u32(s.inner, "inner")?, a.epsilon);
        Ok(launch!(self, Kernel::BatchNormInfer, launch::elementwise(len);
            x, gamma, beta, moving_mean, moving_var, y, &n, &channels, &inner, &eps)?)
    }

    fn batch_norm_backward(
        &self,
        a: &BatchNormArgs,
        x: &Buf,
        dy: &Buf,
        gamma: &Buf,
        saved: &Buf,
        dx: &mut Buf,
        dgamma: &mut Buf,
        dbeta: &mut Buf,
    ) -> Result<()> {
        let s = a.shape;
        for (b, what) in [(x, "batch_norm x"), (dy, "batch_norm dy"), (&*dx, "batch_norm dx")] {
            need(b, s.len(), what)?;
        }
        for (b, what) in [(gamma, "gamma"), (&*dgamma, "dgamma"), (&*dbeta, "dbeta")] {
            need(b, s.channels, what)?;
        }
        need(saved, 2 * s.channels, "batch_norm saved")?;
        if s.channels == 0 {
            return Ok(());
        }
        index_u32(s.len(), "batch_norm")?;
        let (outer, channels, inner) =
            (index_u32(s.outer, "outer")?, index_u32(s.channels, "channels")?, index_u32(s.inner, "inner")?);
        let (n, count) = (index_u32(s.len(), "batch_norm")?, (s.outer * s.inner) as f32);
        let (first, parts) = launch::channel_parts(s.channels, s.outer * s.inner)?;
        let mut part = self.partials(4 * s.channels * parts as usize)?;
        launch!(self, Kernel::BatchNormGradPart, first; x, dy, saved, &mut *part, &outer, &channels, &inner, &parts)?;
        launch!(self, Kernel::BatchNormGradFinish, launch::elementwise(s.channels); &*part, &mut *dgamma, &mut *dbeta, &channels, &parts)?;
        Ok(launch!(self, Kernel::BatchNormGradApply, launch::elementwise(s.len());
            x, dy, gamma, saved, &*dgamma, &*dbeta, dx, &n, &channels, &inner, &count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: where `libnvrtc` opens (a CUDA toolkit, or the `nvidia-cuda-nvrtc`
    /// wheel's folder in `LD_LIBRARY_PATH`), every source compiles and defines every kernel the
    /// device looks up.
    #[test]
    fn every_kernel_source_compiles_with_nvrtc_where_it_is_present() {
        if !libraries().nvrtc {
            eprintln!("skipping: libnvrtc.so not found");
            return;
        }
        let ptx = match compiled() {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        for (source, p) in ptx {
            let text = p.to_src();
            for k in source.kernels() {
                assert!(text.contains(&format!(".entry {}(", k.name())), "{} lacks {}", source.file_name(), k.name());
            }
        }
    }
}
