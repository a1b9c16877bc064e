//! The KPI table: which KPIs a report shows, how they are rounded, and the
//! Markdown that renders them (readable in a terminal, pasteable into a
//! README, parseable back by tests).

use peergrid_core::kpi::Kpis;

/// A KPI column: header, accessor, decimals.
pub type KpiColumn = (&'static str, fn(&Kpis) -> f64, usize);

/// Column headers of the report's table and how to read each from [`Kpis`].
pub const KPI_COLUMNS: [KpiColumn; 9] = [
    ("community cost", |k| k.community_cost, 2),
    ("grid import kWh", |k| k.grid_import_kwh, 1),
    ("peak import kW", |k| k.peak_import_kw, 1),
    ("P2P kWh", |k| k.p2p_kwh, 1),
    ("self-sufficiency %", |k| k.self_sufficiency_pct, 1),
    ("self-consumption %", |k| k.self_consumption_pct, 1),
    ("CO2 kg", |k| k.co2_kg, 1),
    ("battery cycles", |k| k.battery_cycles, 2),
    ("Gini (savings)", |k| k.gini_savings, 3),
];

/// Shown after the others only when some row pays a demand charge, so a
/// tariff without one gives the table it always had.
pub const DEMAND_CHARGE_COLUMN: KpiColumn = ("demand charge", |k| k.demand_charge, 2);

/// The columns of a table of `rows`.
pub fn columns_for(rows: &[(&str, &Kpis)]) -> Vec<KpiColumn> {
    let mut columns = KPI_COLUMNS.to_vec();
    if rows.iter().any(|(_, k)| k.demand_charge != 0.0) {
        columns.push(DEMAND_CHARGE_COLUMN);
    }
    columns
}

/// A KPI as the table shows it.
pub fn format_kpi(column: &KpiColumn, k: &Kpis) -> String {
    format!("{:.*}", column.2, (column.1)(k))
}

/// Renders one row per `(policy, kpis)` as a Markdown table.
pub fn kpi_table(rows: &[(&str, &Kpis)]) -> String {
    let columns = columns_for(rows);
    let mut header = vec!["policy".to_string()];
    header.extend(columns.iter().map(|(name, _, _)| name.to_string()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, k)| {
            let mut row = vec![name.to_string()];
            row.extend(columns.iter().map(|c| format_kpi(c, k)));
            row
        })
        .collect();
    render(&header, &body)
}

/// A Markdown table, first column left-aligned, the others right-aligned.
pub fn render(header: &[String], body: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            body.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = line(header);
    out.push('\n');
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| if c == 0 { "-".repeat(*w) } else { format!("{}:", "-".repeat(w - 1)) })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in body {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_row_per_policy_and_aligned_columns() {
        let k = Kpis { community_cost: 12.345, grid_import_kwh: 100.0, ..Kpis::default() };
        let t = kpi_table(&[("grid-only", &k), ("rule-based", &k)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| policy") && lines[0].contains("community cost"));
        assert!(lines[2].contains("12.35") && lines[2].contains("100.0"));
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()));
        assert!(!t.contains("demand charge"));
        let charged = Kpis { demand_charge: 3.5, ..k.clone() };
        let t = kpi_table(&[("grid-only", &k), ("mpc", &charged)]);
        assert!(t.lines().next().unwrap().ends_with("| demand charge |"), "{t}");
        assert!(t.contains("|          3.50 |") && t.contains("|          0.00 |"), "{t}");
    }
}
