//! Training curves: loss and accuracy per epoch, train and validation, in the style of the Keras
//! tutorials' "Model loss" / "Model accuracy" plots.

use std::path::Path;

use plotters::prelude::{Circle, PathElement};
use plotters::style::{Color, RGBColor, ShapeStyle};

use crate::canvas::{Area, Canvas, Drawn, Fail};
use crate::error::Result;
use crate::text::{width as text_width, Anchor, H, V};

/// Per-epoch metrics of one training run, named as in Keras's `History.history`.
///
/// Epoch `i` (0-based) of every series is drawn at x = `i + 1`. A series left empty is not drawn;
/// when both accuracy series are empty only the loss panel is drawn. Non-finite values (a loss
/// that diverged to NaN) are skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryCurves {
    /// A heading over the panels (e.g. "MLP, 784-128-10"); empty for none.
    pub title: String,
    /// Training loss per epoch.
    pub loss: Vec<f64>,
    /// Validation loss per epoch (empty when there was no validation set).
    pub val_loss: Vec<f64>,
    /// Training accuracy per epoch, as a fraction in `0..=1`.
    pub accuracy: Vec<f64>,
    /// Validation accuracy per epoch, as a fraction in `0..=1`.
    pub val_accuracy: Vec<f64>,
}

/// Matplotlib's first two colours ("C0" blue, "C1" orange), as in the Keras tutorials.
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);
const GRID: [u8; 3] = [228, 228, 228];
const AXIS: [u8; 3] = [70, 70, 70];
const BLACK: [u8; 3] = [0, 0, 0];

/// Drawing is done at twice the size and halved at the end, for anti-aliased lines and markers.
const S: i64 = 2;
/// Width of one panel, height of the picture without its heading, height of the heading.
const PANEL_W: i64 = 500;
const PANEL_H: i64 = 450;
const HEADING_H: i64 = 44;
/// Plot area inside a panel: margins left (tick labels and axis name), right, top (caption) and
/// bottom (tick labels and axis name).
const PLOT_LEFT: i64 = 80;
const PLOT_RIGHT: i64 = 24;
const PLOT_TOP: i64 = 50;
const PLOT_BOTTOM: i64 = 64;
const TITLE_PX: f64 = 22.0;
const CAPTION_PX: f64 = 20.0;
const AXIS_PX: f64 = 16.0;
const TICK_PX: f64 = 14.0;

/// Writes the training curves of `curves` as a PNG at `path`: a "Model loss" panel and, when
/// there are accuracies, a "Model accuracy" panel beside it (1000×450 pixels, 44 more with a
/// title), each with train and validation lines, axis labels and a legend.
///
/// # Errors
/// [`VizError::Invalid`](crate::VizError::Invalid) when there is no finite loss or accuracy to
/// draw; [`VizError::Draw`](crate::VizError::Draw) or [`VizError::Io`](crate::VizError::Io) when
/// drawing or writing fails.
pub fn plot_history(path: impl AsRef<Path>, curves: &HistoryCurves) -> Result<()> {
    let path = path.as_ref();
    render(curves).map_err(|f| f.at(path))?.downsample2().save(path)
}

fn render(c: &HistoryCurves) -> Drawn<Canvas> {
    let finite = |v: &[f64]| v.iter().any(|x| x.is_finite());
    let has_loss = finite(&c.loss) || finite(&c.val_loss);
    let has_acc = finite(&c.accuracy) || finite(&c.val_accuracy);
    if !has_loss && !has_acc {
        return Err(Fail::Invalid("the history holds no finite loss or accuracy value".into()));
    }
    let mut panels = Vec::new();
    if has_loss {
        panels.push(("Model loss", "Loss", &c.loss, &c.val_loss, Metric::Loss));
    }
    if has_acc {
        panels.push(("Model accuracy", "Accuracy", &c.accuracy, &c.val_accuracy, Metric::Accuracy));
    }
    let heading = if c.title.trim().is_empty() { 0 } else { HEADING_H };
    let width = PANEL_W * panels.len() as i64;
    let mut canvas = Canvas::new((width * S) as u32, ((PANEL_H + heading) * S) as u32)?;
    if heading > 0 {
        canvas.text(c.title.trim(), (width * S / 2, 16 * S), TITLE_PX * S as f64, BLACK, Anchor::TOP)?;
    }
    for (k, (caption, y_desc, train, val, metric)) in panels.into_iter().enumerate() {
        panel(&mut canvas, (k as i64 * PANEL_W, heading), caption, y_desc, (train, val), metric)?;
    }
    Ok(canvas)
}

#[derive(Clone, Copy, PartialEq)]
enum Metric {
    Loss,
    Accuracy,
}

/// The points of a series that are finite, at x = epoch number (1-based).
fn points(v: &[f64]) -> Vec<(f64, f64)> {
    v.iter().enumerate().filter(|(_, y)| y.is_finite()).map(|(i, &y)| (i as f64 + 1.0, y)).collect()
}

/// A y range around the values with some headroom; accuracies do not run far past 1.
fn y_range(values: impl Iterator<Item = f64>, metric: Metric) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 { span * 0.07 } else { (hi.abs() * 0.1).max(0.05) };
    let floor = lo >= 0.0;
    let top = hi;
    lo -= pad;
    hi += pad;
    if floor {
        lo = lo.max(0.0);
    }
    if metric == Metric::Accuracy && top <= 1.0 && hi > 1.0 {
        hi = 1.0 + (1.0 - lo) * 0.02;
    }
    (lo, hi)
}

/// Tick values of `lo..=hi`: multiples of a step of 1, 2, 2.5 or 5 × 10^k (only integers when
/// `whole`), at most about `max` of them; with the decimals the labels need.
fn ticks(lo: f64, hi: f64, max: usize, whole: bool) -> (Vec<f64>, usize) {
    let raw = ((hi - lo) / max.max(1) as f64).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let mantissas: &[f64] = if whole { &[1.0, 2.0, 5.0, 10.0] } else { &[1.0, 2.0, 2.5, 5.0, 10.0] };
    let mut step = mantissas.iter().map(|m| m * mag).find(|&s| s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * mag);
    if whole {
        step = step.max(1.0).round();
    }
    let decimals = (0..=8).find(|&d| {
        let scaled = step * 10f64.powi(d);
        (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
    });
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let values = (first..=last).map(|k| k as f64 * step).collect();
    (values, decimals.unwrap_or(8) as usize)
}

/// Maps data coordinates to canvas pixels (already multiplied by [`S`]).
struct Frame {
    left: i64,
    right: i64,
    top: i64,
    bottom: i64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> i64 {
        self.left + ((x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left) as f64).round() as i64
    }
    fn py(&self, y: f64) -> i64 {
        self.bottom - ((y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top) as f64).round() as i64
    }
    fn at(&self, (x, y): (f64, f64)) -> (i32, i32) {
        (self.px(x) as i32, self.py(y) as i32)
    }
}

fn panel(
    canvas: &mut Canvas,
    (ox, oy): (i64, i64),
    caption: &str,
    y_desc: &str,
    series: (&[f64], &[f64]),
    metric: Metric,
) -> Drawn {
    let (train, val) = (points(series.0), points(series.1));
    let epochs = train.iter().chain(&val).map(|p| p.0).fold(1.0, f64::max);
    let x_pad = 0.04 * (epochs - 1.0);
    let xr = if epochs <= 1.0 { (0.5, 1.5) } else { (1.0 - x_pad, epochs + x_pad) };
    let yr = y_range(train.iter().chain(&val).map(|p| p.1), metric);
    let f = Frame {
        left: (ox + PLOT_LEFT) * S,
        right: (ox + PANEL_W - PLOT_RIGHT) * S,
        top: (oy + PLOT_TOP) * S,
        bottom: (oy + PANEL_H - PLOT_BOTTOM) * S,
        x: xr,
        y: yr,
    };
    let (plot_w, plot_h) = (f.right - f.left, f.bottom - f.top);
    let (xt, _) = ticks(xr.0, xr.1, 10, true);
    let (yt, decimals) = ticks(yr.0, yr.1, 7, false);

    // Grid, frame and tick marks.
    for &x in &xt {
        canvas.fill(f.px(x), f.top, S, plot_h, GRID);
        canvas.fill(f.px(x), f.bottom, S, 5 * S, AXIS);
    }
    for &y in &yt {
        canvas.fill(f.left, f.py(y), plot_w, S, GRID);
        canvas.fill(f.left - 5 * S, f.py(y), 5 * S, S, AXIS);
    }
    canvas.frame(f.left, f.top, plot_w, plot_h, AXIS);
    canvas.frame(f.left + 1, f.top + 1, plot_w - 2, plot_h - 2, AXIS);

    // Lines and markers.
    let series = [("Train", &train, TRAIN), ("Validation", &val, VALIDATION)];
    let shown: Vec<_> = series.iter().filter(|s| !s.1.is_empty()).collect();
    let markers = train.len().max(val.len()) <= 40;
    canvas.draw(|root: &Area<'_>| {
        for (_, pts, color) in &shown {
            let line = ShapeStyle::from(*color).stroke_width(2 * S as u32);
            root.draw(&PathElement::new(pts.iter().map(|&p| f.at(p)).collect::<Vec<_>>(), line))?;
            if markers {
                for &p in pts.iter() {
                    root.draw(&Circle::new(f.at(p), (3.5 * S as f64) as i32, color.filled()))?;
                }
            }
        }
        Ok(())
    })?;

    // Texts.
    let centre_x = (f.left + f.right) / 2;
    canvas.text(caption, (centre_x, (oy + 18) * S), CAPTION_PX * S as f64, BLACK, Anchor::TOP)?;
    for &x in &xt {
        canvas.text(&format!("{x:.0}"), (f.px(x), f.bottom + 11 * S), TICK_PX * S as f64, BLACK, Anchor::TOP)?;
    }
    for &y in &yt {
        canvas.text(&format!("{y:.decimals$}"), (f.left - 9 * S, f.py(y)), TICK_PX * S as f64, BLACK, Anchor::RIGHT)?;
    }
    canvas.text("Epoch", (centre_x, f.bottom + 36 * S), AXIS_PX * S as f64, BLACK, Anchor::TOP)?;
    canvas.text_up(
        y_desc,
        ((ox + 16) * S, (f.top + f.bottom) / 2),
        AXIS_PX * S as f64,
        BLACK,
        Anchor(H::Center, V::Center),
    )?;
    legend(canvas, &f, &shown.iter().map(|s| (s.0, s.1.as_slice(), s.2)).collect::<Vec<_>>(), metric, markers)
}

/// A series of a legend: its name, points and colour.
type Entry<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

/// Draws the legend in the corner of the plot that covers the fewest points of the lines.
fn legend(canvas: &mut Canvas, f: &Frame, series: &[Entry<'_>], metric: Metric, markers: bool) -> Drawn {
    if series.is_empty() {
        return Ok(());
    }
    let (pad, row, sample) = (10 * S, 22 * S, 26 * S);
    let text_w = series.iter().map(|s| text_width(s.0, TICK_PX * S as f64)).max().unwrap_or(0);
    let (w, h) = (pad + sample + 8 * S + text_w + pad, pad + row * series.len() as i64 + pad / 2);
    let inset = 10 * S;
    let corners = [
        (f.right - inset - w, f.top + inset),        // upper right
        (f.right - inset - w, f.bottom - inset - h), // lower right
        (f.left + inset, f.top + inset),             // upper left
        (f.left + inset, f.bottom - inset - h),      // lower left
    ];
    let order: [usize; 4] = if metric == Metric::Loss { [0, 1, 2, 3] } else { [1, 0, 3, 2] };
    // Points along the lines, 16 per segment, in pixels.
    let mut samples = Vec::new();
    for (_, pts, _) in series {
        for pair in pts.windows(2) {
            for k in 0..=16 {
                let t = f64::from(k) / 16.0;
                let (x, y) = (pair[0].0 + (pair[1].0 - pair[0].0) * t, pair[0].1 + (pair[1].1 - pair[0].1) * t);
                samples.push((f.px(x), f.py(y)));
            }
        }
        samples.extend(pts.iter().map(|&(x, y)| (f.px(x), f.py(y))));
    }
    let covered = |&(x0, y0): &(i64, i64)| {
        samples
            .iter()
            .filter(|&&(x, y)| x >= x0 - 4 * S && x <= x0 + w + 4 * S && y >= y0 - 4 * S && y <= y0 + h + 4 * S)
            .count()
    };
    let (x0, y0) = order.iter().map(|&i| corners[i]).min_by_key(covered).unwrap_or(corners[0]);
    canvas.fill(x0, y0, w, h, [255, 255, 255]);
    canvas.frame(x0, y0, w, h, [200, 200, 200]);
    canvas.draw(|root: &Area<'_>| {
        for (k, (_, _, color)) in series.iter().enumerate() {
            let y = (y0 + pad + row * k as i64 + row / 2) as i32;
            let (a, b) = ((x0 + pad) as i32, (x0 + pad + sample) as i32);
            root.draw(&PathElement::new(vec![(a, y), (b, y)], ShapeStyle::from(*color).stroke_width(2 * S as u32)))?;
            if markers {
                root.draw(&Circle::new(((a + b) / 2, y), (3.5 * S as f64) as i32, color.filled()))?;
            }
        }
        Ok(())
    })?;
    for (k, (name, _, _)) in series.iter().enumerate() {
        let y = y0 + pad + row * k as i64 + row / 2;
        canvas.text(name, (x0 + pad + sample + 8 * S, y), TICK_PX * S as f64, BLACK, Anchor::LEFT)?;
    }
    Ok(())
}
