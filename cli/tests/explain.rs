//! `strata explain` and a built executable's `explain`, run as a user runs them: the CNN
//! digits example after a short training, breast cancer's feature ranking, the sunspots
//! LSTM's per-position scores, and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dsl-examples")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The shape in an .npy header and its f32 values.
fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = text(&bytes[10..10 + header_len]);
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("a shape")
        .trim_end_matches([',', ' '])
        .to_string();
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, values)
}

/// The width and height of a PNG file.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[1..4], b"PNG", "{} is no PNG", path.display());
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (word(16), word(20))
}

#[test]
fn the_cnn_gets_a_heat_map_per_class_and_the_executable_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    ok(strata()
        .arg("train")
        .arg(example("cnn.strata"))
        .args(["--set", "epochs=3", "--quiet", "--run-dir"])
        .arg(&run_dir)
        .output()
        .unwrap());
    let weights = run_dir.join("best.safetensors");
    let out_dir = dir.path().join("all");
    let out = ok(strata()
        .arg("explain")
        .arg(example("cnn.strata"))
        .arg("--weights")
        .arg(&weights)
        .args(["--target", "all", "--count", "4", "-o"])
        .arg(&out_dir)
        .output()
        .unwrap());
    assert!(
        out.contains("integrated gradients (64 steps) of `logits`"),
        "{out}"
    );
    let (shape, values) = read_npy(&out_dir.join("attributions.npy"));
    assert_eq!(shape, "10, 4, 1, 8, 8");
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
    // A header of class digits (5 font pixels of 4), then four rows of an input and ten
    // maps, 8x8 values at 12 pixels each, 12 pixels apart.
    let (w, h) = png_size(&out_dir.join("heatmaps.png"));
    assert_eq!((w, h), (11 * 96 + 12 * 12, 5 * 4 + 12 + 4 * 96 + 5 * 12));
    for k in 0..10 {
        assert_eq!(png_size(&out_dir.join(format!("heatmap-{k}.png"))).1, h);
    }
    // Completeness, from the summary: a ReLU network's path has kinks, so the midpoint
    // rule's gap is larger than a smooth model's (up to 8% of the difference measured on
    // the fully trained CNN), yet small.
    let summary = std::fs::read_to_string(out_dir.join("summary.csv")).unwrap();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 1 + 40, "{summary}");
    assert!(lines[0].ends_with("baseline_score,completeness_gap"));
    for line in &lines[1..] {
        let cells: Vec<f64> = line
            .split(',')
            .skip(3)
            .map(|c| c.parse().unwrap())
            .collect();
        let (score, base, gap) = (cells[0], cells[2], cells[3]);
        assert!(
            gap.abs() <= 0.1 * (score - base).abs().max(1.0),
            "completeness gap too large: {line}"
        );
    }

    // The executable built with its explain entry gives the same attributions.
    let x = dir.path().join("x.npy");
    std::fs::copy(out_dir.join("inputs.npy"), &x).unwrap();
    let exe = dir.path().join("cnn");
    ok(strata()
        .arg("build")
        .arg(example("cnn.strata"))
        .arg("--explain")
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap());
    let by_exe = dir.path().join("exe");
    ok(Command::new(&exe)
        .arg("explain")
        .arg("--input")
        .arg(format!("x={}", x.display()))
        .args(["--target", "3", "--method", "grad-input", "-o"])
        .arg(&by_exe)
        .output()
        .unwrap());
    let by_strata = dir.path().join("strata");
    ok(strata()
        .arg("explain")
        .arg(example("cnn.strata"))
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(format!("x={}", x.display()))
        .args(["--target", "3", "--method", "grad-input", "-o"])
        .arg(&by_strata)
        .output()
        .unwrap());
    let (shape, a) = read_npy(&by_exe.join("attributions.npy"));
    assert_eq!(shape, "4, 1, 8, 8");
    assert_eq!(a, read_npy(&by_strata.join("attributions.npy")).1);
    // The class 3 slice of `all` is integrated gradients; gradient x input differs.
    assert_ne!(a, values[3 * 256..4 * 256]);
}

#[test]
fn breast_cancer_gets_a_feature_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let output = strata()
        .arg("explain")
        .arg(example("breast_cancer.strata"))
        .args(["--method", "grad-input", "--count", "5", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    // No --weights: explained all the same, with a warning.
    assert!(
        text(&output.stderr).contains("UNTRAINED"),
        "{}",
        text(&output.stderr)
    );
    let out = ok(output);
    assert!(out.contains("mean |attr|"), "{out}");
    let svg = std::fs::read_to_string(dir.path().join("ranking.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("worst radius"),
        "{svg}"
    );
    let csv = std::fs::read_to_string(dir.path().join("ranking.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 30, "{csv}");
    let (shape, _) = read_npy(&dir.path().join("attributions.npy"));
    assert_eq!(shape, "5, 30");
}

#[test]
fn the_sunspots_lstm_gets_per_position_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(strata()
        .arg("explain")
        .arg(example("lstm.strata"))
        .args([
            "--method",
            "ig",
            "--steps",
            "16",
            "--baseline",
            "mean",
            "--count",
            "3",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap());
    assert!(out.contains("per-position scores"), "{out}");
    let csv = std::fs::read_to_string(dir.path().join("positions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "position,lag,sample_0,sample_1,sample_2");
    assert_eq!(lines.len(), 1 + 20);
    assert!(lines[20].starts_with("19,1,"), "{csv}");
}

#[test]
fn explain_reports_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    // A class the output does not have.
    let output = strata()
        .arg("explain")
        .arg(example("cnn.strata"))
        .args(["--target", "10", "--count", "1", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = text(&output.stderr);
    assert!(
        err.contains("target 10 is out of range: output `logits` has 10 values per sample"),
        "{err}"
    );
    // A model of token ids has no input gradient.
    let output = strata()
        .arg("explain")
        .arg(example("transformer_seq2seq.strata"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no f32 input"),
        "{}",
        text(&output.stderr)
    );
    // An executable built without --explain says how to get the entry.
    let exe = dir.path().join("mlp");
    ok(strata()
        .arg("build")
        .arg(example("mlp.strata"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap());
    let output = Command::new(&exe).arg("explain").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("strata build --explain"),
        "{}",
        text(&output.stderr)
    );
}
