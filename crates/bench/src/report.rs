//! Rows: one per scenario, printed as it finishes, all written to `results.json` and, at the end, as a
//! Markdown table. `ratio` is always `ours / baseline`.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub ours: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub what: String,
    pub baseline_name: Option<String>,
    pub target: String,
    pub target_met: Option<bool>,
    /// Scenario-specific figures (`p50_ms`…, `bytes_per_webhook`, counts, errors).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(id: &str, what: &str, ours: f64, unit: &str) -> Self {
        Self {
            id: id.to_owned(),
            ours,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            what: what.to_owned(),
            baseline_name: None,
            target: String::new(),
            target_met: None,
            extra: Map::new(),
        }
    }

    /// Sets the baseline and the ratio `ours / baseline`.
    pub fn baseline(mut self, name: &str, value: f64) -> Self {
        self.baseline = Some(value);
        self.baseline_name = Some(name.to_owned());
        self.ratio = (value > 0.0).then(|| self.ours / value);
        self
    }

    pub fn target(mut self, text: &str, met: bool) -> Self {
        self.target = text.to_owned();
        self.target_met = Some(met);
        self
    }

    pub fn extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The error of a scenario that failed to run.
    pub fn error(&self) -> Option<&Value> {
        self.extra.get("error")
    }

    /// The one line printed when the scenario ends.
    pub fn line(&self) -> String {
        let base = match (&self.baseline, &self.baseline_name) {
            (Some(b), Some(n)) => format!("baseline {} ({n})", num(*b)),
            _ => "baseline -".to_owned(),
        };
        let ratio = self.ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
        format!(
            "{:<9} ours {} {:<14} {base:<40} ratio {ratio:<7} {}",
            self.id,
            num(self.ours),
            self.unit,
            self.target_note()
        )
    }

    fn target_note(&self) -> String {
        match self.target_met {
            Some(true) => format!("target {} met", self.target),
            Some(false) => format!("target {} MISSED", self.target),
            None => String::new(),
        }
    }
}

/// One row for a scenario run several times: the median run's row (by `ours`; the lower middle for an
/// even count), with `runs` = every run's `ours` in the order they ran. `None` when `rows` is empty.
pub fn median_of(rows: Vec<Row>) -> Option<Row> {
    let runs: Vec<f64> = rows.iter().map(|r| r.ours).collect();
    let mut sorted = rows;
    sorted.sort_by(|a, b| a.ours.total_cmp(&b.ours));
    let n = sorted.len();
    let mut row = sorted.into_iter().nth(n.checked_sub(1)? / 2)?;
    if n > 1 {
        row.what = format!("{}; median of {n} runs", row.what);
    }
    Some(row.extra("runs", runs))
}

/// The median of `values` (the lower middle for an even count, as [`median_of`]); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

/// A number shown with sensible precision.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[derive(Serialize)]
struct Results<'a> {
    machine: &'a str,
    mode: &'a str,
    /// 1/5/15-minute load averages at the start and at the end of the run.
    load_average: [&'a str; 2],
    scenarios: &'a [Row],
}

/// Writes `{"machine", "mode", "load_average", "scenarios": [...]}` to `path` (creating its directory).
pub fn write_json(
    path: &Path,
    machine: &str,
    mode: &str,
    load_average: [&str; 2],
    rows: &[Row],
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Results {
        machine,
        mode,
        load_average,
        scenarios: rows,
    })
    .context("cannot encode results")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The Markdown table for docs/BENCHMARKS.md.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| id | what | ours | unit | baseline | ratio | target | met |\n|---|---|---:|---|---|---:|---|---|\n",
    );
    for r in rows {
        let baseline = match (&r.baseline, &r.baseline_name) {
            (Some(b), Some(n)) => format!("{} ({n})", num(*b)),
            _ => "—".to_owned(),
        };
        let met = match r.target_met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {baseline} | {} | {} | {met} |\n",
            r.id,
            r.what,
            num(r.ours),
            r.unit,
            r.ratio.map_or("—".to_owned(), |x| format!("{x:.3}")),
            if r.target.is_empty() {
                "—"
            } else {
                &r.target
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_schema_fields_and_the_ratio() -> Result<()> {
        let row = Row::new("S2", "e2e", 500.0, "events/s")
            .baseline("L-http", 1000.0)
            .target(">= 50% of L-http", true)
            .extra("errors", 0);
        let v = serde_json::to_value(&row)?;
        for key in ["id", "ours", "unit", "baseline", "ratio", "errors"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert_eq!(v["ratio"], 0.5);
        assert!(markdown(&[row]).contains("| S2 | e2e | 500 | events/s | 1000 (L-http) | 0.500 |"));
        Ok(())
    }

    #[test]
    fn the_median_run_keeps_its_own_ratio_and_lists_every_run() -> Result<()> {
        let run =
            |ours: f64| Row::new("S3", "fan-out", ours, "deliveries/s").baseline("L-http", 100.0);
        let row = median_of(vec![run(30.0), run(10.0), run(20.0)]).context("no row")?;
        assert_eq!(row.ours, 20.0);
        assert_eq!(row.ratio, Some(0.2));
        assert_eq!(row.what, "fan-out; median of 3 runs");
        assert_eq!(
            serde_json::to_value(&row)?["runs"],
            serde_json::json!([30.0, 10.0, 20.0])
        );
        assert!(median_of(Vec::new()).is_none());
        Ok(())
    }

    #[test]
    fn a_median_of_nothing_is_none_and_of_two_the_lower() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0]), Some(1.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }
}
