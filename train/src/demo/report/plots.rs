//! The report's SVG plots, drawn with `plotters` into strings.
//!
//! Text: the crate is built without its `ttf` and `ab_glyph` features, so it needs no system font
//! and no font file. Without them plotters sizes text with a built-in estimate (about 0.7 em per
//! character), which is all the layout needs, and the SVG backend writes every caption, tick label
//! and legend entry as an SVG `<text>` element that the browser renders with its own fonts. Nothing
//! here rasterises glyphs.
//!
//! Every plot returns `Ok(None)` when it has no finite number to draw, so the report can say the
//! plot was skipped instead of failing.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{domain_order, drifts, round_one};
use crate::demo::results::{CurvePoint, DemoResults};
use crate::{Error, Result};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;

/// A colour-blind friendly cycle (Okabe–Ito); colours repeat after eight series.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws one SVG into a string: a white canvas, then `draw`.
fn render_svg(what: &str, draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = root.fill(&WHITE).map_err(Into::into).and_then(|()| draw(&root)).and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| Error::Invalid { what: format!("report plot {what}"), msg: e.to_string() })?;
    }
    Ok(svg)
}

/// A range that covers `values` with a margin; `None` when no value is finite.
fn padded_range(values: impl IntoIterator<Item = f64>, include_zero: bool) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    // A flat series still needs a visible range.
    let pad = if span > 0.0 { span * 0.08 } else { (hi.abs() * 0.1).max(0.5) };
    let lo = if include_zero && lo == 0.0 { 0.0 } else { lo - pad };
    let hi = if include_zero && hi == 0.0 { 0.0 } else { hi + pad };
    Some((lo, hi))
}

/// One line of a line plot.
pub(super) struct LineSpec {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
    pub markers: bool,
}

fn finite_points(points: &[CurvePoint]) -> Vec<(f64, f64)> {
    points.iter().filter(|p| p.loss.is_finite()).map(|p| (p.step as f64, p.loss)).collect()
}

/// A line plot with a legend; `None` when no series has a point. `x_ticks` caps the number of x
/// tick labels (the rounds plot asks for one per round, so ticks fall on whole numbers).
fn line_plot(what: &str, title: &str, x_desc: &str, y_desc: &str, series: &[LineSpec], x_ticks: Option<usize>) -> Result<Option<String>> {
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (Some((x0, x1)), Some((y0, y1))) = (padded_range(all().map(|p| p.0), false), padded_range(all().map(|p| p.1), false)) else {
        return Ok(None);
    };
    let svg = render_svg(what, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        // x is a step or round count: a fractional tick would print as a repeated integer.
        let x_label = |v: &f64| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() };
        chart
            .configure_mesh()
            .x_labels(x_ticks.unwrap_or(10))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&x_label)
            .y_label_formatter(&|v| format!("{v:.3}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            let c = s.color;
            let style = c.stroke_width(2);
            let anno = if s.dashed {
                chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            };
            // The legend sample is two segments: touching for a solid line, apart for a dashed one.
            let gap = if s.dashed { 6 } else { 0 };
            anno.label(s.label.as_str()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], c.stroke_width(2))
                    + PathElement::new(vec![(8 + gap, 0), (16 + gap, 0)], c.stroke_width(2))
            });
            if s.markers {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(Some(svg))
}

/// One bar per group of a grouped bar chart (`None` leaves a gap).
pub(super) struct BarSeries {
    pub label: String,
    pub color: RGBColor,
    pub values: Vec<Option<f64>>,
}

/// Grouped bars: one group per entry of `groups`, one bar per series in each group. The group
/// `highlight` (if any) gets a tinted background and its own legend entry.
fn bar_plot(
    what: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    groups: &[String],
    series: &[BarSeries],
    highlight: Option<(usize, &str)>,
) -> Result<Option<String>> {
    if groups.is_empty() || series.is_empty() {
        return Ok(None);
    }
    let values = || series.iter().flat_map(|s| s.values.iter().flatten().copied());
    let Some((y0, y1)) = padded_range(values(), true) else {
        return Ok(None);
    };
    // Head room above the tallest bar for the legend box.
    let y1 = y1 + (y1 - y0) * 0.3;
    // The x axis counts thousandths of a group: integer coordinates format their own tick labels
    // at the key points (float ones would need a formatter type `WithKeyPoints` cannot carry).
    const GROUP: i32 = 1000;
    let n = groups.len() as i32;
    let centers: Vec<i32> = (0..n).map(|i| i * GROUP + GROUP / 2).collect();
    let bar_width = GROUP * 8 / 10 / series.len().max(1) as i32;
    let svg = render_svg(what, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n * GROUP).with_key_points(centers), y0..y1)?;
        let label_of = |v: &i32| groups.get((v / GROUP).max(0) as usize).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format!("{v:.3}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        if let Some((g, label)) = highlight.filter(|(g, _)| *g < groups.len()) {
            let tint = RGBColor(255, 236, 179);
            let g = g as i32 * GROUP;
            chart
                .draw_series(std::iter::once(Rectangle::new([(g, y0), (g + GROUP, y1)], tint.filled())))?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], tint.filled()));
        }
        for (k, s) in series.iter().enumerate() {
            let c = s.color;
            let bars = s.values.iter().enumerate().filter_map(|(g, v)| {
                let v = v.filter(|v| v.is_finite())?;
                let left = g as i32 * GROUP + GROUP / 10 + k as i32 * bar_width;
                Some(Rectangle::new([(left, 0.0), (left + bar_width - bar_width / 12, v)], c.filled()))
            });
            chart
                .draw_series(bars)?
                .label(s.label.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
        if y0 < 0.0 {
            chart.draw_series(LineSeries::new([(0, 0.0), (n * GROUP, 0.0)], BLACK.stroke_width(1)))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(Some(svg))
}

/// Plot 1: pretraining train and validation loss, with the unigram loss as a flat line.
pub(super) fn pretrain_curve(r: &DemoResults) -> Result<Option<String>> {
    let p = &r.pretrain;
    let train = finite_points(&p.train_curve);
    let val = finite_points(&p.val_curve);
    let xs: Vec<f64> = train.iter().chain(&val).map(|q| q.0).collect();
    let mut series = vec![
        LineSpec { label: "train loss".into(), points: train, color: color(0), dashed: false, markers: false },
        LineSpec { label: "validation loss".into(), points: val, color: color(1), dashed: false, markers: true },
    ];
    if let (Some(lo), Some(hi)) = (xs.iter().copied().reduce(f64::min), xs.iter().copied().reduce(f64::max))
        && p.unigram_loss.is_finite()
    {
        series.push(LineSpec {
            label: format!("unigram loss ({:.4})", p.unigram_loss),
            points: vec![(lo, p.unigram_loss), (hi, p.unigram_loss)],
            color: color(6),
            dashed: true,
            markers: false,
        });
    }
    line_plot("pretrain_loss", "Pretraining: loss vs step", "step", "cross-entropy", &series, None)
}

/// Plot 2: round-1 validation curves of the MoE stacks and of the single LoRA, per domain.
pub(super) fn moe_vs_single(r: &DemoResults) -> Result<Option<String>> {
    let mut series = Vec::new();
    // Only domains both runs trained: the ablation may cover fewer than the method.
    let both = |d: &String| [&r.main_run, &r.single_lora].iter().all(|run| run.domains.iter().any(|x| &x.domain == d));
    for (i, d) in domain_order(r).iter().enumerate().filter(|(_, d)| both(d)) {
        for (run, dashed, tag) in [(&r.main_run, false, "MoE"), (&r.single_lora, true, "single LoRA")] {
            if let Some(round) = run.domains.iter().find(|x| &x.domain == d).and_then(round_one) {
                series.push(LineSpec {
                    label: format!("{d} ({tag})"),
                    points: finite_points(&round.val_curve),
                    color: color(i),
                    dashed,
                    markers: !dashed,
                });
            }
        }
    }
    line_plot(
        "moe_vs_single_lora",
        "Round 1 validation loss: MoE stacks (solid) vs single LoRA (dashed)",
        "step",
        "validation cross-entropy",
        &series,
        None,
    )
}

/// Plot 3: the method run's best validation loss after each round, round 0 being the baseline.
pub(super) fn rounds(r: &DemoResults) -> Result<Option<String>> {
    let last_round = r.main_run.domains.iter().flat_map(|d| d.rounds.iter().map(|x| x.round as usize)).max().unwrap_or(0);
    let series: Vec<LineSpec> = r
        .main_run
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut points = vec![(0.0, d.baseline_val)];
            points.extend(d.rounds.iter().map(|x| (f64::from(x.round), x.best_val)));
            points.retain(|p| p.1.is_finite());
            LineSpec { label: d.domain.clone(), points, color: color(i), dashed: false, markers: true }
        })
        .collect();
    line_plot(
        "rounds",
        &format!("{}: best validation loss per round", r.main_run.label),
        "round (0 = before the domain's first round)",
        "validation cross-entropy",
        &series,
        Some(last_round + 1),
    )
}

/// Plot 4: per earlier domain, final loss minus the loss right after its own training, for both
/// runs.
pub(super) fn forgetting_drift(r: &DemoResults) -> Result<Option<String>> {
    let with: BTreeMap<String, f64> = drifts(&r.main_run.forgetting).into_iter().collect();
    let without: BTreeMap<String, f64> = drifts(&r.no_null_space.forgetting).into_iter().collect();
    let groups: Vec<String> = domain_order(r).into_iter().filter(|d| with.contains_key(d) || without.contains_key(d)).collect();
    let series = vec![
        BarSeries {
            label: format!("{} (null space)", r.main_run.label),
            color: color(0),
            values: groups.iter().map(|d| with.get(d).copied()).collect(),
        },
        BarSeries {
            label: r.no_null_space.label.clone(),
            color: color(1),
            values: groups.iter().map(|d| without.get(d).copied()).collect(),
        },
    ];
    bar_plot(
        "forgetting_drift",
        "Forgetting: final loss minus loss right after own training",
        "earlier domain",
        "loss drift",
        &groups,
        &series,
        None,
    )
}

/// Plot 5: the router's mean weight per stack, grouped by the prompts' domain.
pub(super) fn router_weights(r: &DemoResults) -> Result<Option<String>> {
    let groups: Vec<String> = r.router_weights.iter().map(|w| w.domain.clone()).collect();
    let stacks = stack_domains(r);
    let series: Vec<BarSeries> = stacks
        .iter()
        .enumerate()
        .map(|(i, s)| BarSeries {
            label: format!("{s} stack"),
            color: color(i),
            values: r.router_weights.iter().map(|w| w.mean_weights.get(s).copied()).collect(),
        })
        .collect();
    let highlight = groups.iter().position(|g| g == "medical").map(|g| (g, "medical prompts"));
    bar_plot("router_weights", "Router: mean gate weight per stack", "prompt domain", "mean weight", &groups, &series, highlight)
}

/// The stack domains the router weighs, in the report's domain order.
pub(super) fn stack_domains(r: &DemoResults) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let keys = r.router_weights.iter().flat_map(|w| w.mean_weights.keys());
    for k in domain_order(r).iter().filter(|d| r.router_weights.iter().any(|w| w.mean_weights.contains_key(*d))).chain(keys) {
        if !seen.contains(k) {
            seen.push(k.clone());
        }
    }
    seen
}

/// Plot 6: validation loss per domain for the base, every stack ungated, and the routed stacks.
pub(super) fn modes(r: &DemoResults) -> Result<Option<String>> {
    let groups: Vec<String> = r.modes.iter().map(|m| m.domain.clone()).collect();
    let series = vec![
        BarSeries { label: "base".into(), color: color(6), values: r.modes.iter().map(|m| Some(m.base)).collect() },
        BarSeries { label: "ungated".into(), color: color(1), values: r.modes.iter().map(|m| Some(m.ungated)).collect() },
        BarSeries { label: "routed".into(), color: color(0), values: r.modes.iter().map(|m| Some(m.routed)).collect() },
    ];
    bar_plot("modes", "Validation loss by composition", "domain", "validation cross-entropy", &groups, &series, None)
}
