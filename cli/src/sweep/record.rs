//! What a sweep directory holds about its sweep: `sweep.json` (what was asked, so a
//! resumed sweep can refuse a different one) and `sweep.jsonl` (one line per finished
//! trial rung, appended and flushed as each ends, so a killed sweep loses only the
//! trials that were running).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plan::Method;

/// What a sweep was asked to do; a resumed sweep must ask the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub file: String,
    pub model: Option<String>,
    /// The `--set` values every trial gets.
    pub fixed: Vec<String>,
    /// The `--space` arguments, as given.
    pub space: Vec<String>,
    pub method: Method,
    pub trials: usize,
    pub grid_points: usize,
    pub eta: usize,
    pub search_seed: u64,
    pub init_seed: u64,
    pub metric: String,
}

/// How a trial's rung ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Trained every epoch of the rung.
    Done,
    /// Stopped by its early stopping before the rung's epochs: it goes no further.
    EarlyStopped,
    /// Not promoted to the next rung (halving).
    Pruned,
    /// The training failed (diverged, or an error): the message says why.
    Failed,
}

/// One trial's result at one rung.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub trial: usize,
    pub rung: usize,
    /// Epochs trained in all at the end of this rung.
    pub epochs: u64,
    pub config: BTreeMap<String, String>,
    pub status: Status,
    /// The best value of the sweep's metric over the trial's epochs (None if it failed
    /// before one epoch ended).
    pub value: Option<f64>,
    pub best_epoch: Option<u64>,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Appends one record as one line with one write.
pub fn append(path: &Path, record: &TrialRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// The records of a (possibly killed) sweep: a torn last line is dropped.
pub fn read(path: &Path) -> Result<Vec<TrialRecord>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            // Only the last line can be torn by a kill.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_dropped_and_others_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.jsonl");
        let record = TrialRecord {
            trial: 0,
            rung: 0,
            epochs: 3,
            config: [("lr".to_string(), "0.01".to_string())].into(),
            status: Status::Done,
            value: Some(0.5),
            best_epoch: Some(2),
            seconds: 1.0,
            message: None,
        };
        append(&path, &record).unwrap();
        append(&path, &record).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"trial\":1,");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap(), vec![record.clone(), record]);
        std::fs::write(&path, "{\"trial\":1,\n{}\n").unwrap();
        assert!(read(&path).unwrap_err().contains("sweep.jsonl:1"));
    }
}
