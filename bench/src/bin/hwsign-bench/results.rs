//! The run's results as JSON (`target/bench/results.json`, or `--json PATH`) and an SVG chart next
//! to it (`…/results.svg`): round-trip latency distributions of the hwsign agent, OpenSSH
//! ssh-agent and the echo floor (the same raw client, CDF on a log time axis), and the verify cost
//! per stage (one stacked bar). The SVG is written by hand: no plotting dependency.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::figure::{Figure, Goal};
use crate::ssh_agent::RttSamples;
use crate::verify_stages::Stage;

/// Everything a run produced.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Every figure, in report order.
    pub figures: Vec<Figure>,
    /// Round-trip samples of the raw client, if measured.
    pub samples: Option<RttSamples>,
    /// Verify cost per stage (µs), if measured.
    pub stages: Option<Vec<Stage>>,
}

fn figure_json(figure: &Figure) -> Value {
    let (op, goal) = match figure.goal {
        Goal::AtLeast(g) => (">=", g),
        Goal::AtMost(g) => ("<=", g),
    };
    json!({
        "name": figure.name,
        "value": figure.value,
        "goal": {"op": op, "value": goal},
        "pass": figure.passes(),
        "info": figure.name.starts_with("info."),
        "detail": figure.detail,
        "reason": figure.reason,
    })
}

fn micros(samples: &[Duration]) -> Vec<f64> {
    samples
        .iter()
        .map(|d| (d.as_secs_f64() * 1e7).round() / 10.0)
        .collect()
}

/// Percentiles of a sorted slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn sorted(values: Vec<f64>) -> Vec<f64> {
    let mut values = values;
    values.sort_by(f64::total_cmp);
    values
}

/// Writes `path` (JSON) and the chart beside it (same name, `.svg`).
pub(crate) fn write(results: &Results, header: &Value, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let series = results.samples.as_ref().map(|s| {
        vec![
            ("hwsign agent", sorted(micros(&s.hwsign))),
            ("OpenSSH ssh-agent", sorted(micros(&s.ssh_agent))),
            ("echo floor", sorted(micros(&s.echo))),
        ]
    });
    let distributions: Value = series.as_ref().map_or(Value::Null, |series| {
        series
            .iter()
            .map(|(name, values)| {
                json!({
                    "name": name,
                    "count": values.len(),
                    "p50_us": percentile(values, 0.5),
                    "p90_us": percentile(values, 0.9),
                    "p99_us": percentile(values, 0.99),
                    "max_us": percentile(values, 1.0),
                    // Every 1/200th quantile: enough to redraw the CDF.
                    "quantiles_us": (0..=200).map(|i| percentile(values, f64::from(i) / 200.0)).collect::<Vec<_>>(),
                })
            })
            .collect()
    });
    let stages: Value = results.stages.as_ref().map_or(Value::Null, |stages| {
        stages
            .iter()
            .map(|(name, us)| json!({"stage": name, "cpu_us": (us * 10.0).round() / 10.0}))
            .collect()
    });
    let document = json!({
        "run": header,
        "figures": results.figures.iter().map(figure_json).collect::<Vec<_>>(),
        "round_trips": distributions,
        "verify_stages": stages,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&document)?)?;
    let svg = chart(series.as_deref(), results.stages.as_deref());
    std::fs::write(path.with_extension("svg"), svg)?;
    Ok(())
}

const WIDTH: f64 = 760.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#7f7f7f", "#2ca02c"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart: a CDF panel on a log10 time axis, then a stacked bar of verify stages.
fn chart(series: Option<&[(&str, Vec<f64>)]>, stages: Option<&[Stage]>) -> String {
    let height = 560.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    // Panel 1: CDFs.
    let (left, top, w, h) = (70.0, 40.0, 640.0, 280.0);
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="24" font-size="15" font-weight="bold">Sign round trip, one connection, sequential (same raw client): CDF</text>"#
    );
    match series {
        Some(series) if series.iter().all(|(_, v)| !v.is_empty()) => {
            let lo = series
                .iter()
                .map(|(_, v)| percentile(v, 0.0))
                .fold(f64::INFINITY, f64::min)
                .max(1.0);
            let hi = series
                .iter()
                .map(|(_, v)| percentile(v, 0.995))
                .fold(0.0, f64::max)
                .max(lo * 2.0);
            let (l0, l1) = (lo.log10().floor(), hi.log10().ceil());
            let x = |us: f64| left + (us.max(lo).log10() - l0) / (l1 - l0) * w;
            let y = |q: f64| top + h - q * h;
            let _ = writeln!(
                svg,
                r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##
            );
            let mut decade = l0;
            while decade <= l1 {
                for m in [1.0, 2.0, 5.0] {
                    let v = 10f64.powf(decade) * m;
                    if v.log10() > l1 + 1e-9 {
                        break;
                    }
                    let px = x(v);
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle">{v} µs</text>"##,
                        top + h,
                        top + h + 16.0
                    );
                }
                decade += 1.0;
            }
            for q in [0.25, 0.5, 0.75, 0.9, 0.99] {
                let py = y(q);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{left}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">p{}</text>"##,
                    left + w,
                    left - 6.0,
                    py + 4.0,
                    (q * 100.0) as u32
                );
            }
            for (i, (name, values)) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let n = values.len();
                let step = (n / 400).max(1);
                let mut points = String::new();
                for (k, v) in values.iter().enumerate().step_by(step) {
                    let _ = write!(
                        points,
                        "{:.1},{:.1} ",
                        x(*v),
                        y(k as f64 / (n - 1).max(1) as f64)
                    );
                }
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#
                );
                let ly = top + 16.0 + i as f64 * 18.0;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{ly:.1}">{} — p50 {:.1} µs, p99 {:.1} µs</text>"#,
                    left + w - 300.0,
                    ly - 6.0,
                    left + w - 280.0,
                    escape(name),
                    percentile(values, 0.5),
                    percentile(values, 0.99)
                );
            }
        }
        _ => {
            let _ = writeln!(
                svg,
                r#"<text x="{left}" y="{}">round trips not measured in this run</text>"#,
                top + 20.0
            );
        }
    }
    // Panel 2: verify stages, one stacked bar.
    let (top2, bar_h) = (top + h + 70.0, 40.0);
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{}" font-size="15" font-weight="bold">Verifier::verify, CPU per request by stage (one core)</text>"#,
        top2 - 14.0
    );
    match stages {
        Some(stages) if !stages.is_empty() => {
            let total: f64 = stages.iter().map(|(_, us)| us).sum();
            let mut at = left;
            for (i, (name, us)) in stages.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let width = if total > 0.0 { us / total * w } else { 0.0 };
                let _ = writeln!(
                    svg,
                    r#"<rect x="{at:.1}" y="{top2}" width="{width:.1}" height="{bar_h}" fill="{color}"/>"#
                );
                let ly = top2 + bar_h + 20.0 + i as f64 * 18.0;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{left}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly:.1}">{} — {us:.1} µs ({:.0} %)</text>"#,
                    ly - 10.0,
                    left + 18.0,
                    escape(name),
                    if total > 0.0 { us / total * 100.0 } else { 0.0 }
                );
                at += width;
            }
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">total {total:.1} µs</text>"#,
                left + w,
                top2 - 14.0
            );
        }
        _ => {
            let _ = writeln!(
                svg,
                r#"<text x="{left}" y="{}">verify stages not measured in this run</text>"#,
                top2 + 20.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
