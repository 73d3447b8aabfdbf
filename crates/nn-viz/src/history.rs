//! Training curves: loss and accuracy per epoch, train and validation, in the style of the Keras
//! tutorials' "Model loss" / "Model accuracy" plots.

use std::path::Path;

use plotters::prelude::{ChartBuilder, Circle, LineSeries, PathElement, SeriesLabelPosition};
use plotters::style::{Color, IntoFont, RGBColor, ShapeStyle, BLACK, WHITE};

use crate::canvas::{font, label, Anchor, Area, Canvas, Drawn, Fail};
use crate::error::Result;
use crate::font::FONT_FAMILY;

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
const GRID: RGBColor = RGBColor(225, 225, 225);

/// Width of one panel, and height of the picture without its heading.
const PANEL_W: u32 = 500;
const PANEL_H: u32 = 450;
const HEADING_H: u32 = 44;

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
    render(curves).map_err(|f| f.at(path))?.save_png(path)
}

fn render(c: &HistoryCurves) -> Drawn<Canvas> {
    let finite = |v: &[f64]| v.iter().any(|x| x.is_finite());
    let has_loss = finite(&c.loss) || finite(&c.val_loss);
    let has_acc = finite(&c.accuracy) || finite(&c.val_accuracy);
    if !has_loss && !has_acc {
        return Err(Fail::Invalid("the history holds no finite loss or accuracy value".into()));
    }
    let panels = u32::from(has_loss) + u32::from(has_acc);
    let heading = if c.title.trim().is_empty() { 0 } else { HEADING_H };
    let mut canvas = Canvas::new(PANEL_W * panels, PANEL_H + heading)?;
    let width = canvas.width();
    canvas.draw(|root| {
        let body = if heading > 0 {
            label(root, c.title.trim(), (width as i32 / 2, 14), 22.0, BLACK, Anchor::TOP)?;
            root.split_vertically(heading).1
        } else {
            root.clone()
        };
        let areas = body.split_evenly((1, panels as usize));
        let mut areas = areas.iter();
        if has_loss {
            if let Some(a) = areas.next() {
                panel(a, "Model loss", "Loss", &c.loss, &c.val_loss, Metric::Loss)?;
            }
        }
        if has_acc {
            if let Some(a) = areas.next() {
                panel(a, "Model accuracy", "Accuracy", &c.accuracy, &c.val_accuracy, Metric::Accuracy)?;
            }
        }
        Ok(())
    })?;
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

/// A y range around the values with some headroom; accuracies stay within `0..=1` where the
/// values allow.
fn y_range(values: impl Iterator<Item = f64>, metric: Metric) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 { span * 0.08 } else { (hi.abs() * 0.1).max(0.05) };
    let floor = lo >= 0.0;
    lo -= pad;
    hi += pad;
    if floor {
        lo = lo.max(0.0);
    }
    if metric == Metric::Accuracy && hi > 1.0 && hi - pad <= 1.0 {
        hi = 1.0 + (hi - 1.0).min(0.01);
    }
    (lo, hi)
}

/// Decimals for tick labels so that neighbouring ticks read differently.
fn decimals(span: f64) -> usize {
    match span {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        s if s >= 0.2 => 2,
        s if s >= 0.02 => 3,
        _ => 4,
    }
}

fn panel(area: &Area<'_>, caption: &str, y_desc: &str, train: &[f64], val: &[f64], metric: Metric) -> Drawn {
    let train = points(train);
    let val = points(val);
    let epochs = train.iter().chain(&val).map(|p| p.0).fold(1.0, f64::max);
    let (x0, x1) = if epochs <= 1.0 { (0.5, 1.5) } else { (1.0 - 0.03 * epochs, epochs * 1.03) };
    let (y0, y1) = y_range(train.iter().chain(&val).map(|p| p.1), metric);
    let digits = decimals(y1 - y0);

    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT_FAMILY, 20).into_font())
        .margin(14)
        .margin_right(22)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let whole_epochs = epochs.max(1.0) as usize;
    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(y_desc)
        .x_labels(whole_epochs.min(10))
        .y_labels(8)
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() })
        .y_label_formatter(&|y| format!("{y:.digits$}"))
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .axis_style(BLACK.mix(0.8))
        .draw()?;

    for (name, pts, color) in [("Train", &train, TRAIN), ("Validation", &val, VALIDATION)] {
        if pts.is_empty() {
            continue;
        }
        let line = ShapeStyle::from(color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), line))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], line));
        if pts.len() <= 40 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(if metric == Metric::Loss { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::LowerRight })
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .margin(10)
        .draw()?;
    Ok(())
}
