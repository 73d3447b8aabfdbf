//! The architecture as plain data: what `summary()` prints, what the model file stores as JSON,
//! and what every device builds its network from.

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::error::{NnError, Result};
use crate::init::Initializer;

fn yes() -> bool {
    true
}
fn zeros() -> Initializer {
    Initializer::Zeros
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn is_true(b: &bool) -> bool {
    *b
}

/// L1/L2 penalty on a kernel: adds `l1·Σ|w| + l2·Σw²` to the loss (Keras's `L1L2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regularizer {
    /// L1 factor.
    #[serde(default)]
    pub l1: f32,
    /// L2 factor.
    #[serde(default)]
    pub l2: f32,
}

/// `Flatten()`: `[c, h, w]` (or any shape) to `[c·h·w]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Flatten {
    /// `Flatten()`.
    pub fn new() -> Flatten {
        Flatten {}
    }
}

/// `Dense(units)`: `y = act(x·W + b)` on `[batch, in]`, `W: [in, units]`, `b: [units]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    /// Output width.
    pub units: usize,
    /// Activation (default linear).
    #[serde(default)]
    pub activation: Activation,
    /// Whether there is a bias (default true).
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// Kernel initialiser (default glorot_uniform).
    #[serde(default)]
    pub kernel_initializer: Initializer,
    /// Bias initialiser (default zeros).
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    /// Optional L1/L2 kernel penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_regularizer: Option<Regularizer>,
    /// Whether training updates the weights (Keras's `layer.trainable`; default true). A
    /// frozen layer's weights count as non-trainable in the summary and get no gradient.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub trainable: bool,
}

impl Dense {
    /// `Dense(units)` with Keras's defaults: linear, bias, glorot_uniform kernel, zero bias.
    pub fn new(units: usize) -> Dense {
        Dense {
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            trainable: true,
        }
    }
    /// Sets the activation.
    pub fn activation(mut self, a: Activation) -> Dense {
        self.activation = a;
        self
    }
    /// Turns the bias on or off.
    pub fn use_bias(mut self, b: bool) -> Dense {
        self.use_bias = b;
        self
    }
    /// Sets the kernel initialiser.
    pub fn kernel_initializer(mut self, i: Initializer) -> Dense {
        self.kernel_initializer = i;
        self
    }
    /// Sets the bias initialiser.
    pub fn bias_initializer(mut self, i: Initializer) -> Dense {
        self.bias_initializer = i;
        self
    }
    /// Adds an L2 kernel penalty `l2·Σw²`.
    pub fn l2(mut self, l2: f32) -> Dense {
        self.kernel_regularizer = Some(Regularizer { l2, ..self.kernel_regularizer.unwrap_or_default() });
        self
    }
    /// Adds an L1 kernel penalty `l1·Σ|w|`.
    pub fn l1(mut self, l1: f32) -> Dense {
        self.kernel_regularizer = Some(Regularizer { l1, ..self.kernel_regularizer.unwrap_or_default() });
        self
    }
    /// Freezes the layer (`false`: training leaves its weights as they are) or not.
    pub fn trainable(mut self, t: bool) -> Dense {
        self.trainable = t;
        self
    }
}

/// `Dropout(rate)`: zeroes a fraction `rate` of its inputs in training (scaling the rest by
/// `1/(1-rate)`); the identity otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Fraction dropped, in `[0, 1)`.
    pub rate: f32,
}

impl Dropout {
    /// `Dropout(rate)`.
    pub fn new(rate: f32) -> Dropout {
        Dropout { rate }
    }
}

/// Padding of a convolution or pooling window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: the output shrinks (Keras default).
    #[default]
    Valid,
    /// Zero padding so that `out = ceil(in / stride)`.
    Same,
}

/// `Conv2D(filters, kernel_size)` on channels-first `[batch, c, h, w]`; kernel
/// `[filters, c, kh, kw]` (PyTorch's layout), bias `[filters]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2D {
    /// Output channels.
    pub filters: usize,
    /// `(kh, kw)` (in a file also one number for both, as Keras takes).
    #[serde(deserialize_with = "pair")]
    pub kernel_size: [usize; 2],
    /// `(sh, sw)` (default 1, 1; also one number).
    #[serde(default = "ones2", deserialize_with = "pair")]
    pub strides: [usize; 2],
    /// Padding (default valid).
    #[serde(default)]
    pub padding: Padding,
    /// Activation (default linear).
    #[serde(default)]
    pub activation: Activation,
    /// Whether there is a bias.
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// Kernel initialiser (default glorot_uniform).
    #[serde(default)]
    pub kernel_initializer: Initializer,
    /// Optional L1/L2 kernel penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_regularizer: Option<Regularizer>,
    /// Whether training updates the weights (Keras's `layer.trainable`; default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub trainable: bool,
}

fn ones2() -> [usize; 2] {
    [1, 1]
}

fn twos2() -> [usize; 2] {
    [2, 2]
}

impl Conv2D {
    /// `Conv2D(filters, (k, k))` with Keras's defaults.
    pub fn new(filters: usize, kernel: usize) -> Conv2D {
        Conv2D {
            filters,
            kernel_size: [kernel, kernel],
            strides: [1, 1],
            padding: Padding::Valid,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            kernel_regularizer: None,
            trainable: true,
        }
    }
    /// Sets the activation.
    pub fn activation(mut self, a: Activation) -> Conv2D {
        self.activation = a;
        self
    }
    /// Sets the strides.
    pub fn strides(mut self, s: usize) -> Conv2D {
        self.strides = [s, s];
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding) -> Conv2D {
        self.padding = p;
        self
    }
    /// Turns the bias on or off.
    pub fn use_bias(mut self, b: bool) -> Conv2D {
        self.use_bias = b;
        self
    }
    /// Sets the kernel initialiser.
    pub fn kernel_initializer(mut self, i: Initializer) -> Conv2D {
        self.kernel_initializer = i;
        self
    }
    /// Adds an L2 kernel penalty `l2·Σw²`.
    pub fn l2(mut self, l2: f32) -> Conv2D {
        self.kernel_regularizer = Some(Regularizer { l2, ..self.kernel_regularizer.unwrap_or_default() });
        self
    }
    /// Adds an L1 kernel penalty `l1·Σ|w|`.
    pub fn l1(mut self, l1: f32) -> Conv2D {
        self.kernel_regularizer = Some(Regularizer { l1, ..self.kernel_regularizer.unwrap_or_default() });
        self
    }
    /// Freezes the layer (`false`: training leaves its weights as they are) or not.
    pub fn trainable(mut self, t: bool) -> Conv2D {
        self.trainable = t;
        self
    }
}

/// `MaxPooling2D` / `AveragePooling2D` window on `[batch, c, h, w]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2D {
    /// `(ph, pw)` (default 2×2, as Keras's; in a file also one number for both).
    #[serde(default = "twos2", deserialize_with = "pair")]
    pub pool_size: [usize; 2],
    /// Strides (default: the pool size; also one number).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_pair")]
    pub strides: Option<[usize; 2]>,
    /// Padding (default valid).
    #[serde(default, skip_serializing_if = "is_default")]
    pub padding: Padding,
}

impl Pool2D {
    /// A `size × size` window with stride `size`.
    pub fn new(size: usize) -> Pool2D {
        Pool2D { pool_size: [size, size], strides: None, padding: Padding::Valid }
    }
    /// The layer `MaxPooling2D(size)`: `.add(Pool2D::max(2))`.
    pub fn max(size: usize) -> LayerSpec {
        LayerSpec::MaxPooling2D(Pool2D::new(size))
    }
    /// The layer `AveragePooling2D(size)`: `.add(Pool2D::average(2))`.
    pub fn average(size: usize) -> LayerSpec {
        LayerSpec::AveragePooling2D(Pool2D::new(size))
    }
    /// Sets the strides.
    pub fn strides(mut self, s: usize) -> Pool2D {
        self.strides = Some([s, s]);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding) -> Pool2D {
        self.padding = p;
        self
    }
    /// This window as a `MaxPooling2D` layer: `.add(Pool2D::new(3).strides(2).max_pooling())`.
    pub fn max_pooling(self) -> LayerSpec {
        LayerSpec::MaxPooling2D(self)
    }
    /// This window as an `AveragePooling2D` layer.
    pub fn average_pooling(self) -> LayerSpec {
        LayerSpec::AveragePooling2D(self)
    }
}

/// `BatchNormalization()` over the channel axis: axis 1 of `[batch, c, ...]` (the features of
/// `[batch, f]`, the channels of images `[batch, c, h, w]`), channels first as everywhere here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Moving-average momentum (Keras 0.99).
    #[serde(default = "bn_momentum")]
    pub momentum: f32,
    /// ε (Keras 1e-3).
    #[serde(default = "bn_epsilon")]
    pub epsilon: f32,
    /// Whether training updates the layer (Keras's `layer.trainable`; default true). A frozen
    /// batch norm runs in inference mode in training too, as Keras's does: it normalises with
    /// its moving statistics, which stay as they are, and `gamma`, `beta` get no gradient.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub trainable: bool,
}

fn bn_momentum() -> f32 {
    0.99
}
fn bn_epsilon() -> f32 {
    1e-3
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm::new()
    }
}

impl BatchNorm {
    /// `BatchNormalization()` with Keras's defaults (momentum 0.99, epsilon 1e-3).
    pub fn new() -> BatchNorm {
        BatchNorm { momentum: bn_momentum(), epsilon: bn_epsilon(), trainable: true }
    }

    /// Frozen (`false`) or not (Keras's `layer.trainable`; see [`BatchNorm::trainable`]).
    #[must_use]
    pub fn trainable(mut self, t: bool) -> BatchNorm {
        self.trainable = t;
        self
    }
}

impl LayerSpec {
    /// `GlobalAveragePooling2D()`: `.add(LayerSpec::global_average_pooling_2d())`.
    pub fn global_average_pooling_2d() -> LayerSpec {
        LayerSpec::GlobalAveragePooling2D {}
    }
}

/// `Reshape(target_shape)`: same data, new per-example shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// The new per-example shape; its product must equal the input's.
    pub target_shape: Vec<usize>,
}

impl Reshape {
    /// `Reshape(target_shape)`, e.g. `Reshape::new(&[1, 28, 28])` (channels first).
    pub fn new(target_shape: &[usize]) -> Reshape {
        Reshape { target_shape: target_shape.to_vec() }
    }
}

/// One layer of a [`ModelSpec`], tagged by its Keras class name in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum LayerSpec {
    /// See [`Flatten`].
    Flatten(Flatten),
    /// See [`Dense`].
    Dense(Dense),
    /// See [`Dropout`].
    Dropout(Dropout),
    /// See [`Conv2D`].
    Conv2D(Conv2D),
    /// Max pooling, see [`Pool2D`].
    MaxPooling2D(Pool2D),
    /// Average pooling, see [`Pool2D`].
    AveragePooling2D(Pool2D),
    /// Mean over each channel's plane: `[c, h, w]` to `[c]`.
    GlobalAveragePooling2D {},
    /// See [`BatchNorm`].
    BatchNormalization(BatchNorm),
    /// See [`Reshape`].
    Reshape(Reshape),
}

macro_rules! into_spec {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for LayerSpec {
            fn from(l: $t) -> LayerSpec {
                LayerSpec::$v(l)
            }
        }
    )*};
}
into_spec!(Flatten => Flatten, Dense => Dense, Dropout => Dropout, Conv2D => Conv2D, BatchNorm => BatchNormalization, Reshape => Reshape);

/// A hint for an image input that looks channels-last (`[28, 28, 1]`, Keras's layout), where
/// convolutions and pools read channels first (`[1, 28, 28]`, PyTorch's); empty otherwise.
fn channels_last_hint(input: &[usize]) -> String {
    match *input {
        [h, w, c] if c < h && c < w && c <= 4 => {
            format!(" (the input {input:?} looks channels-last: images here are [channels, height, width], so [{c}, {h}, {w}])")
        }
        _ => String::new(),
    }
}

/// Output size of a window along one axis.
pub fn window_out(input: usize, k: usize, s: usize, pad: Padding) -> (usize, usize) {
    match pad {
        Padding::Valid => ((input.saturating_sub(k)) / s + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(s);
            // Saturating: a model file may give any sizes (a window of 2⁶⁴ - 1 overflowed here).
            let total = out.saturating_sub(1).saturating_mul(s).saturating_add(k).saturating_sub(input);
            (out, total / 2)
        }
    }
}

impl LayerSpec {
    /// Keras's class name (`Dense`, `Conv2D`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Flatten(_) => "Flatten",
            LayerSpec::Dense(_) => "Dense",
            LayerSpec::Dropout(_) => "Dropout",
            LayerSpec::Conv2D(_) => "Conv2D",
            LayerSpec::MaxPooling2D(_) => "MaxPooling2D",
            LayerSpec::AveragePooling2D(_) => "AveragePooling2D",
            LayerSpec::GlobalAveragePooling2D {} => "GlobalAveragePooling2D",
            LayerSpec::BatchNormalization(_) => "BatchNormalization",
            LayerSpec::Reshape(_) => "Reshape",
        }
    }

    /// Whether training updates the layer's weights: `Some` for the layers that can be frozen
    /// (`Dense`, `Conv2D`, `BatchNormalization`), `None` for the others.
    pub fn trainable(&self) -> Option<bool> {
        match self {
            LayerSpec::Dense(d) => Some(d.trainable),
            LayerSpec::Conv2D(c) => Some(c.trainable),
            LayerSpec::BatchNormalization(b) => Some(b.trainable),
            _ => None,
        }
    }

    /// The layer's `trainable` flag, for the layers that have one (see [`LayerSpec::trainable`]).
    pub fn trainable_mut(&mut self) -> Option<&mut bool> {
        match self {
            LayerSpec::Dense(d) => Some(&mut d.trainable),
            LayerSpec::Conv2D(c) => Some(&mut c.trainable),
            LayerSpec::BatchNormalization(b) => Some(&mut b.trainable),
            _ => None,
        }
    }

    /// The base of the automatic name (`dense`, `conv2d`, ...).
    pub fn base_name(&self) -> &'static str {
        match self {
            LayerSpec::Flatten(_) => "flatten",
            LayerSpec::Dense(_) => "dense",
            LayerSpec::Dropout(_) => "dropout",
            LayerSpec::Conv2D(_) => "conv2d",
            LayerSpec::MaxPooling2D(_) => "max_pooling2d",
            LayerSpec::AveragePooling2D(_) => "average_pooling2d",
            LayerSpec::GlobalAveragePooling2D {} => "global_average_pooling2d",
            LayerSpec::BatchNormalization(_) => "batch_normalization",
            LayerSpec::Reshape(_) => "reshape",
        }
    }

    /// The per-example output shape for a per-example input shape.
    ///
    /// # Errors
    /// [`NnError::Spec`] naming `name` for bad options or an input the layer cannot take (a
    /// Dense on an image, a window larger than its input); [`NnError::Shape`] for a Reshape whose
    /// target does not hold the input's size.
    pub fn output_shape(&self, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        let total: usize = input.iter().product();
        let image = || {
            three(input).ok_or_else(|| {
                NnError::spec(format!(
                    "{name} ({}): expects images [channels, height, width], found {input:?}; \
                     add a Reshape before it (e.g. to [1, 28, 28])",
                    self.type_name()
                ))
            })
        };
        match self {
            LayerSpec::Flatten(_) => Ok(vec![total]),
            LayerSpec::Dense(d) => {
                if d.units == 0 {
                    return Err(NnError::spec(format!("{name} (Dense): units must be at least 1")));
                }
                if input.len() != 1 {
                    return Err(NnError::spec(format!(
                        "{name} (Dense): expects a flat input [features], found {input:?}; add a Flatten layer before it"
                    )));
                }
                penalties_fit(&format!("{name} (Dense)"), d.kernel_regularizer)?;
                Ok(vec![d.units])
            }
            LayerSpec::Dropout(d) => {
                if !(0.0..1.0).contains(&d.rate) {
                    return Err(NnError::spec(format!("{name} (Dropout): rate must be in [0, 1), got {}", d.rate)));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Conv2D(c) => {
                let [c_in, h, w] = image()?;
                let [kh, kw] = c.kernel_size;
                let [sh, sw] = c.strides;
                if c.filters == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 || c_in == 0 {
                    return Err(NnError::spec(format!(
                        "{name} (Conv2D): filters, kernel size and strides must be at least 1"
                    )));
                }
                if c.padding == Padding::Valid && (kh > h || kw > w) {
                    return Err(NnError::spec(format!(
                        "{name} (Conv2D): kernel {kh}×{kw} is larger than its {h}×{w} input{}",
                        channels_last_hint(input)
                    )));
                }
                same_window_fits(&format!("{name} (Conv2D): kernel"), c.padding, [kh, kw], [h, w])?;
                penalties_fit(&format!("{name} (Conv2D)"), c.kernel_regularizer)?;
                if c.activation == Activation::Softmax {
                    return Err(NnError::spec(format!(
                        "{name} (Conv2D): a softmax over a convolution's filters is not supported; \
                         give the softmax to a Dense layer after a Flatten"
                    )));
                }
                Ok(vec![c.filters, window_out(h, kh, sh, c.padding).0, window_out(w, kw, sw, c.padding).0])
            }
            LayerSpec::MaxPooling2D(p) | LayerSpec::AveragePooling2D(p) => {
                let [c_in, h, w] = image()?;
                let [kh, kw] = p.pool_size;
                let [sh, sw] = p.strides.unwrap_or(p.pool_size);
                if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
                    return Err(NnError::spec(format!("{name}: pool size and strides must be at least 1")));
                }
                if p.padding == Padding::Valid && (kh > h || kw > w) {
                    return Err(NnError::spec(format!(
                        "{name}: pool {kh}×{kw} is larger than its {h}×{w} input{}",
                        channels_last_hint(input)
                    )));
                }
                same_window_fits(&format!("{name}: pool"), p.padding, [kh, kw], [h, w])?;
                Ok(vec![c_in, window_out(h, kh, sh, p.padding).0, window_out(w, kw, sw, p.padding).0])
            }
            LayerSpec::GlobalAveragePooling2D {} => {
                let [c_in, _, _] = image()?;
                Ok(vec![c_in])
            }
            LayerSpec::BatchNormalization(b) => {
                if !((0.0..1.0).contains(&b.momentum) && b.epsilon > 0.0 && b.epsilon.is_finite()) {
                    return Err(NnError::spec(format!(
                        "{name} (BatchNormalization): momentum must be in [0, 1) and epsilon a positive number, \
                         got {} and {}",
                        b.momentum, b.epsilon
                    )));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Reshape(r) => {
                let holds = r.target_shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
                if holds != Some(total) || r.target_shape.is_empty() {
                    return Err(NnError::Shape {
                        layer: format!(
                            "{name} (Reshape): target {:?} must hold as many values as its input",
                            r.target_shape
                        ),
                        expected: r.target_shape.clone(),
                        found: input.to_vec(),
                    });
                }
                Ok(r.target_shape.clone())
            }
        }
    }

    /// Names and shapes of the layer's parameters for a per-example input shape, with whether
    /// training updates them: `kernel` and `bias` (`false` in a frozen layer), or batch norm's
    /// `gamma`, `beta` (trained unless frozen), `moving_mean`, `moving_variance` (never by a
    /// gradient).
    pub fn param_shapes(&self, input: &[usize]) -> Vec<(&'static str, Vec<usize>, bool)> {
        match self {
            LayerSpec::Dense(d) => {
                let mut v = vec![("kernel", vec![input.iter().product(), d.units], d.trainable)];
                if d.use_bias {
                    v.push(("bias", vec![d.units], d.trainable));
                }
                v
            }
            LayerSpec::Conv2D(c) => {
                let mut v =
                    vec![("kernel", vec![c.filters, input[0], c.kernel_size[0], c.kernel_size[1]], c.trainable)];
                if c.use_bias {
                    v.push(("bias", vec![c.filters], c.trainable));
                }
                v
            }
            LayerSpec::BatchNormalization(b) => {
                let ch = input[0];
                vec![
                    ("gamma", vec![ch], b.trainable),
                    ("beta", vec![ch], b.trainable),
                    ("moving_mean", vec![ch], false),
                    ("moving_variance", vec![ch], false),
                ]
            }
            _ => vec![],
        }
    }
}

/// The most values one example's tensor (an input or a layer's output) or one parameter tensor
/// may hold: 2³² floats, 16 GiB. Larger shapes are certainly mistakes, and their sizes would
/// overflow the products that follow.
pub const MAX_ELEMENTS: usize = 1 << 32;

/// The most parameters a model may have: 2²⁸ (268 million), 1 GiB of weights, 4 GiB when
/// training with their gradients and Adam's two moments. MNIST's largest models have a few
/// million; a larger one is a mistake that would otherwise end in the system killing the
/// process for memory, past any error an allocation could report.
pub const MAX_PARAMS: usize = 1 << 28;

/// The most layers a model may have: 1,000. The deepest MNIST models have tens; a file with
/// thousands is damaged or hostile, and would take minutes to run (each layer's pass, even a
/// Dropout's, is work on every batch).
pub const MAX_LAYERS: usize = 1000;

/// The number of values of `shape`, `None` past [`MAX_ELEMENTS`].
fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS)
}

/// Refuses a "same" window that would read mostly padding: larger than twice its input plus
/// one (and than 7), where its outputs see the whole input anyway and its cost grows with a
/// window the input does not fill (a kernel of 1,000 on 28×28 pixels: a million products an
/// output). `what` names the layer and the window.
fn same_window_fits(what: &str, padding: Padding, [kh, kw]: [usize; 2], [h, w]: [usize; 2]) -> Result<()> {
    let most = |n: usize| n.saturating_mul(2).saturating_add(1).max(7);
    if padding == Padding::Same && (kh > most(h) || kw > most(w)) {
        return Err(NnError::spec(format!(
            "{what} {kh}×{kw} with \"same\" padding on a {h}×{w} input would read mostly padding: at most {}×{}",
            most(h),
            most(w)
        )));
    }
    Ok(())
}

/// Refuses a kernel penalty that is negative or not a number (a negative one rewards large
/// weights without bound: the loss runs to minus infinity).
fn penalties_fit(what: &str, r: Option<Regularizer>) -> Result<()> {
    match r {
        Some(Regularizer { l1, l2 }) if !(l1.is_finite() && l1 >= 0.0 && l2.is_finite() && l2 >= 0.0) => {
            Err(NnError::spec(format!("{what}: kernel_regularizer l1 {l1} and l2 {l2} must be numbers at least 0")))
        }
        _ => Ok(()),
    }
}

/// A window size or stride as Keras writes it: `[h, w]` or one number for both.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a number or a pair [height, width]")]
enum OneOrTwo {
    One(usize),
    Two([usize; 2]),
}

impl From<OneOrTwo> for [usize; 2] {
    fn from(v: OneOrTwo) -> [usize; 2] {
        match v {
            OneOrTwo::One(n) => [n, n],
            OneOrTwo::Two(p) => p,
        }
    }
}

fn pair<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<[usize; 2], D::Error> {
    OneOrTwo::deserialize(d).map(Into::into)
}

fn optional_pair<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<[usize; 2]>, D::Error> {
    Option::<OneOrTwo>::deserialize(d).map(|v| v.map(Into::into))
}

fn three(s: &[usize]) -> Option<[usize; 3]> {
    match s {
        [c, h, w] => Some([*c, *h, *w]),
        _ => None,
    }
}

/// A Sequential architecture: the per-example input shape and the layers in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Per-example input shape, e.g. `[28, 28]` or `[1, 28, 28]` (channels first).
    pub input_shape: Vec<usize>,
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
}

/// A layer of a checked architecture with its name and shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedLayer {
    /// Keras-style unique name (`dense`, `dense_1`, ...).
    pub name: String,
    /// The spec.
    pub spec: LayerSpec,
    /// Per-example input shape.
    pub input: Vec<usize>,
    /// Per-example output shape.
    pub output: Vec<usize>,
}

impl ModelSpec {
    /// An architecture taking examples of `input_shape` and no layers yet.
    pub fn new(input_shape: &[usize]) -> ModelSpec {
        ModelSpec { input_shape: input_shape.to_vec(), layers: Vec::new() }
    }
    /// Appends a layer (builder style): `ModelSpec::new(&[28, 28]).add(Flatten::new())`.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Into<LayerSpec>) -> ModelSpec {
        self.layers.push(layer.into());
        self
    }

    /// Names every layer Keras's way and checks that each one's input fits.
    ///
    /// # Errors
    /// [`NnError::Shape`] or [`NnError::Spec`] naming the first layer that does not fit;
    /// [`NnError::Spec`] for an input shape that is empty, holds a zero or too many values, is
    /// Keras's channels-last `[h, w, c]`, or has several channels first (images come in as one
    /// channel; several need a `Reshape` of the flat input, as the message says).
    pub fn resolve(&self) -> Result<Vec<ResolvedLayer>> {
        if self.layers.is_empty() {
            return Err(NnError::spec("the model has no layers"));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(NnError::spec(format!(
                "the model has {} layers, more than the {MAX_LAYERS} a model may have here",
                self.layers.len()
            )));
        }
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(NnError::spec(format!("input shape {:?} must be non-empty with no zero", self.input_shape)));
        }
        if elements(&self.input_shape).is_none() {
            return Err(NnError::spec(format!(
                "input shape {:?} holds more than {MAX_ELEMENTS} values",
                self.input_shape
            )));
        }
        if let [h, w, c] = self.input_shape[..] {
            // Keras writes images channels last, `[28, 28, 1]`; here channels come first.
            if c <= 4 && h > 4 && w > 4 {
                return Err(NnError::spec(format!(
                    "input shape {:?}: channels come first here (PyTorch's layout, not Keras's channels \
                     last): images of {h}×{w} pixels with {c} channel(s) are [{c}, {h}, {w}]",
                    self.input_shape
                )));
            }
        }
        if let [c, _, _] = self.input_shape[..] {
            if c > 1 {
                return Err(NnError::spec(format!(
                    "input shape {:?}: images of several channels are stored channels-major inside the network; \
                     give the input as [{}] and add Reshape {{ target_shape: {:?} }} as the first layer",
                    self.input_shape,
                    self.input_shape.iter().product::<usize>(),
                    self.input_shape
                )));
            }
        }
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let mut params = 0usize;
        let mut shape = self.input_shape.clone();
        let mut out = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let k = counts.entry(l.base_name()).or_insert(0);
            let name = if *k == 0 { l.base_name().to_string() } else { format!("{}_{}", l.base_name(), k) };
            *k += 1;
            let output = l.output_shape(&name, &shape)?;
            let too_large = |what: &str, shape: &[usize]| {
                NnError::spec(format!(
                    "{name} ({}): its {what} {shape:?} holds more than {MAX_ELEMENTS} values",
                    l.type_name()
                ))
            };
            if elements(&output).is_none() {
                return Err(too_large("output", &output));
            }
            for (_, p, _) in l.param_shapes(&shape) {
                let n = elements(&p).ok_or_else(|| too_large("parameter", &p))?;
                params = params.saturating_add(n);
                if params > MAX_PARAMS {
                    return Err(NnError::spec(format!(
                        "{name} ({}): with its parameter {p:?} the model has more than {MAX_PARAMS} parameters \
                         (1 GiB of weights, 4 GiB to train with Adam): too large for this tool",
                        l.type_name()
                    )));
                }
            }
            out.push(ResolvedLayer { name, spec: l.clone(), input: shape, output: output.clone() });
            shape = output;
        }
        Ok(out)
    }

    /// The per-example output shape (e.g. `[10]`).
    ///
    /// # Errors
    /// As [`ModelSpec::resolve`].
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        Ok(self.resolve()?.last().map(|l| l.output.clone()).unwrap_or_default())
    }

    /// Freezes (`trainable` false) or unfreezes the layer named `name` (Keras's
    /// `model.get_layer(name).trainable = ...`): a frozen layer keeps its weights through
    /// training, and the layers below the lowest trainable one run no backward pass at all.
    ///
    /// # Errors
    /// [`NnError::Spec`] when no layer has that name (the message lists those that have
    /// weights), or when it names a layer without weights (nothing to freeze). As
    /// [`ModelSpec::resolve`] for an invalid architecture.
    pub fn set_trainable(&mut self, name: &str, trainable: bool) -> Result<()> {
        let layers = self.resolve()?;
        let Some(i) = layers.iter().position(|l| l.name == name) else {
            let weighted: Vec<&str> =
                layers.iter().filter(|l| l.spec.trainable().is_some()).map(|l| l.name.as_str()).collect();
            return Err(NnError::spec(format!(
                "no layer is named '{name}'; the layers that can be frozen are: {}",
                if weighted.is_empty() { "none".to_string() } else { weighted.join(", ") }
            )));
        };
        let layer = &mut self.layers[i];
        let kind = layer.type_name();
        let flag = layer.trainable_mut().ok_or_else(|| {
            NnError::spec(format!(
                "{name} ({kind}): it has no weights to be {}",
                if trainable { "unfrozen" } else { "frozen" }
            ))
        })?;
        *flag = trainable;
        Ok(())
    }

    /// Unfreezes every layer (each `trainable` true).
    pub fn thaw_all(&mut self) {
        self.layers.iter_mut().filter_map(LayerSpec::trainable_mut).for_each(|t| *t = true);
    }

    /// The architecture as pretty JSON (what a spec file holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses an architecture from JSON.
    ///
    /// # Errors
    /// [`NnError::Spec`] with serde's message: the layer it is in ("layer 2 of 5 (Dense): unknown
    /// variant `relux`...") where it is inside one, else its line and column.
    pub fn from_json(s: &str) -> Result<ModelSpec> {
        serde_json::from_str(s).map_err(|e| {
            // Serde places an error inside a tagged layer at the layer's end, without naming it:
            // name the first layer that does not read, by number and type.
            let layer = serde_json::from_str::<serde_json::Value>(s).ok().and_then(|v| {
                let layers = v.get("layers")?.as_array()?.clone();
                let n = layers.len();
                layers.into_iter().enumerate().find_map(|(i, l)| {
                    let kind = l.get("type").and_then(serde_json::Value::as_str).unwrap_or("?").to_string();
                    serde_json::from_value::<LayerSpec>(l)
                        .err()
                        .map(|e| format!("layer {} of {n} ({kind}): {e}", i + 1))
                })
            });
            NnError::spec(format!("invalid model JSON: {}", layer.unwrap_or_else(|| e.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_with_strides_batch_norm_and_global_pooling_have_builders() {
        let spec = ModelSpec::new(&[1, 28, 28])
            .add(Conv2D::new(8, 3))
            .add(Pool2D::new(3).strides(2).max_pooling())
            .add(BatchNorm::new())
            .add(Pool2D::new(2).average_pooling())
            .add(LayerSpec::global_average_pooling_2d());
        let out: Vec<Vec<usize>> = spec.resolve().unwrap().into_iter().map(|l| l.output).collect();
        assert_eq!(out, [vec![8, 26, 26], vec![8, 12, 12], vec![8, 12, 12], vec![8, 6, 6], vec![8]]);
        assert_eq!(BatchNorm::new(), BatchNorm::default());
    }

    #[test]
    fn sizes_that_overflow_are_refused_not_a_panic() {
        // What a model file may say: a window of 2⁶⁴ - 1 with "same" padding, an empty input.
        assert_eq!(window_out(28, usize::MAX, 1, Padding::Same), (28, (usize::MAX - 28) / 2));
        assert_eq!(window_out(0, 3, 1, Padding::Same), (0, 1));
        let reshape = LayerSpec::Reshape(Reshape { target_shape: vec![1 << 32, 1 << 32, 2] });
        let e = reshape.output_shape("reshape", &[784]).unwrap_err().to_string();
        assert!(e.contains("must hold as many values as its input"), "{e}");
    }

    #[test]
    fn conv_kernels_take_penalties_as_dense_ones_do() {
        let c = Conv2D::new(8, 3).l2(1e-4).l1(1e-5);
        assert_eq!(c.kernel_regularizer, Some(Regularizer { l1: 1e-5, l2: 1e-4 }));
        assert_eq!(Dense::new(8).l2(1e-4).l1(1e-5).kernel_regularizer, c.kernel_regularizer);
    }

    #[test]
    fn a_layer_that_does_not_read_is_named_by_number_and_type() {
        let json = ModelSpec::new(&[28, 28])
            .add(Flatten::new())
            .add(Dense::new(128).activation(Activation::Relu))
            .add(Dense::new(10))
            .to_json()
            .replace("\"relu\"", "\"relux\"");
        let err = ModelSpec::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("layer 2 of 3 (Dense)") && err.contains("relux"), "{err}");
        // Errors outside the layers keep serde's position.
        let err = ModelSpec::from_json("{\"input_shape\": [28, 28], \"layers\": [], \"extra\": 1}").unwrap_err();
        assert!(err.to_string().contains("extra") && err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn a_model_past_the_parameter_cap_is_refused_before_anything_is_allocated() {
        let err = ModelSpec::new(&[784]).add(Dense::new(4_000_000)).resolve().unwrap_err().to_string();
        assert!(err.contains("dense (Dense)") && err.contains("more than 268435456 parameters"), "{err}");
        // Under the cap, in several layers: fine.
        let big = ModelSpec::new(&[784]).add(Dense::new(4096)).add(Dense::new(4096)).add(Dense::new(10));
        assert!(big.resolve().is_ok());
    }

    #[test]
    fn a_model_past_the_layer_cap_is_refused() {
        let deep = |n: usize| (0..n).fold(ModelSpec::new(&[784]), |s, _| s.add(Dropout::new(0.1))).add(Dense::new(10));
        assert!(deep(MAX_LAYERS - 1).resolve().is_ok());
        let err = deep(MAX_LAYERS).resolve().unwrap_err().to_string();
        assert!(err.contains("1001 layers, more than the 1000"), "{err}");
    }

    #[test]
    fn a_channels_last_image_is_named_as_such() {
        let keras = ModelSpec::new(&[28, 28, 1]).add(Conv2D::new(8, 3));
        let err = keras.resolve().unwrap_err().to_string();
        assert!(err.contains("channels come first") && err.contains("[1, 28, 28]"), "{err}");
        // The same shape made inside the network, by a Reshape: the convolution says so.
        let reshaped = ModelSpec::new(&[784]).add(Reshape { target_shape: vec![28, 28, 1] }).add(Conv2D::new(8, 3));
        let err = reshaped.resolve().unwrap_err().to_string();
        assert!(err.contains("looks channels-last") && err.contains("[1, 28, 28]"), "{err}");
        let small = ModelSpec::new(&[1, 2, 2]).add(Conv2D::new(8, 3));
        let err = small.resolve().unwrap_err().to_string();
        assert!(err.contains("larger than its 2×2 input") && !err.contains("channels-last"), "{err}");
    }

    #[test]
    fn names_shapes_and_json_roundtrip() {
        let spec = ModelSpec::new(&[1, 28, 28])
            .add(Conv2D::new(32, 3).activation(Activation::Relu))
            .add(Pool2D::max(2))
            .add(Conv2D::new(64, 3).activation(Activation::Relu).padding(Padding::Same).strides(2))
            .add(Flatten::new())
            .add(Dropout::new(0.5))
            .add(Dense::new(10).activation(Activation::Softmax));
        let r = spec.resolve().unwrap();
        assert_eq!(r[0].output, vec![32, 26, 26]);
        assert_eq!(r[1].output, vec![32, 13, 13]);
        assert_eq!(r[2].output, vec![64, 7, 7]);
        assert_eq!(r[2].name, "conv2d_1");
        assert_eq!(Pool2D::average(3), LayerSpec::AveragePooling2D(Pool2D { pool_size: [3, 3], ..Pool2D::new(1) }));
        assert_eq!(r[3].output, vec![64 * 49]);
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        let bad = ModelSpec::new(&[28, 28]).add(Dense::new(10));
        let err = bad.resolve().unwrap_err().to_string();
        assert!(err.contains("dense (Dense)") && err.contains("Flatten"), "{err}");
        let err = ModelSpec::from_json("{\"input_shape\": [784], \"layers\": [{\"type\": \"Dense\"}]}").unwrap_err();
        assert!(err.to_string().contains("units"), "{err}");
        // A misspelt option is an error (Keras's `from_config` refuses unknown arguments too),
        // not a layer silently built without it.
        let typo = r#"{"input_shape": [784], "layers": [{"type": "Dense", "units": 64, "activaton": "relu"}]}"#;
        let err = ModelSpec::from_json(typo).unwrap_err().to_string();
        assert!(err.contains("activaton"), "{err}");
        let err = ModelSpec::from_json(r#"{"input_shape": [784], "input": [1], "layers": []}"#).unwrap_err();
        assert!(err.to_string().contains("input"), "{err}");
        let gap = r#"{"input_shape": [1, 4, 4], "layers": [{"type": "GlobalAveragePooling2D", "size": 2}]}"#;
        assert!(ModelSpec::from_json(gap).is_err());
        let ok = r#"{"input_shape": [1, 4, 4], "layers": [{"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 2}]}"#;
        assert!(ModelSpec::from_json(ok).is_ok());
        // Window sizes and strides as one number, as Keras writes them.
        let keras = r#"{"input_shape": [1, 8, 8], "layers": [
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 1},
            {"type": "MaxPooling2D", "pool_size": 2, "strides": 2}]}"#;
        let spec = ModelSpec::from_json(keras).unwrap();
        let pairs = ModelSpec::new(&[1, 8, 8])
            .add(Conv2D::new(4, 3))
            .add(LayerSpec::MaxPooling2D(Pool2D { strides: Some([2, 2]), ..Pool2D::new(2) }));
        assert_eq!(spec, pairs);
        // Keras's default window, 2×2 (and strides the window's).
        let plain = r#"{"input_shape": [1, 8, 8], "layers": [{"type": "AveragePooling2D"}]}"#;
        assert_eq!(ModelSpec::from_json(plain).unwrap(), ModelSpec::new(&[1, 8, 8]).add(Pool2D::average(2)));
        let bad = r#"{"input_shape": [1, 8, 8], "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": "3"}]}"#;
        let err = ModelSpec::from_json(bad).unwrap_err().to_string();
        assert!(err.contains("a number or a pair"), "{err}");
    }

    #[test]
    fn layers_that_cannot_work_are_refused_with_their_reason() {
        let err = |spec: ModelSpec| spec.resolve().unwrap_err().to_string();
        // A conv on flat features: names the layer, the shape it got and what to add.
        let e = err(ModelSpec::new(&[784]).add(Conv2D::new(8, 3)));
        assert!(e.contains("conv2d (Conv2D)") && e.contains("[784]") && e.contains("Reshape"), "{e}");
        let e = err(ModelSpec::new(&[784]).add(LayerSpec::MaxPooling2D(Pool2D::new(2))));
        assert!(e.contains("max_pooling2d") && e.contains("[784]"), "{e}");
        // A softmax across a conv's filters (not computed per pixel here).
        let e = err(ModelSpec::new(&[10]).add(BatchNorm { momentum: 2.0, ..BatchNorm::default() }));
        assert!(e.contains("batch_normalization") && e.contains("momentum"), "{e}");
        let e = err(ModelSpec::new(&[1, 8, 8]).add(Conv2D::new(4, 3).activation(Activation::Softmax)));
        assert!(e.contains("conv2d (Conv2D)") && e.contains("softmax"), "{e}");
        // Sizes whose products overflow, or that no memory holds, before anything is allocated.
        let e = err(ModelSpec::new(&[100_000]).add(Dense::new(100_000)));
        assert!(e.contains("dense (Dense)") && e.contains("parameter"), "{e}");
        let e = err(ModelSpec::new(&[usize::MAX / 2, 4]).add(Flatten::new()));
        assert!(e.contains("input shape"), "{e}");
        let e = err(ModelSpec::new(&[1, 30_000, 30_000]).add(Conv2D::new(64, 3).padding(Padding::Same)));
        assert!(e.contains("conv2d (Conv2D)") && e.contains("output"), "{e}");
        // "Same" windows far past their input (all padding and cost), and negative penalties.
        let e = err(ModelSpec::new(&[1, 28, 28]).add(Conv2D::new(4, 1000).padding(Padding::Same)));
        assert!(e.contains("conv2d (Conv2D): kernel 1000×1000") && e.contains("at most 57×57"), "{e}");
        let huge = Pool2D { padding: Padding::Same, ..Pool2D::new(1 << 40) };
        let e = err(ModelSpec::new(&[1, 28, 28]).add(LayerSpec::MaxPooling2D(huge)));
        assert!(e.contains("max_pooling2d: pool") && e.contains("mostly padding"), "{e}");
        // Still allowed: a 3×3 kernel or a 2×2 pool on a 1×1 map, as deep convnets end.
        let small = Pool2D { padding: Padding::Same, ..Pool2D::new(2) };
        ModelSpec::new(&[1, 1, 1])
            .add(Conv2D::new(4, 3).padding(Padding::Same))
            .add(LayerSpec::MaxPooling2D(small))
            .resolve()
            .unwrap();
        let e = err(ModelSpec::new(&[4]).add(Dense::new(2).l1(-1.0)));
        assert!(e.contains("dense (Dense): kernel_regularizer l1 -1"), "{e}");
        let e = err(ModelSpec::new(&[1, 8, 8]).add(Conv2D::new(4, 3).l2(f32::NAN)));
        assert!(e.contains("conv2d (Conv2D): kernel_regularizer") && e.contains("l2 NaN"), "{e}");
    }
}
