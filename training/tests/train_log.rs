//! The JSON-lines metrics log and the SVG training-curve plot.

use std::collections::BTreeMap;

use strata_training::log::{read_log, render_curves_svg};
use strata_training::{EpochRecord, MetricsLog, plot_curves};

fn record(epoch: u64, loss: f64) -> EpochRecord {
    let mut metrics = BTreeMap::new();
    metrics.insert("train_accuracy".to_string(), 0.5 + epoch as f64 * 0.1);
    metrics.insert("val_accuracy".to_string(), 0.45 + epoch as f64 * 0.09);
    metrics.insert("lr".to_string(), 0.01);
    EpochRecord {
        epoch,
        step: epoch * 50,
        train_loss: loss,
        val_loss: Some(loss * 1.1),
        metrics,
        seconds: 0.25,
    }
}

#[test]
fn log_lines_are_one_json_object_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut log = MetricsLog::create(&path).unwrap();
    log.append(&record(1, 2.0)).unwrap();
    log.append(&record(2, 1.5)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["epoch"], 1);
    assert_eq!(first["step"], 50);
    assert_eq!(first["train_loss"], 2.0);
    assert_eq!(first["metrics"]["lr"], 0.01);
    assert_eq!(
        read_log(&path).unwrap(),
        vec![record(1, 2.0), record(2, 1.5)]
    );
}

#[test]
fn nan_loss_is_written_as_null_and_read_back_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut r = record(1, f64::NAN);
    r.val_loss = None;
    MetricsLog::create(&path).unwrap().append(&r).unwrap();
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"train_loss\":null")
    );
    let back = read_log(&path).unwrap();
    assert!(back[0].train_loss.is_nan());
}

#[test]
fn torn_last_line_is_dropped_and_other_bad_lines_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let good = serde_json::to_string(&record(1, 1.0)).unwrap();
    std::fs::write(&path, format!("{good}\n{{\"epoch\":2,\"ste")).unwrap();
    assert_eq!(read_log(&path).unwrap().len(), 1);

    std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
    let err = read_log(&path).unwrap_err().to_string();
    assert!(err.contains("m.jsonl: line 2:"), "{err}");
}

#[test]
fn resume_keeps_epochs_up_to_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut log = MetricsLog::create(&path).unwrap();
    for epoch in 1..=4 {
        log.append(&record(epoch, 1.0 / epoch as f64)).unwrap();
    }
    drop(log);
    let (mut log, kept) = MetricsLog::resume(&path, 2).unwrap();
    assert_eq!(kept.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    log.append(&record(3, 0.3)).unwrap();
    let epochs: Vec<u64> = read_log(&path).unwrap().iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, vec![1, 2, 3]);
}

#[test]
fn plot_has_a_panel_per_metric_group_with_a_line_per_series() {
    let history: Vec<EpochRecord> = (1..=10).map(|e| record(e, 2.0 / e as f64)).collect();
    let svg = render_curves_svg(&history);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    for title in [">loss<", ">accuracy<", ">lr<"] {
        assert!(svg.contains(title), "missing panel {title}");
    }
    // loss: train + validation; accuracy: train + validation; lr: one series.
    assert_eq!(svg.matches("stroke-width=\"2\"/>").count(), 2 * 5);
    assert!(svg.contains(">validation<") && svg.contains(">epoch<"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    plot_curves(&history, &path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
}

#[test]
fn plot_breaks_lines_at_nan_and_handles_tiny_histories() {
    let mut history: Vec<EpochRecord> = (1..=5).map(|e| record(e, 1.0)).collect();
    history[2].train_loss = f64::NAN;
    let svg = render_curves_svg(&history);
    assert!(!svg.contains("NaN"));
    assert!(render_curves_svg(&history[..1]).contains("<circle"));
    assert!(render_curves_svg(&[]).contains("no epochs logged"));
}
