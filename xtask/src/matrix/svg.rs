//! `matrix.svg`: one panel per scenario, in a grid, each with one bar per contender showing its
//! median time relative to mimalloc's (log scale, bars grow from the 1.0 reference line: up is
//! slower, down is faster), the ratio written on each bar, and a legend of the contenders on top;
//! below them, one panel of the C programs ([`Groups`]: a group of bars per program).
//! Drawn with plotters' SVG backend (text stays SVG `<text>`; no font files needed).

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::fmt_ratio;
use super::run::Plan;
use super::stats::{self, Cell};
use super::{Contender, BASELINE};

/// Width and height of one scenario's panel, in pixels.
const PANEL: (u32, u32) = (470, 330);
/// Height of the title and legend strip.
const HEADER: u32 = 96;
/// Panels per row (fewer if there are fewer scenarios).
const COLUMNS: usize = 3;
const FONT: &str = "sans-serif";

/// The colour of a contender: one hue per mode (its runtime twin a paler tint of it), and one
/// per peer.
pub fn colour(c: &Contender) -> RGBColor {
    let mode = c.compiled.unwrap_or(c.name);
    let base = match mode {
        "minimal" => RGBColor(31, 119, 180),
        "fast" => RGBColor(44, 160, 44),
        "balanced" => RGBColor(148, 103, 189),
        "learning" => RGBColor(23, 190, 207),
        "research" => RGBColor(140, 86, 75),
        "glibc" => RGBColor(127, 127, 127),
        "mimalloc" => RGBColor(255, 127, 14),
        "jemalloc" => RGBColor(214, 39, 40),
        _ => RGBColor(0, 0, 0),
    };
    if c.is_runtime() {
        let tint = |x: u8| x + ((255 - u16::from(x)) * 11 / 20) as u8;
        RGBColor(tint(base.0), tint(base.1), tint(base.2))
    } else {
        base
    }
}

/// The x-axis label of a contender: `rt-` for the runtime twins.
pub fn short_name(c: &Contender) -> String {
    match c.compiled {
        Some(mode) => format!("rt-{mode}"),
        None => c.name.to_owned(),
    }
}

/// The y range of a panel: every ratio and 1.0 inside, with room for the labels.
pub fn y_range(ratios: &[f64]) -> (f64, f64) {
    let lo = ratios.iter().copied().fold(1.0, f64::min);
    let hi = ratios.iter().copied().fold(1.0, f64::max);
    ((lo / 1.6).min(0.8), (hi * 1.6).max(1.25))
}

/// The contender the bars are relative to: mimalloc, or the first one if it was not selected.
pub fn baseline(plan: &Plan) -> &'static Contender {
    plan.contenders
        .iter()
        .copied()
        .find(|c| c.name == BASELINE)
        .unwrap_or(plan.contenders[0])
}

/// A panel of grouped bars (the C programs): one group per program, one bar per contender,
/// each its median time relative to the baseline's.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    /// The panel's caption.
    pub caption: String,
    /// What the bars are relative to (the y axis says `× NAME`).
    pub baseline: String,
    /// The contenders of the bars (their colours), in bar order.
    pub contenders: Vec<&'static Contender>,
    /// Their names for the legend of a chart of its own (`mimalloc (Debian)`).
    pub labels: Vec<String>,
    /// Each group's name and its bars' ratios, in contender order (`None`: no bar).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
}

/// Height of the grouped-bars panel.
const GROUPS_HEIGHT: u32 = 400;

/// The chart as SVG text: a panel per scenario, and the grouped-bars panel of the C programs
/// below them (full width) if there is one.
pub fn chart(plan: &Plan, cells: &[Cell], groups: Option<&Groups>) -> Result<String, String> {
    let n_scen = plan.scenarios.len().max(1);
    let cols = COLUMNS.min(n_scen);
    let rows = n_scen.div_ceil(cols);
    let width = match groups {
        Some(_) => PANEL.0 * COLUMNS as u32,
        None => PANEL.0 * cols as u32,
    };
    let extra = groups.map_or(0, |_| GROUPS_HEIGHT);
    let size = (width, HEADER + PANEL.1 * rows as u32 + extra);
    let base = baseline(plan);
    let scale = plan.scale.map(|f| format!(", scale {f} (smoke)"));
    let title = format!(
        "Median time per op relative to {} (log scale; below 1 = faster), {} interleaved \
         repetition(s){}",
        base.name,
        plan.reps,
        scale.unwrap_or_default()
    );
    let legend: Vec<(String, RGBColor)> = (plan.contenders.iter())
        .map(|c| (c.name.to_owned(), colour(c)))
        .collect();
    let mut svg = String::new();
    draw(
        &mut svg,
        size,
        &title,
        &legend,
        Some((plan, cells, (rows, cols))),
        groups,
    )
    .map_err(|e| format!("matrix.svg: {e}"))?;
    Ok(svg)
}

/// A chart of the grouped-bars panel alone (`--c-only`'s c.svg), under `title`.
pub fn groups_chart(title: &str, groups: &Groups) -> Result<String, String> {
    let size = (PANEL.0 * COLUMNS as u32, HEADER + GROUPS_HEIGHT);
    let legend: Vec<(String, RGBColor)> = (groups.labels.iter().zip(&groups.contenders))
        .map(|(name, c)| (name.clone(), colour(c)))
        .collect();
    let mut svg = String::new();
    draw(&mut svg, size, title, &legend, None, Some(groups)).map_err(|e| format!("c.svg: {e}"))?;
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(
    svg: &mut String,
    size: (u32, u32),
    title: &str,
    legend: &[(String, RGBColor)],
    scenarios: Option<(&Plan, &[Cell], (usize, usize))>,
    groups: Option<&Groups>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, mut body) = root.split_vertically(HEADER);

    header.draw(&Text::new(
        title.to_owned(),
        (12, 10),
        (FONT, 19).into_font().color(&BLACK),
    ))?;
    // The legend: two rows of swatches.
    let per_row = legend.len().div_ceil(2).max(1);
    let slot = (size.0 as i32 - 24) / per_row as i32;
    for (i, (name, colour)) in legend.iter().enumerate() {
        let x = 12 + slot * (i % per_row) as i32;
        let y = 44 + 26 * (i / per_row) as i32;
        header.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], colour.filled()))?;
        header.draw(&Text::new(
            name.clone(),
            (x + 19, y + 1),
            (FONT, 13).into_font().color(&BLACK),
        ))?;
    }

    if let Some((plan, cells, grid)) = scenarios {
        let (panels, rest) = body.split_vertically(PANEL.1 * grid.0 as u32);
        body = rest;
        for (panel, scenario) in panels.split_evenly(grid).iter().zip(&plan.scenarios) {
            scenario_panel(panel, plan, cells, &scenario.name)?;
        }
    }
    if let Some(groups) = groups {
        groups_panel(&body, groups)?;
    }
    root.present()?;
    Ok(())
}

/// One scenario's panel: a bar per contender.
fn scenario_panel(
    panel: &Area,
    plan: &Plan,
    cells: &[Cell],
    scenario: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let base = baseline(plan);
    let n = plan.contenders.len();
    let base_median = stats::find(cells, scenario, base.name).and_then(|c| c.median_ns);
    let ratios: Vec<Option<f64>> = plan
        .contenders
        .iter()
        .map(|c| {
            let m = stats::find(cells, scenario, c.name).and_then(|x| x.median_ns);
            stats::ratio(m, base_median)
        })
        .collect();
    let present: Vec<f64> = ratios.iter().flatten().copied().collect();
    let (lo, hi) = y_range(&present);
    let caption = if base_median.is_some() {
        scenario.to_owned()
    } else {
        format!("{scenario} (no {} median: no bars)", base.name)
    };
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, (FONT, 17).into_font())
        .margin(8)
        .x_label_area_size(74)
        .y_label_area_size(46)
        .build_cartesian_2d((0..n).into_segmented(), (lo..hi).log_scale().base(2.0))?;
    // The x labels are drawn below (rotated, hanging from their tick): plotters centres a
    // rotated axis label on the tick, half of it inside the plot.
    let no_label = |_: &SegmentValue<usize>| String::new();
    let y_label = |v: &f64| format!("{v}");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&no_label)
        .y_labels(8)
        .y_label_formatter(&y_label)
        .y_label_style((FONT, 11).into_font())
        .y_desc(format!("× {}", base.name))
        .y_max_light_lines(3)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    let x_labels = plan.contenders.iter().enumerate().map(|(i, c)| {
        EmptyElement::at((SegmentValue::CenterOf(i), lo))
            + Text::new(
                short_name(c),
                (0, 9),
                (FONT, 12)
                    .into_font()
                    .transform(FontTransform::Rotate270)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            )
    });
    chart.draw_series(x_labels)?;

    let bars = ratios.iter().enumerate().filter_map(|(i, r)| {
        let r = (*r)?;
        let style = colour(plan.contenders[i]).filled();
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 1.0),
                (SegmentValue::Exact(i + 1), r),
            ],
            style,
        );
        bar.set_margin(0, 0, 3, 3);
        Some(bar)
    });
    chart.draw_series(bars)?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(SegmentValue::Exact(0), 1.0), (SegmentValue::Last, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    let labels = ratios.iter().enumerate().map(|(i, r)| {
        let (text, y, vpos) = match r {
            Some(r) if *r >= 1.0 => (fmt_ratio(*r).replace('×', ""), *r, VPos::Bottom),
            Some(r) => (fmt_ratio(*r).replace('×', ""), *r, VPos::Top),
            None => ("fail".to_owned(), 1.0, VPos::Bottom),
        };
        let text = base_median.map_or(String::new(), |_| text);
        Text::new(
            text,
            (SegmentValue::CenterOf(i), y),
            (FONT, 10)
                .into_font()
                .color(&RGBColor(40, 40, 40))
                .pos(Pos::new(HPos::Center, vpos)),
        )
    });
    chart.draw_series(labels)?;
    Ok(())
}

/// The grouped-bars panel: the groups side by side, their names below, each bar's ratio
/// written along it (rotated).
fn groups_panel(panel: &Area, g: &Groups) -> Result<(), Box<dyn std::error::Error>> {
    let n = g.contenders.len().max(1);
    let k = g.groups.len().max(1);
    let present: Vec<f64> = (g.groups.iter())
        .flat_map(|(_, r)| r.iter().flatten().copied())
        .collect();
    let (lo, hi) = y_range(&present);
    let (lo, hi) = (lo / 1.3, hi * 1.3);
    let mut chart = ChartBuilder::on(panel)
        .caption(g.caption.clone(), (FONT, 17).into_font())
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(46)
        .build_cartesian_2d(0f64..k as f64, (lo..hi).log_scale().base(2.0))?;
    let no_label = |_: &f64| String::new();
    let y_label = |v: &f64| format!("{v}");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2)
        .x_label_formatter(&no_label)
        .y_labels(8)
        .y_label_formatter(&y_label)
        .y_label_style((FONT, 11).into_font())
        .y_desc(format!("× {}", g.baseline))
        .y_max_light_lines(3)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    let names = g.groups.iter().enumerate().map(|(i, (name, _))| {
        EmptyElement::at((i as f64 + 0.5, lo))
            + Text::new(
                name.clone(),
                (0, 8),
                (FONT, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            )
    });
    chart.draw_series(names)?;
    // Group separators.
    chart.draw_series((1..k).map(|i| {
        PathElement::new(
            vec![(i as f64, lo), (i as f64, hi)],
            RGBColor(200, 200, 200).stroke_width(1),
        )
    }))?;
    let width = 0.86 / n as f64;
    let left = |group: usize, i: usize| group as f64 + 0.07 + width * i as f64;
    let bars = g
        .groups
        .iter()
        .enumerate()
        .flat_map(|(group, (_, ratios))| {
            ratios.iter().enumerate().filter_map(move |(i, r)| {
                let style = colour(g.contenders[i]).filled();
                let x = left(group, i);
                Some(Rectangle::new([(x, 1.0), (x + width * 0.85, (*r)?)], style))
            })
        });
    chart.draw_series(bars)?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (k as f64, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    // The ratios, along their bars: above a bar that rises, below one that falls.
    let labels = g
        .groups
        .iter()
        .enumerate()
        .flat_map(|(group, (_, ratios))| {
            ratios.iter().enumerate().filter_map(move |(i, r)| {
                let r = (*r)?;
                let x = left(group, i) + width * 0.85 / 2.0;
                let (hpos, dy) = if r >= 1.0 {
                    (HPos::Left, -3)
                } else {
                    (HPos::Right, 3)
                };
                Some(
                    EmptyElement::at((x, r))
                        + Text::new(
                            fmt_ratio(r).replace('×', ""),
                            (0, dy),
                            (FONT, 9)
                                .into_font()
                                .transform(FontTransform::Rotate270)
                                .color(&RGBColor(40, 40, 40))
                                .pos(Pos::new(hpos, VPos::Center)),
                        ),
                )
            })
        });
    chart.draw_series(labels)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::run::Sample;
    use crate::matrix::{contender, CONTENDERS};

    #[test]
    fn twins_are_paler_the_y_range_holds_every_bar_and_a_panel_per_scenario() {
        let fast = colour(contender("fast").unwrap());
        let twin = colour(contender("runtime-fast").unwrap());
        assert!(twin.0 > fast.0 && twin.1 > fast.1 && twin.2 > fast.2);
        let all: Vec<_> = CONTENDERS.iter().map(colour).collect();
        for (i, a) in all.iter().enumerate() {
            assert!(!all[..i].contains(a), "two contenders share a colour");
        }
        assert_eq!(
            short_name(contender("runtime-learning").unwrap()),
            "rt-learning"
        );
        let (lo, hi) = y_range(&[]);
        assert!(lo < 1.0 && hi > 1.0);
        let (lo, hi) = y_range(&[0.5, 3.0]);
        assert!(lo < 0.5 && hi > 3.0);
        let plan = Plan::of(1, None, &["vm", "tiny", "xmalloc", "json"]);
        let records = plan.records(|slot, _| match slot.contender {
            3 => Err("boom".into()),
            k => Ok(Sample::of(
                10,
                100 + 37 * k as u64 * (slot.scenario as u64 + 1),
                0,
                1,
            )),
        });
        let cells = stats::summarize(&plan, &records);
        let svg = chart(&plan, &cells, None).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for needle in ["xmalloc", "rt-balanced", "jemalloc", "× mimalloc", "fail"] {
            assert!(svg.contains(needle), "{needle}");
        }
        // One bar per successful cell (12 per scenario), plus the legend's 13 swatches.
        let rects = svg.matches("<rect").count();
        assert!(rects >= 4 * 12 + 13, "{rects} rects");
        // With the C programs' panel below: a group per program, a bar per ratio.
        let groups = Groups {
            caption: "C programs".into(),
            baseline: "mimalloc (Debian)".into(),
            contenders: CONTENDERS.iter().collect(),
            labels: CONTENDERS.iter().map(|c| c.name.to_owned()).collect(),
            groups: ["churn", "larson"]
                .map(|g| {
                    (
                        g.to_owned(),
                        (0..13).map(|k| Some(0.5 + k as f64 / 8.0)).collect(),
                    )
                })
                .to_vec(),
        };
        let both = chart(&plan, &cells, Some(&groups)).unwrap();
        assert_eq!(both.matches("<rect").count(), rects + 2 * 13);
        assert!(both.contains("larson") && both.contains("× mimalloc (Debian)"));
        let alone = groups_chart("C alone", &groups).unwrap();
        assert!(alone.contains("C alone") && alone.contains("churn"));
        assert_eq!(alone.matches("<rect").count(), 1 + 13 + 2 * 13);
    }
}
