//! A sweep's results for people: the table sorted by the metric, and `sweep.svg`, the
//! metric against each hyper-parameter and the best value found so far.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::record::{Status, TrialRecord};
use super::space::{Range, Space};
use super::trial::MetricKey;

/// Each trial's latest record (its last rung), best first; failed trials last.
pub fn ranked(records: &[TrialRecord], metric: &MetricKey) -> Vec<TrialRecord> {
    let mut latest: BTreeMap<usize, &TrialRecord> = BTreeMap::new();
    for r in records {
        // Records arrive in order: a later one of the same rung (pruned) replaces it.
        let keep = latest.get(&r.trial).is_none_or(|old| r.rung >= old.rung);
        if keep {
            latest.insert(r.trial, r);
        }
    }
    let mut out: Vec<TrialRecord> = latest.into_values().cloned().collect();
    out.sort_by(|a, b| {
        // No value last; then trials that went further first, then by value.
        let key = |r: &TrialRecord| (r.value.is_none(), std::cmp::Reverse(r.rung));
        key(a)
            .cmp(&key(b))
            .then_with(|| metric.order(a.value, b.value))
            .then_with(|| a.trial.cmp(&b.trial))
    });
    out
}

/// The results table, one row per trial, best first.
pub fn table(ranked: &[TrialRecord], space: &Space, metric: &MetricKey) -> String {
    let mut header = vec!["rank".to_string(), "trial".to_string()];
    header.extend(space.dims.iter().map(|d| d.name.clone()));
    header.extend([
        "epochs".to_string(),
        metric.name.clone(),
        "status".to_string(),
    ]);
    let mut rows = vec![header];
    for (i, r) in ranked.iter().enumerate() {
        let mut row = vec![(i + 1).to_string(), r.trial.to_string()];
        row.extend(
            space
                .dims
                .iter()
                .map(|d| r.config.get(&d.name).cloned().unwrap_or_default()),
        );
        row.push(r.epochs.to_string());
        row.push(r.value.map_or("-".to_string(), |v| format!("{v:.4}")));
        row.push(match (r.status, &r.message) {
            (Status::Failed, Some(m)) => format!("failed: {m}"),
            (s, _) => status_name(s).to_string(),
        });
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Done => "done",
        Status::EarlyStopped => "early stopped",
        Status::Pruned => "pruned",
        Status::Failed => "failed",
    }
}

const PANEL_W: f64 = 260.0;
const PANEL_H: f64 = 200.0;
const MARGIN: f64 = 46.0;

/// `sweep.svg`: one scatter panel per hyper-parameter (the metric of each trial's last
/// rung against its value; log axes for log ranges, categories for lists) and a panel
/// of the best value so far against the trials in the order they finished.
pub fn svg(records: &[TrialRecord], space: &Space, metric: &MetricKey) -> String {
    let ranked = ranked(records, metric);
    let finished: Vec<&TrialRecord> = ranked.iter().filter(|r| r.value.is_some()).collect();
    let panels = space.dims.len() + 1;
    let width = panels as f64 * (PANEL_W + MARGIN) + MARGIN;
    let height = PANEL_H + 2.0 * MARGIN;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let values: Vec<f64> = finished.iter().filter_map(|r| r.value).collect();
    let (ylo, yhi) = bounds(&values);
    for (p, dim) in space.dims.iter().enumerate() {
        let x0 = MARGIN + p as f64 * (PANEL_W + MARGIN);
        frame(&mut s, x0, &dim.name, &metric.name, ylo, yhi);
        let position = |v: &str| -> Option<f64> {
            match &dim.range {
                Range::Choice(items) => {
                    let i = items.iter().position(|x| x == v)?;
                    Some((i as f64 + 0.5) / items.len() as f64)
                }
                Range::LogUniform { lo, hi } => {
                    let v: f64 = v.parse().ok()?;
                    Some((v.ln() - lo.ln()) / (hi.ln() - lo.ln()))
                }
                Range::Uniform { lo, hi } => Some((v.parse::<f64>().ok()? - lo) / (hi - lo)),
                Range::Int { lo, hi } => {
                    let v: f64 = v.parse().ok()?;
                    Some((v - *lo as f64 + 0.5) / ((hi - lo) as f64 + 1.0))
                }
            }
        };
        for r in &finished {
            let (Some(v), Some(x)) = (r.value, r.config.get(&dim.name).and_then(|c| position(c)))
            else {
                continue;
            };
            let cx = x0 + x.clamp(0.0, 1.0) * PANEL_W;
            let cy = MARGIN + PANEL_H - scale(v, ylo, yhi) * PANEL_H;
            let color = if r.status == Status::Pruned {
                "#bbbbbb"
            } else {
                "#1f77b4"
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.5" fill="{color}"><title>trial {} {}={}: {v:.4}</title></circle>"#,
                r.trial, dim.name, r.config[&dim.name]
            );
        }
        axis_labels(&mut s, x0, &dim.range);
    }
    // Best so far, in the order results arrived.
    let x0 = MARGIN + space.dims.len() as f64 * (PANEL_W + MARGIN);
    frame(
        &mut s,
        x0,
        "results in order",
        &format!("best {}", metric.name),
        ylo,
        yhi,
    );
    let mut best: Option<f64> = None;
    let arrived: Vec<f64> = records.iter().filter_map(|r| r.value).collect();
    let mut points = Vec::new();
    for (i, v) in arrived.iter().enumerate() {
        if best.is_none_or(|b| metric.better(*v, b)) {
            best = Some(*v);
        }
        let x = x0 + (i as f64 + 0.5) / arrived.len().max(1) as f64 * PANEL_W;
        let y = MARGIN + PANEL_H - scale(best.unwrap_or(*v), ylo, yhi) * PANEL_H;
        points.push(format!("{x:.1},{y:.1}"));
    }
    if !points.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##,
            points.join(" ")
        );
    }
    s.push_str("</svg>\n");
    s
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

fn scale(v: f64, lo: f64, hi: f64) -> f64 {
    ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
}

fn frame(s: &mut String, x0: f64, title: &str, ylabel: &str, ylo: f64, yhi: f64) {
    let _ = writeln!(
        s,
        r##"<rect x="{x0:.1}" y="{MARGIN:.1}" width="{PANEL_W:.1}" height="{PANEL_H:.1}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + PANEL_W / 2.0,
        MARGIN - 10.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{yhi:.4}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{ylo:.4}</text>"#,
        x0 - 3.0,
        MARGIN + 10.0,
        x0 - 3.0,
        MARGIN + PANEL_H,
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        MARGIN + PANEL_H + 30.0,
        escape(ylabel)
    );
}

fn axis_labels(s: &mut String, x0: f64, range: &Range) {
    let y = MARGIN + PANEL_H + 14.0;
    let labels: Vec<(f64, String)> = match range {
        Range::Choice(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| ((i as f64 + 0.5) / items.len() as f64, v.clone()))
            .collect(),
        Range::LogUniform { lo, hi } => vec![(0.0, format!("{lo:e}")), (1.0, format!("{hi:e}"))],
        Range::Uniform { lo, hi } => vec![(0.0, lo.to_string()), (1.0, hi.to_string())],
        Range::Int { lo, hi } => vec![(0.0, lo.to_string()), (1.0, hi.to_string())],
    };
    for (x, label) in labels {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
            x0 + x * PANEL_W,
            escape(&label)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(trial: usize, rung: usize, status: Status, value: Option<f64>) -> TrialRecord {
        TrialRecord {
            trial,
            rung,
            epochs: 3,
            config: [("lr".to_string(), format!("0.0{trial}"))].into(),
            status,
            value,
            best_epoch: Some(1),
            seconds: 0.1,
            message: None,
        }
    }

    #[test]
    fn ranks_by_rung_then_value_with_failures_last() {
        let metric = MetricKey::parse("val.accuracy").unwrap();
        let records = vec![
            record(0, 0, Status::Done, Some(0.9)),
            record(1, 0, Status::Done, Some(0.8)),
            record(2, 0, Status::Failed, None),
            record(3, 0, Status::Done, Some(0.95)),
            record(1, 0, Status::Pruned, Some(0.8)),
            record(0, 1, Status::Done, Some(0.91)),
            record(3, 1, Status::Done, Some(0.97)),
        ];
        let order: Vec<(usize, Status)> = ranked(&records, &metric)
            .iter()
            .map(|r| (r.trial, r.status))
            .collect();
        assert_eq!(
            order,
            [
                (3, Status::Done),
                (0, Status::Done),
                (1, Status::Pruned),
                (2, Status::Failed)
            ]
        );
        let loss = MetricKey::parse("val.loss").unwrap();
        assert_eq!(ranked(&records[..4], &loss)[0].trial, 1);
    }

    #[test]
    fn the_table_and_the_picture_show_every_trial() {
        let metric = MetricKey::parse("val.accuracy").unwrap();
        let space = Space::parse(&["lr=log(1e-3,1e-1)".to_string()]).unwrap();
        let records = vec![
            record(1, 0, Status::Done, Some(0.8)),
            record(2, 0, Status::Done, Some(0.9)),
        ];
        let t = table(&ranked(&records, &metric), &space, &metric);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "rank  trial  lr    epochs  val.accuracy  status");
        assert!(lines[1].starts_with("1     2      0.02"), "{t}");
        let svg = svg(&records, &space, &metric);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("<polyline"));
    }
}
