//! The CUDA C sources of the kernels (embedded, compiled by NVRTC once per process) and the
//! names the device looks up in them. Plain data: available with or without the `cuda` feature.

use nn_core::Activation;

/// Device helpers shared by every source (`src/kernels/common.cuh`), compiled ahead of each.
pub const PRELUDE: &str = include_str!("kernels/common.cuh");

/// One `.cu` file of `src/kernels/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Fill, row gathering, bias + activation, activation gradients, channel sums, dropout, mul, regularisers.
    Elementwise,
    /// Fused softmax + cross-entropy.
    Xent,
    /// Optimiser updates.
    Optim,
    /// im2col, col2im, axis swap, pooling.
    Conv,
    /// Batch normalisation.
    Norm,
}

impl Source {
    /// Every source file.
    pub const ALL: [Source; 5] = [Source::Elementwise, Source::Xent, Source::Optim, Source::Conv, Source::Norm];

    /// The file name under `src/kernels/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Source::Elementwise => "elementwise.cu",
            Source::Xent => "xent.cu",
            Source::Optim => "optim.cu",
            Source::Conv => "conv.cu",
            Source::Norm => "norm.cu",
        }
    }

    /// The CUDA C source.
    pub fn code(self) -> &'static str {
        match self {
            Source::Elementwise => include_str!("kernels/elementwise.cu"),
            Source::Xent => include_str!("kernels/xent.cu"),
            Source::Optim => include_str!("kernels/optim.cu"),
            Source::Conv => include_str!("kernels/conv.cu"),
            Source::Norm => include_str!("kernels/norm.cu"),
        }
    }

    /// What NVRTC compiles: [`PRELUDE`] and the file.
    pub fn program(self) -> String {
        format!("{PRELUDE}\n{}", self.code())
    }

    /// The kernels the device loads from this file.
    pub fn kernels(self) -> impl Iterator<Item = Kernel> {
        Kernel::ALL.into_iter().filter(move |k| k.source() == self)
    }
}

macro_rules! kernels {
    ($($variant:ident => $name:literal in $source:ident),* $(,)?) => {
        /// A kernel the device launches, by its `extern "C"` name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $(
                #[doc = concat!("`", $name, "` in `", stringify!($source), "`.")]
                $variant,
            )*
        }

        impl Kernel {
            /// Every kernel, in declaration order (the order of [`Kernel::index`]).
            pub const ALL: [Kernel; [$(Kernel::$variant),*].len()] = [$(Kernel::$variant),*];

            /// The `extern "C" __global__` function name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $name,)*
                }
            }

            /// The file that defines it.
            pub fn source(self) -> Source {
                match self {
                    $(Kernel::$variant => Source::$source,)*
                }
            }
        }
    };
}

kernels! {
    Fill => "fill_f32" in Elementwise,
    GatherRows => "gather_rows" in Elementwise,
    BiasAct => "bias_act" in Elementwise,
    SoftmaxRows => "softmax_rows" in Elementwise,
    ActBackward => "act_backward" in Elementwise,
    SoftmaxBackward => "softmax_backward" in Elementwise,
    ChannelSumsCols => "channel_sums_cols" in Elementwise,
    ChannelSumsPart => "channel_sums_part" in Elementwise,
    ChannelSumsFinish => "channel_sums_finish" in Elementwise,
    Dropout => "dropout_mask" in Elementwise,
    Mul => "mul_inplace" in Elementwise,
    RegularizerGrad => "regularizer_grad" in Elementwise,
    RegularizerPenalty => "regularizer_penalty" in Elementwise,
    CrossEntropy => "cross_entropy" in Xent,
    Sgd => "sgd" in Optim,
    SgdMomentum => "sgd_momentum" in Optim,
    Adam => "adam" in Optim,
    RmsProp => "rmsprop" in Optim,
    RmsPropMomentum => "rmsprop_momentum" in Optim,
    Im2col => "im2col" in Conv,
    Col2im => "col2im" in Conv,
    SwapAxes01 => "swap_axes01" in Conv,
    MaxPool => "max_pool_fwd" in Conv,
    MaxPoolBackward => "max_pool_bwd" in Conv,
    AvgPool => "avg_pool_fwd" in Conv,
    AvgPoolBackward => "avg_pool_bwd" in Conv,
    BatchNormStatsPart => "bn_stats_part" in Norm,
    BatchNormStatsFinish => "bn_stats_finish" in Norm,
    BatchNormApply => "bn_apply" in Norm,
    BatchNormInfer => "batch_norm_infer" in Norm,
    BatchNormGradPart => "bn_grad_part" in Norm,
    BatchNormGradFinish => "bn_grad_finish" in Norm,
    BatchNormGradApply => "bn_grad_apply" in Norm,
}

impl Kernel {
    /// Position in [`Kernel::ALL`] (where the device keeps the loaded function).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The names of the `extern "C" __global__ void NAME(` functions a source defines.
pub fn defined_kernels(src: &str) -> Vec<&str> {
    const MARK: &str = "extern \"C\" __global__ void ";
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find(MARK) {
        rest = &rest[at + MARK.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if rest[end..].trim_start().starts_with('(') && end > 0 {
            out.push(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out
}

/// The activation code the kernels switch on (`ACT_*` in `elementwise.cu`).
pub fn activation_code(act: Activation) -> i32 {
    match act {
        Activation::Linear => 0,
        Activation::Relu => 1,
        Activation::Sigmoid => 2,
        Activation::Tanh => 3,
        Activation::Softmax => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_non_empty_and_defines_its_kernels() {
        for s in Source::ALL {
            let code = s.code();
            assert!(!code.trim().is_empty(), "{} is empty", s.file_name());
            let defined = defined_kernels(code);
            assert!(!defined.is_empty(), "{} defines no kernel", s.file_name());
            for k in s.kernels() {
                assert!(defined.contains(&k.name()), "{} does not define {}", s.file_name(), k.name());
            }
            // And nothing is defined that the device never loads.
            for d in &defined {
                assert!(s.kernels().any(|k| k.name() == *d), "{} defines unused kernel {d}", s.file_name());
            }
        }
    }

    #[test]
    fn kernel_table_is_consistent() {
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let mut names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kernel::ALL.len(), "duplicate kernel names");
        for s in Source::ALL {
            assert!(s.kernels().count() > 0, "{} has no kernel", s.file_name());
        }
    }

    #[test]
    fn parses_kernel_names() {
        let src = "extern \"C\" __global__ void a_1(float* x) {}\nextern \"C\" __global__ void b (int n)\n\
                   __device__ void c(float* y) {}\nextern \"C\" __global__ void d";
        assert_eq!(defined_kernels(src), vec!["a_1", "b"]);
    }

    #[test]
    fn activation_codes_match_the_sources() {
        let code = Source::Elementwise.code();
        for (act, name) in [
            (Activation::Linear, "ACT_LINEAR"),
            (Activation::Relu, "ACT_RELU"),
            (Activation::Sigmoid, "ACT_SIGMOID"),
            (Activation::Tanh, "ACT_TANH"),
            (Activation::Softmax, "ACT_SOFTMAX"),
        ] {
            let def = format!("#define {name} {}", activation_code(act));
            assert!(code.contains(&def), "elementwise.cu lacks `{def}`");
        }
    }

    #[test]
    fn launch_constants_match_the_sources() {
        let def = format!("#define CS_ROWS {}", crate::launch::CS_ROWS);
        assert!(Source::Elementwise.code().contains(&def), "elementwise.cu lacks `{def}`");
    }
}
