//! The training log: one JSON object per epoch in a JSON-lines file, and an SVG plot of
//! the training curves drawn from it.
//!
//! # Log lines
//!
//! ```text
//! {"epoch":3,"step":168,"train_loss":0.41,"val_loss":0.45,"metrics":{"val_accuracy":0.93},"seconds":1.2}
//! ```
//!
//! Each line is written with one `write` and flushed, so a crash leaves whole lines and
//! at most one torn last line, which [`read_log`] and [`MetricsLog::resume`] drop. JSON
//! has no NaN: a diverged loss is written as `null` and read back as NaN (`val_loss`:
//! as `None`).
//!
//! # Metric names
//!
//! Metric keys are free-form. The plot groups keys that differ only by a `train_` or
//! `val_` prefix into one panel (`train_accuracy` and `val_accuracy` share the
//! "accuracy" panel); every other key gets a panel of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::error::LogError;
use crate::atomic_file::write_atomic;

/// What one epoch of training reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Validation loss, if there is a validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Other metrics by name (see the module docs for the naming convention).
    #[serde(default, deserialize_with = "map_or_nan")]
    pub metrics: BTreeMap<String, f64>,
    /// Wall-clock seconds the epoch took.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn map_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// An open JSON-lines metrics log.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a new log at `path`, replacing any file there.
    pub fn create(path: &Path) -> Result<MetricsLog, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        strata_artifact::check_output_path(path).map_err(io)?;
        let file = File::create(path).map_err(io)?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Reopens the log of a run resumed after `last_epoch`: keeps the records up to and
    /// including that epoch (later ones were written after the checkpoint and will be
    /// redone), rewrites the file with them, and returns them with the log open for
    /// appending. A missing file starts an empty log. The rewrite replaces the file
    /// atomically, so a run killed during it keeps its log.
    pub fn resume(
        path: &Path,
        last_epoch: u64,
    ) -> Result<(MetricsLog, Vec<EpochRecord>), LogError> {
        let kept: Vec<EpochRecord> = if path.exists() {
            read_log(path)?
                .into_iter()
                .filter(|r| r.epoch <= last_epoch)
                .collect()
        } else {
            Vec::new()
        };
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        for record in &kept {
            text.push_str(
                &serde_json::to_string(record).map_err(|e| LogError::Encode(e.to_string()))?,
            );
            text.push('\n');
        }
        write_atomic(path, text.as_bytes()).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        let log = MetricsLog {
            path: path.to_path_buf(),
            file,
        };
        Ok((log, kept))
    }

    /// Appends one record as a line and flushes it.
    pub fn append(&mut self, record: &EpochRecord) -> Result<(), LogError> {
        let mut line =
            serde_json::to_string(record).map_err(|e| LogError::Encode(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| LogError::Io {
                path: self.path.clone(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a JSON-lines log. Blank lines are skipped; a malformed last line without a
/// newline (a write torn by a crash) is dropped; any other malformed line is an error
/// naming it.
pub fn read_log(path: &Path) -> Result<Vec<EpochRecord>, LogError> {
    let text = std::fs::read_to_string(path).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let torn_tail = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EpochRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if torn_tail && i + 1 == lines.len() => {}
            Err(e) => {
                return Err(LogError::Malformed {
                    path: path.to_path_buf(),
                    line: i as u64 + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(records)
}

/// Writes the training curves of `history` as an SVG file: one panel for the losses and
/// one per metric (see the module docs), each value against the epoch; written atomically.
pub fn plot_curves(history: &[EpochRecord], path: &Path) -> Result<(), LogError> {
    write_atomic(path, render_curves_svg(history).as_bytes()).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// SVG rendering

/// One line of a panel: a label and `(epoch, value)` points (non-finite values leave a
/// gap).
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    series: Vec<Series>,
}

const PANEL_WIDTH: f64 = 480.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 32.0;
const MARGIN_BOTTOM: f64 = 44.0;
const COLUMNS: usize = 2;
const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
];

/// The panels of a history: losses first, then each metric group by name.
fn panels(history: &[EpochRecord]) -> Vec<Panel> {
    let epoch = |r: &EpochRecord| r.epoch as f64;
    let mut losses = vec![Series {
        label: "train".into(),
        points: history.iter().map(|r| (epoch(r), r.train_loss)).collect(),
    }];
    if history.iter().any(|r| r.val_loss.is_some()) {
        losses.push(Series {
            label: "validation".into(),
            points: history
                .iter()
                .map(|r| (epoch(r), r.val_loss.unwrap_or(f64::NAN)))
                .collect(),
        });
    }
    let mut panels = vec![Panel {
        title: "loss".into(),
        series: losses,
    }];

    // Group metric keys: (panel title) -> [(series label, key)].
    let mut groups: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for key in history.iter().flat_map(|r| r.metrics.keys()) {
        let (title, label) = if let Some(rest) = key.strip_prefix("train_") {
            (rest.to_string(), "train".to_string())
        } else if let Some(rest) = key.strip_prefix("val_") {
            (rest.to_string(), "validation".to_string())
        } else {
            (key.clone(), key.clone())
        };
        let group = groups.entry(title).or_default();
        if !group.iter().any(|(_, k)| k == key) {
            group.push((label, key.clone()));
        }
    }
    for (title, mut members) in groups {
        members.sort();
        let series = members
            .into_iter()
            .map(|(label, key)| Series {
                label,
                points: history
                    .iter()
                    .map(|r| (epoch(r), r.metrics.get(&key).copied().unwrap_or(f64::NAN)))
                    .collect(),
            })
            .collect();
        panels.push(Panel { title, series });
    }
    panels
}

/// Nice tick positions covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten,
/// about `target` of them (Heckbert, "Nice numbers for graph labels", Graphics Gems
/// 1990). Returns (ticks, step).
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    (ticks, step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    let text = format!("{value:.decimals$}");
    if text.starts_with('-') && text.trim_start_matches(['-', '0', '.']).is_empty() {
        text[1..].to_string() // no "-0.0"
    } else {
        text
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The range of the finite values of `values`, widened if empty or flat.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    }
}

fn render_panel(svg: &mut String, panel: &Panel, x0: f64, y0: f64) {
    let plot_w = PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let left = x0 + MARGIN_LEFT;
    let top = y0 + MARGIN_TOP;
    let points = || panel.series.iter().flat_map(|s| s.points.iter());

    let (x_lo, x_hi) = value_range(points().map(|p| p.0));
    let (x_ticks, x_step) = nice_ticks(x_lo, x_hi, 6);
    let x_step = x_step.max(1.0); // epochs are whole numbers
    let x_ticks: Vec<f64> = x_ticks.into_iter().filter(|t| t.fract() == 0.0).collect();
    let (x_min, x_max) = (
        x_ticks.first().copied().unwrap_or(x_lo).min(x_lo),
        x_ticks.last().copied().unwrap_or(x_hi).max(x_hi),
    );
    let (y_lo, y_hi) = value_range(points().map(|p| p.1));
    let (y_ticks, y_step) = nice_ticks(y_lo, y_hi, 5);
    let (y_min, y_max) = (
        y_ticks.first().copied().unwrap_or(y_lo),
        y_ticks.last().copied().unwrap_or(y_hi),
    );
    let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| top + plot_h - (y - y_min) / (y_max - y_min) * plot_h;

    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        left + plot_w / 2.0,
        y0 + 20.0,
        escape(&panel.title)
    );
    // Grid lines and tick labels.
    for &t in &y_ticks {
        let y = sy(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"#,
            left - 6.0,
            y + 4.0,
            tick_label(t, y_step)
        );
    }
    for &t in &x_ticks {
        let x = sx(t);
        let bottom = top + plot_h;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
            bottom + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            bottom + 18.0,
            tick_label(t, x_step)
        );
    }
    // Axes.
    let _ = writeln!(
        svg,
        r##"<polyline points="{left:.1},{top:.1} {left:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">epoch</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 36.0
    );
    // Series: a polyline per run of finite values; markers when there are few points.
    for (i, series) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, svg: &mut String| {
            if run.len() > 1 {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    run.join(" ")
                );
            }
            run.clear();
        };
        let finite = series.points.iter().filter(|p| p.1.is_finite()).count();
        for &(x, y) in &series.points {
            if y.is_finite() {
                run.push(format!("{:.1},{:.1}", sx(x), sy(y)));
                if finite <= 40 {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                        sx(x),
                        sy(y)
                    );
                }
            } else {
                flush(&mut run, svg);
            }
        }
        flush(&mut run, svg);
    }
    // Legend: in the corner of the plot that covers the fewest data points.
    let longest = panel
        .series
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(0) as f64;
    let legend_w = 34.0 + 7.0 * longest;
    let legend_h = 8.0 + 16.0 * panel.series.len() as f64;
    let (near_x, far_x) = (left + 6.0, left + plot_w - legend_w - 6.0);
    let (near_y, far_y) = (top + 6.0, top + plot_h - legend_h - 6.0);
    let corners = [
        (far_x, near_y),
        (far_x, far_y),
        (near_x, near_y),
        (near_x, far_y),
    ];
    let covered = |&(x, y): &(f64, f64)| {
        points()
            .filter(|p| p.1.is_finite())
            .filter(|p| {
                let (px, py) = (sx(p.0), sy(p.1));
                (x - 6.0..=x + legend_w + 6.0).contains(&px)
                    && (y - 6.0..=y + legend_h + 6.0).contains(&py)
            })
            .count()
    };
    let (lx, ly) = corners
        .iter()
        .min_by_key(|corner| covered(corner))
        .copied()
        .unwrap_or(corners[0]);
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="{legend_w:.1}" height="{legend_h:.1}" fill="white" fill-opacity="0.85" stroke="#999"/>"##
    );
    for (i, series) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let y = ly + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
            lx + 6.0,
            y - 4.0,
            lx + 24.0,
            y - 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{y:.1}" font-size="11">{}</text>"#,
            lx + 28.0,
            escape(&series.label)
        );
    }
}

/// The SVG text [`plot_curves`] writes.
pub fn render_curves_svg(history: &[EpochRecord]) -> String {
    let panels = panels(history);
    let rows = panels.len().div_ceil(COLUMNS);
    let columns = panels.len().min(COLUMNS);
    let width = PANEL_WIDTH * columns as f64;
    let height = PANEL_HEIGHT * rows as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width:.0}" height="{height:.0}" fill="white"/>"#
    );
    if history.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="middle" font-size="14">no epochs logged</text>"#,
            width / 2.0,
            height / 2.0
        );
    } else {
        for (i, panel) in panels.iter().enumerate() {
            let x0 = PANEL_WIDTH * (i % COLUMNS) as f64;
            let y0 = PANEL_HEIGHT * (i / COLUMNS) as f64;
            render_panel(&mut svg, panel, x0, y0);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_use_1_2_5_steps() {
        let (ticks, step) = nice_ticks(0.13, 0.87, 5);
        assert_eq!(step, 0.2);
        assert!((ticks[0] - 0.0).abs() < 1e-12);
        assert!((ticks.last().unwrap() - 1.0).abs() < 1e-12);
        let (_, step) = nice_ticks(1.0, 30.0, 6);
        assert_eq!(step, 5.0);
    }

    #[test]
    fn tick_labels_have_the_step_precision() {
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(10.0, 5.0), "10");
        assert_eq!(tick_label(-0.0, 0.05), "0.00");
    }
}
