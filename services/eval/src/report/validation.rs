//! Validation during training: the deterministic policy's community cost
//! on the validation weeks every few updates, beside the baselines' cost on
//! the same days, and the point whose policy a run keeps (the lowest cost).
//!
//! The validation weeks never train (the market skips them) and never
//! report (the result is on the test weeks): they only choose the
//! checkpoint, so the test result is not chosen on itself.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::plots::{colour, DrawResult, FONT};
use crate::compare::LEARNED;
use crate::error::EvalError;

/// A baseline's community cost on the validation days.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationBaseline {
    pub policy: String,
    pub community_cost: f64,
}

/// One evaluation of the policy of `policy_version`, trained for `update` updates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ValidationPoint {
    pub update: u64,
    pub policy_version: u64,
    pub community_cost: f64,
}

/// Every validation of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationCurve {
    /// Validation days each point was evaluated on.
    pub days: usize,
    /// Evaluated every this many updates (and after the last).
    pub every: u64,
    pub baselines: Vec<ValidationBaseline>,
    pub points: Vec<ValidationPoint>,
    /// The kept policy: the lowest validation cost, the earliest on a tie.
    pub best: Option<ValidationPoint>,
}

impl ValidationCurve {
    /// An empty curve; every baseline cost must be finite.
    pub fn new(
        days: usize,
        every: u64,
        baselines: Vec<ValidationBaseline>,
    ) -> Result<ValidationCurve, EvalError> {
        if let Some(b) = baselines.iter().find(|b| !b.community_cost.is_finite()) {
            return Err(EvalError::invalid(
                format!("validation.baselines[{}]", b.policy),
                "community cost must be finite",
            ));
        }
        Ok(ValidationCurve { days, every, baselines, points: Vec::new(), best: None })
    }

    /// Adds a point; `true` when it is the new best. A non-finite cost is
    /// refused (a diverged policy is never kept).
    pub fn record(&mut self, point: ValidationPoint) -> Result<bool, EvalError> {
        if !point.community_cost.is_finite() {
            return Err(EvalError::invalid(
                format!("validation.points[update {}]", point.update),
                "community cost must be finite",
            ));
        }
        self.points.push(point);
        let better = self.best.is_none_or(|b| point.community_cost < b.community_cost);
        if better {
            self.best = Some(point);
        }
        Ok(better)
    }

    /// The cost of baseline `policy`, if it was evaluated.
    pub fn baseline(&self, policy: &str) -> Option<f64> {
        self.baselines.iter().find(|b| b.policy == policy).map(|b| b.community_cost)
    }
}

/// Validation cost per update, the baselines as horizontal lines, the kept
/// point marked.
pub(super) fn validation_plot(path: &Path, curve: &ValidationCurve) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(50);
    header.draw_text(
        &format!("Validation cost ({} validation days, deterministic policy)", curve.days),
        &(FONT, 24).into_font().color(&BLACK),
        (20, 12),
    )?;
    let last = curve.points.iter().map(|p| p.update).max().unwrap_or(1).max(1) as f64;
    let costs = curve
        .points
        .iter()
        .map(|p| p.community_cost)
        .chain(curve.baselines.iter().map(|b| b.community_cost));
    let (lo, hi) =
        costs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| (lo.min(c), hi.max(c)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-3 * hi.abs().max(1.0));
    let mut chart = ChartBuilder::on(&body)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..last, lo - pad..hi + pad)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
        .x_desc("PPO update")
        .y_desc("community cost on the validation days")
        .label_style((FONT, 14))
        .draw()?;
    for b in &curve.baselines {
        let c = colour(&b.policy);
        chart
            .draw_series(LineSeries::new(
                [(0.0, b.community_cost), (last, b.community_cost)],
                c.stroke_width(2),
            ))?
            .label(b.policy.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    let learned = colour(LEARNED);
    let points: Vec<(f64, f64)> =
        curve.points.iter().map(|p| (p.update as f64, p.community_cost)).collect();
    chart
        .draw_series(LineSeries::new(points.iter().copied(), learned.stroke_width(2)))?
        .label(LEARNED)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], learned.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, learned.filled())))?;
    if let Some(best) = curve.best {
        chart
            .draw_series([Circle::new(
                (best.update as f64, best.community_cost),
                8,
                BLACK.stroke_width(2),
            )])?
            .label(format!("kept: update {}", best.update))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(update: u64, cost: f64) -> ValidationPoint {
        ValidationPoint { update, policy_version: update + 1, community_cost: cost }
    }

    #[test]
    fn the_lowest_cost_is_kept_and_a_tie_keeps_the_earlier() {
        let mut c = ValidationCurve::new(
            49,
            10,
            vec![ValidationBaseline { policy: "rule-based".into(), community_cost: 5.0 }],
        )
        .unwrap();
        assert!(c.record(point(10, 4.0)).unwrap());
        assert!(!c.record(point(20, 4.5)).unwrap());
        assert!(c.record(point(30, 3.0)).unwrap());
        assert!(!c.record(point(40, 3.0)).unwrap());
        assert_eq!(c.best, Some(point(30, 3.0)));
        assert_eq!(c.points.len(), 4);
        assert_eq!(c.baseline("rule-based"), Some(5.0));
    }

    #[test]
    fn non_finite_costs_are_refused_naming_the_point() {
        let mut c = ValidationCurve::new(7, 5, Vec::new()).unwrap();
        let e = c.record(point(5, f64::NAN)).unwrap_err().to_string();
        assert!(e.contains("update 5"), "{e}");
        assert!(c.points.is_empty() && c.best.is_none());
        let bad = ValidationBaseline { policy: "grid-only".into(), community_cost: f64::INFINITY };
        assert!(ValidationCurve::new(7, 5, vec![bad])
            .unwrap_err()
            .to_string()
            .contains("grid-only"));
    }

    #[test]
    fn the_plot_is_a_png() {
        let dir = std::env::temp_dir().join(format!("peergrid-validation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = ValidationCurve::new(
            7,
            2,
            vec![ValidationBaseline { policy: "rule-based".into(), community_cost: 9.0 }],
        )
        .unwrap();
        for (u, cost) in [(2, 10.0), (4, 8.0), (6, 8.5)] {
            c.record(point(u, cost)).unwrap();
        }
        super::super::plots::register_font().unwrap();
        let path = dir.join("validation.png");
        validation_plot(&path, &c).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
