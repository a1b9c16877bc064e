//! The report's PNG plots, drawn with plotters' bitmap backend.
//!
//! Text goes through `ab_glyph` with DejaVu Sans compiled into the binary
//! (`assets/fonts`, Bitstream Vera licence beside it), so plots look the same
//! on every machine and need no system fonts. Each policy keeps one colour
//! in every plot.

use std::path::Path;
use std::sync::OnceLock;

use peergrid_core::kpi::Kpis;
use peergrid_core::simulation::SlotRecord;
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::day::RepresentativeDay;
use super::table::KPI_COLUMNS;
use super::LearningPoint;
use crate::compare::{EvalScenario, Evaluation, GRID_ONLY, LEARNED, MPC, OPTIMUM, RULE_BASED};
use crate::error::EvalError;

pub(super) const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// A plot the report links to.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Plot {
    pub file: String,
    pub title: String,
    /// The policy a day plot shows.
    pub policy: Option<String>,
}

pub(super) fn register_font() -> Result<(), EvalError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(EvalError::Plot {
            file: "DejaVuSans.ttf".into(),
            reason: "the bundled font does not parse".into(),
        })
    }
}

/// The colour of a policy, the same in every plot.
pub(super) fn colour(policy: &str) -> RGBColor {
    match policy {
        GRID_ONLY => RGBColor(127, 127, 127),
        RULE_BASED => RGBColor(31, 119, 180),
        LEARNED => RGBColor(255, 127, 14),
        OPTIMUM => RGBColor(44, 160, 44),
        MPC => RGBColor(148, 103, 189),
        _ => RGBColor(140, 86, 75),
    }
}

fn plot_error(file: &str) -> impl Fn(Box<dyn std::error::Error>) -> EvalError + '_ {
    move |e| EvalError::Plot { file: file.to_string(), reason: e.to_string() }
}

/// A `(lo, hi)` range covering `values` (and 0) with a margin.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad)
}

/// Draws every plot into `dir` and says which files it wrote.
pub(super) fn draw_all(
    dir: &Path,
    info: &super::RunInfo,
    scenario: &EvalScenario,
    evaluation: &Evaluation,
    day: &RepresentativeDay,
    curve: &[LearningPoint],
) -> Result<Vec<Plot>, EvalError> {
    register_font()?;
    let mut plots = Vec::new();
    let rows: Vec<(&str, &Kpis)> =
        evaluation.rows.iter().map(|r| (r.policy.as_str(), &r.kpis)).collect();
    let file = "kpis.png".to_string();
    kpi_bars(&dir.join(&file), &rows).map_err(plot_error(&file))?;
    plots.push(Plot { file, title: "KPIs per policy".into(), policy: None });
    let storage_kwh: f64 =
        scenario.prosumers.iter().filter_map(|p| p.battery.map(|b| b.capacity_kwh)).sum();
    let hours = scenario.ds.slot_hours();
    for r in &evaluation.rows {
        let file = format!("day-{}.png", r.policy);
        let title =
            format!("{}: held-out day {} ({})", r.policy, day.day.number, day.day.weekday_name());
        let Some(records) = r.records.get(day.records.clone()) else {
            return Err(EvalError::invalid(
                format!("rows[{}].records", r.policy),
                format!(
                    "has {} slots, the representative day needs {:?}",
                    r.records.len(),
                    day.records
                ),
            ));
        };
        day_plot(&dir.join(&file), &title, &r.policy, records, storage_kwh, hours)
            .map_err(plot_error(&file))?;
        plots.push(Plot { file, title, policy: Some(r.policy.clone()) });
    }
    if let Some(validation) = &info.validation {
        let file = "validation-curve.png".to_string();
        super::validation::validation_plot(&dir.join(&file), validation)
            .map_err(plot_error(&file))?;
        plots.push(Plot { file, title: "Validation cost during training".into(), policy: None });
    }
    if !curve.is_empty() {
        let file = "learning-curve.png".to_string();
        learning_curve(&dir.join(&file), curve).map_err(plot_error(&file))?;
        plots.push(Plot { file, title: "Learning curve".into(), policy: None });
    }
    Ok(plots)
}

pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A named, coloured line of `(x, y)` points.
type Line<'a> = (&'a str, RGBColor, &'a Vec<(f64, f64)>);

/// One bar chart per KPI of the table, policies side by side.
fn kpi_bars(path: &Path, rows: &[(&str, &Kpis)]) -> DrawResult {
    let root = BitMapBackend::new(path, (1500, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    title.draw_text("KPIs per policy", &(FONT, 28).into_font().color(&BLACK), (20, 12))?;
    // Segments 0..=n−1, one per policy (at least two so the axis is not empty).
    let n = rows.len().max(2) as i32;
    for (area, column) in body.split_evenly((3, 3)).iter().zip(KPI_COLUMNS.iter()) {
        let (name, get, digits) = *column;
        let values: Vec<f64> = rows.iter().map(|(_, k)| get(k)).collect();
        let (lo, hi) = padded_range(values.iter().copied().chain(values.iter().map(|v| v * 1.12)));
        let mut chart = ChartBuilder::on(area)
            .caption(name, (FONT, 20))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d((0..n - 1).into_segmented(), lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    rows.get(*i as usize).map_or(String::new(), |(p, _)| p.to_string())
                }
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let i = i as i32;
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
                colour(rows[i as usize].0).filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?;
        let label = (FONT, 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            Text::new(
                format!("{v:.digits$}"),
                (SegmentValue::CenterOf(i as i32), *v),
                label.clone(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// A day of one policy: community energy flows, battery state of charge,
/// and prices.
fn day_plot(
    path: &Path,
    title: &str,
    policy: &str,
    records: &[SlotRecord],
    storage_kwh: f64,
    hours: f64,
) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(50);
    header.draw_text(title, &(FONT, 26).into_font().color(&BLACK), (20, 12))?;
    let panels = body.split_evenly((3, 1));
    let x_end = records.len() as f64 * hours;
    // Energy per slot at the slot's middle, stored energy at its end, prices
    // as steps over the slot.
    let mid = |i: usize| (i as f64 + 0.5) * hours;
    let energy = |get: fn(&SlotRecord) -> f64| -> Vec<(f64, f64)> {
        records.iter().enumerate().map(|(i, r)| (mid(i), get(r))).collect()
    };
    let steps = |get: fn(&SlotRecord) -> f64| -> Vec<(f64, f64)> {
        records
            .iter()
            .enumerate()
            .flat_map(|(i, r)| [(i as f64 * hours, get(r)), ((i + 1) as f64 * hours, get(r))])
            .collect()
    };
    let load = energy(|r| r.load_kwh);
    let pv = energy(|r| r.pv_kwh);
    let grid = energy(|r| r.grid_import_kwh - r.grid_export_kwh);
    let battery = energy(|r| r.battery_charged_kwh - r.battery_discharged_kwh);
    let (lo, hi) = padded_range(load.iter().chain(&pv).chain(&grid).chain(&battery).map(|p| p.1));
    let series = [
        ("load", RGBColor(0, 0, 0), &load),
        ("PV", RGBColor(230, 171, 2), &pv),
        ("net grid import (import − export)", RGBColor(214, 39, 40), &grid),
        ("battery (charge − discharge)", colour(policy), &battery),
    ];
    lines_panel(&panels[0], "Community energy per slot", "kWh", (x_end, lo, hi), &series)?;

    let soc: Vec<(f64, f64)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                (i + 1) as f64 * hours,
                if storage_kwh > 0.0 { 100.0 * r.stored_kwh / storage_kwh } else { 0.0 },
            )
        })
        .collect();
    lines_panel(
        &panels[1],
        "Community battery state of charge (end of slot)",
        "% of capacity",
        (x_end, 0.0, 100.0),
        &[("SoC (home batteries and EVs at home)", colour(policy), &soc)],
    )?;

    let retail = steps(|r| r.retail_per_kwh);
    let feed_in = steps(|r| r.feed_in_per_kwh);
    let (_, hi) = padded_range(retail.iter().map(|p| p.1));
    let clearing: Vec<(f64, f64)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.clearing_price_per_kwh.map(|p| (mid(i), p)))
        .collect();
    let caption = if policy == OPTIMUM {
        "Prices (the LP has no auction: no clearing price)"
    } else {
        "Prices"
    };
    let mut chart = price_chart(&panels[2], caption, (x_end, hi))?;
    for (name, c, points) in
        [("retail", RGBColor(214, 39, 40), &retail), ("feed-in", RGBColor(140, 86, 75), &feed_in)]
    {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    if !clearing.is_empty() {
        let c = colour(policy);
        chart
            .draw_series(clearing.iter().map(|p| Circle::new(*p, 5, c.filled())))?
            .label("P2P clearing price")
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// Axes with whole hours on x.
fn hour_mesh<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, unit: &str) -> DrawResult {
    chart
        .configure_mesh()
        .x_labels(13)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("hour of day")
        .y_desc(unit)
        .label_style((FONT, 14))
        .draw()?;
    Ok(())
}

fn price_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    (x_end, hi): (f64, f64),
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..hi)?;
    hour_mesh(&mut chart, "per kWh")?;
    Ok(chart)
}

/// A panel of named lines.
fn lines_panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    (x_end, lo, hi): (f64, f64, f64),
    series: &[Line<'_>],
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, lo..hi)?;
    hour_mesh(&mut chart, unit)?;
    for (name, c, points) in series {
        let c = *c;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart)?;
    Ok(())
}

/// Mean episode return and community cost per PPO update.
fn learning_curve(path: &Path, curve: &[LearningPoint]) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(50);
    header.draw_text("Learning curve", &(FONT, 26).into_font().color(&BLACK), (20, 12))?;
    let panels = body.split_evenly((2, 1));
    let first = curve.first().map_or(0, |p| p.update) as f64;
    let last = curve.last().map_or(1, |p| p.update) as f64;
    let x_range = if last > first { first..last } else { first - 0.5..first + 0.5 };
    let learned = colour(LEARNED);
    for (area, caption, unit, get) in [
        (
            &panels[0],
            "Mean episode return",
            "return",
            (|p: &LearningPoint| p.mean_episode_return) as fn(&LearningPoint) -> f64,
        ),
        (&panels[1], "Community cost of the update's episodes", "cost", |p: &LearningPoint| {
            p.community_cost
        }),
    ] {
        let values: Vec<f64> = curve.iter().map(get).collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.1).max(1e-3 * hi.abs().max(1.0));
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 20))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.clone(), lo - pad..hi + pad)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .x_desc("PPO update")
            .y_desc(unit)
            .label_style((FONT, 14))
            .draw()?;
        chart.draw_series(LineSeries::new(
            curve.iter().map(|p| (p.update as f64, get(p))),
            learned.stroke_width(2),
        ))?;
        if curve.len() <= 60 {
            chart.draw_series(
                curve.iter().map(|p| Circle::new((p.update as f64, get(p)), 3, learned.filled())),
            )?;
        }
    }
    root.present()?;
    Ok(())
}
