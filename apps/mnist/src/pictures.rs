//! From the crates' data to nn-viz's pictures: prediction grids, galleries of mistakes, training
//! curves, network diagrams.

use std::path::Path;

use anyhow::Result;
use mnist_data::Dataset;
use ndarray::Array2;
use nn_core::{LayerSpec, ModelSpec};
use nn_train::History;
use nn_viz::{DiagramLayer, GridOptions, Tile, Tone};

/// Columns of a grid of `n` images: 5 up to 25 images, then about square.
pub fn columns_for(n: usize) -> usize {
    if n <= 25 {
        5.min(n.max(1))
    } else {
        (n as f64).sqrt().ceil() as usize
    }
}

/// Grid options for 28×28-style images of `data`.
pub fn grid_options(rows: usize, cols: usize, n: usize, title: String) -> GridOptions {
    GridOptions { image_rows: rows, image_cols: cols, columns: columns_for(n), scale: 3, title }
}

/// The predicted class and its probability for each row of `probs`.
pub fn best(probs: &Array2<f32>) -> Vec<(usize, f32)> {
    probs
        .rows()
        .into_iter()
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &p)| if p > b.1 { (i, p) } else { b }))
        .collect()
}

/// A grid of the examples `indices` of `data` captioned "Pred: x, True: y" (green when right,
/// red when wrong).
pub fn prediction_grid(
    path: &Path,
    data: &Dataset,
    indices: &[usize],
    predicted: &[usize],
    names: &[String],
    title: &str,
) -> Result<()> {
    let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let tiles: Vec<Tile<'_>> = indices
        .iter()
        .zip(predicted)
        .map(|(&i, &p)| Tile::prediction(data.image(i), &name(p), &name(data.label(i) as usize)))
        .collect();
    nn_viz::digit_grid(path, &tiles, &grid_options(data.rows(), data.cols(), tiles.len(), title.to_string()))?;
    Ok(())
}

/// The most confident mistakes on `data`: up to `count` wrong predictions, most confident
/// first, as `(index, predicted, probability)`.
pub fn worst_mistakes(data: &Dataset, probs: &Array2<f32>, count: usize) -> Vec<(usize, usize, f32)> {
    let mut wrong: Vec<(usize, usize, f32)> = best(probs)
        .into_iter()
        .enumerate()
        .filter(|&(i, (p, _))| p != data.label(i) as usize)
        .map(|(i, (p, prob))| (i, p, prob))
        .collect();
    wrong.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    wrong.truncate(count);
    wrong
}

/// A gallery of mistakes captioned "Pred: x (p%), True: y" in red (p with one decimal, so that
/// a wrong 99.96% does not read 100%).
///
/// Returns `false` (and writes nothing) when there are no mistakes.
pub fn mistakes_grid(
    path: &Path,
    data: &Dataset,
    mistakes: &[(usize, usize, f32)],
    names: &[String],
    title: &str,
) -> Result<bool> {
    if mistakes.is_empty() {
        return Ok(false);
    }
    let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let tiles: Vec<Tile<'_>> = mistakes
        .iter()
        .map(|&(i, p, prob)| Tile {
            pixels: data.image(i),
            caption: format!("Pred: {} ({:.1}%), True: {}", name(p), prob * 100.0, name(data.label(i) as usize)),
            tone: Tone::Wrong,
        })
        .collect();
    nn_viz::digit_grid(path, &tiles, &grid_options(data.rows(), data.cols(), tiles.len(), title.to_string()))?;
    Ok(true)
}

/// The training curves of a run ("Model loss", "Model accuracy"); `false` when there is no
/// epoch to draw.
pub fn history_png(path: &Path, history: &History, title: &str) -> Result<bool> {
    if history.epochs.is_empty() {
        return Ok(false);
    }
    let curves = nn_viz::HistoryCurves {
        title: title.to_string(),
        loss: history.series("loss"),
        accuracy: history.series("accuracy"),
        val_loss: history.series("val_loss"),
        val_accuracy: history.series("val_accuracy"),
    };
    nn_viz::plot_history(path, &curves)?;
    Ok(true)
}

fn shape_text(shape: &[usize]) -> String {
    // Channels first, as the summary prints them, and told apart from the pixels: 32 maps of
    // 26×26 pixels are `32 @ 26×26` (LeNet's drawings).
    match shape {
        [c, h, w] => format!("{c} @ {h}×{w}"),
        s => s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×"),
    }
}

/// The diagram layers of an architecture: the input as a column of neurons when it is flattened
/// first (a multilayer perceptron), Dense layers as columns, everything else as labelled blocks
/// with their output shapes.
///
/// # Errors
/// As [`ModelSpec::resolve`].
pub fn diagram_layers(spec: &ModelSpec) -> Result<Vec<DiagramLayer>> {
    let layers = spec.resolve()?;
    let mut out = Vec::new();
    let mut rest = &layers[..];
    let input_len: usize = spec.input_shape.iter().product();
    match rest.first().map(|l| &l.spec) {
        Some(LayerSpec::Flatten(_)) => {
            let what = if spec.input_shape.len() > 1 {
                format!("{input_len} ({} pixels)", shape_text(&spec.input_shape))
            } else {
                input_len.to_string()
            };
            out.push(DiagramLayer {
                name: "Input".into(),
                units: input_len,
                label: what,
                kind: nn_viz::LayerKind::Dense,
            });
            rest = &rest[1..];
        }
        Some(LayerSpec::Reshape(r)) => {
            out.push(DiagramLayer::block("Input", shape_text(&r.target_shape)));
            rest = &rest[1..];
        }
        _ => out.push(DiagramLayer::block("Input", shape_text(&spec.input_shape))),
    }
    let last_dense = layers.iter().rposition(|l| matches!(l.spec, LayerSpec::Dense(_)));
    let first_index = layers.len() - rest.len();
    for (k, l) in rest.iter().enumerate() {
        let index = first_index + k;
        let out_shape = shape_text(&l.output);
        out.push(match &l.spec {
            LayerSpec::Dense(d) => {
                let is_output = Some(index) == last_dense && index + 1 == layers.len();
                let act = match d.activation {
                    nn_core::Activation::Linear if is_output => "logits",
                    a => a.name(),
                };
                DiagramLayer::dense(if is_output { "Output" } else { "Dense" }, d.units, act)
            }
            LayerSpec::Conv2D(c) => DiagramLayer::block(
                "Conv2D",
                format!(
                    "{} filters {}×{}\n{}\n{out_shape}",
                    c.filters,
                    c.kernel_size[0],
                    c.kernel_size[1],
                    c.activation.name()
                ),
            ),
            LayerSpec::MaxPooling2D(p) | LayerSpec::AveragePooling2D(p) => {
                DiagramLayer::block(l.spec.type_name(), format!("{}×{}\n{out_shape}", p.pool_size[0], p.pool_size[1]))
            }
            LayerSpec::Dropout(d) => DiagramLayer::block("Dropout", format!("rate {}", d.rate)),
            LayerSpec::BatchNormalization(_) => DiagramLayer::block("BatchNorm", out_shape),
            _ => DiagramLayer::block(l.spec.type_name(), out_shape),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlp_is_three_columns_and_a_cnn_has_blocks() {
        let mlp = diagram_layers(&nn_core::preset("mlp-128").unwrap_or_else(|| ModelSpec::new(&[1]))).expect("mlp");
        let names: Vec<&str> = mlp.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Input", "Dense", "Output"]);
        assert_eq!(mlp[0].units, 784);
        assert_eq!(mlp[2].label, "10 logits");
        let cnn = diagram_layers(&nn_core::preset("convnet").unwrap_or_else(|| ModelSpec::new(&[1]))).expect("cnn");
        assert_eq!(cnn[0].label, "1 @ 28×28");
        assert!(cnn[1].label.contains("32 filters 3×3") && cnn[1].label.contains("32 @ 26×26"), "{:?}", cnn[1]);
        assert_eq!(cnn.last().map(|l| l.label.as_str()), Some("10 softmax"));
    }
}
