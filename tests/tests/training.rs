//! Training end to end: `dsl-examples/mlp.strata` learns the built-in digits to the
//! accuracy the design promises, and a built executable's `train`, `eval` and `infer`
//! commands work on the run directory training writes.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use strata_artifact::Artifact;
use strata_artifact::append_to_executable;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::{load_example, root};
use strata_training::{StopReason, TrainOptions, train};

fn compile_trainable(source: &SourceFile) -> Artifact {
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    compile(source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(source)))
        .artifact
}

#[test]
fn the_mlp_example_reaches_96_percent_test_accuracy_on_digits() {
    let artifact = compile_trainable(&load_example(&root().join("dsl-examples/mlp.strata")));
    let config = artifact
        .manifest
        .train
        .clone()
        .expect("mlp.strata has a train section");
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let started = Instant::now();
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("training runs");
    let seconds = started.elapsed().as_secs_f64();
    let test = summary.test.as_ref().expect("a test split");
    let accuracy = test
        .metrics
        .value(strata_artifact::Metric::Accuracy)
        .unwrap();
    println!(
        "mlp on digits: test accuracy {accuracy:.4} after {} epochs ({:?}) in {seconds:.2} s",
        summary.epochs, summary.stop
    );
    assert!(
        accuracy >= 0.96,
        "test accuracy {accuracy:.4} < 0.96 (history: {:#?})",
        summary.history
    );
}

const SMALL: &str = r#"
model Tiny(hidden = 16) {
    input x: f32[batch, 64]
    output logits = x |> dense(hidden) |> relu |> dense(10)
}
train Tiny {
    data = digits
    normalize = scale(16)
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 3e-3)
    batch = 64  epochs = 2  split = 0.8 / 0.1 / 0.1  seed = 1
    metrics = [accuracy]
}
"#;

/// Runs the executable of `artifact` with `args`; returns (exit code, stdout, stderr).
fn executable(artifact: &Artifact, args: &[&str]) -> (ExitCode, String, String) {
    let exe = append_to_executable(&[], &artifact.to_bytes().unwrap());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("tiny").chain(args.iter().copied());
    let code = strata_cli::executable::run_cli(argv, || Ok(exe), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn the_executable_trains_then_scores_and_infers_with_the_best_weights() {
    let artifact = compile_trainable(&SourceFile::new("tiny.strata", SMALL.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (code, _, err) = executable(&artifact, &["train", "--run-dir", path(&run), "--quiet"]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let best = run.join("best.safetensors");
    assert!(best.is_file() && run.join("last.ckpt").is_file());

    let (code, out, err) = executable(&artifact, &["eval", "--weights", path(&best)]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("test split: 179 samples"), "{out}");
    assert!(
        out.contains("accuracy") && out.contains("confusion matrix"),
        "{out}"
    );
    let (code, out, err) = executable(
        &artifact,
        &[
            "eval",
            "--weights",
            path(&run.join("last.ckpt")),
            "--split",
            "all",
        ],
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("all split: 1797 samples"), "{out}");

    // `infer` takes the parameters-only file too (the optimizer state is not needed).
    let x = dir.path().join("x.npy");
    strata_artifact::npy::write_npy(
        &x,
        &strata_artifact::HostTensor::f32(vec![2, 64], vec![0.5; 128]).unwrap(),
    )
    .unwrap();
    let (code, out, err) = executable(
        &artifact,
        &["infer", "--input", path(&x), "--weights", path(&best)],
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("logits: f32[2, 10]"), "{out}");

    // Resuming a finished run trains no more.
    let (code, _, err) = executable(
        &artifact,
        &["train", "--run-dir", path(&run), "--resume", "--quiet"],
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
}

#[test]
fn the_executable_explains_what_it_cannot_train() {
    let source = SourceFile::new(
        "plain.strata",
        "model P { input x: f32[batch, 4]\n output y = x |> dense(2) }".to_string(),
    );
    let plain = compile_trainable(&source);
    let (code, _, err) = executable(&plain, &["train", "--quiet"]);
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.starts_with("error: this model has no train section"),
        "{err}"
    );

    let trainable = compile_trainable(&SourceFile::new("tiny.strata", SMALL.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (code, _, err) = executable(
        &trainable,
        &[
            "train",
            "--run-dir",
            path(&run),
            "--data",
            "iris",
            "--quiet",
        ],
    );
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("does not fit the features input `x`"), "{err}");
    let (code, _, err) = executable(
        &trainable,
        &["train", "--run-dir", path(&run), "--resume", "--quiet"],
    );
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("last.ckpt does not exist"), "{err}");
}

#[test]
fn the_executable_resumes_a_run_stopped_by_ctrl_c() {
    // The driver's tests check that a resumed run is bitwise exact; this checks that the
    // executable picks up a run the driver stopped part-way through its first epoch.
    let artifact = compile_trainable(&SourceFile::new("tiny.strata", SMALL.to_string()));
    let config = artifact.manifest.train.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        interrupt: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        ))),
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).unwrap();
    assert_eq!(summary.stop, StopReason::Interrupted { step: 1, epoch: 1 });
    let (code, _, err) = executable(
        &artifact,
        &[
            "train",
            "--run-dir",
            path(dir.path()),
            "--resume",
            "--quiet",
        ],
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let log = strata_training::log::read_log(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn the_executable_reports_json_scores_its_normalization_and_trains_from_given_weights() {
    let artifact = compile_trainable(&SourceFile::new("tiny.strata", SMALL.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (code, _, err) = executable(&artifact, &["train", "--run-dir", path(&run), "--quiet"]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let best = run.join("best.safetensors");

    // `eval --json`: one object, full precision, per-class metrics, agreeing with the text.
    let (code, out, err) = executable(&artifact, &["eval", "--weights", path(&best), "--json"]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["split"], "test");
    assert_eq!(report["samples"], 179);
    let accuracy = report["metrics"]["accuracy"].as_f64().expect("accuracy");
    let classes = report["classes"].as_array().expect("per-class metrics");
    assert_eq!(classes.len(), 10);
    let support: u64 = classes.iter().map(|c| c["support"].as_u64().unwrap()).sum();
    assert_eq!(support, 179, "every test sample counted once");
    let correct: u64 = (0..10)
        .map(|c| report["confusion"][c][c].as_u64().unwrap())
        .sum();
    assert_eq!(accuracy, correct as f64 / 179.0, "full precision");
    let (_, text, _) = executable(&artifact, &["eval", "--weights", path(&best)]);
    assert!(
        text.contains(&format!("accuracy   {accuracy:.4}")),
        "the text and JSON agree: {text}"
    );

    // `info`: parameters apart from Adam's state, and the normalization.
    let (code, out, err) = executable(&artifact, &["info"]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let parameters = 64 * 16 + 16 + 16 * 10 + 10;
    assert!(
        out.contains(&format!("parameters  {}\n", grouped(parameters))),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "optimizer   {} state values",
            grouped(2 * parameters)
        )),
        "{out}"
    );
    assert!(
        out.contains("normalize   scale:16 of 64 features: (x - offset) / scale, offset [0, 0, 0, 0, …], scale [16, 16, 16, 16, …]"),
        "{out}"
    );

    // `train --weights` starts a new run from them (the report goes to the terminal;
    // the driver's tests read it), and refuses to be mixed with `--resume`.
    let again = dir.path().join("again");
    let (code, _, err) = executable(
        &artifact,
        &[
            "train",
            "--run-dir",
            path(&again),
            "--weights",
            path(&best),
            "--epochs",
            "1",
            "--quiet",
        ],
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(again.join("best.safetensors").is_file());
    let (code, _, err) = executable(
        &artifact,
        &[
            "train",
            "--run-dir",
            path(&again),
            "--weights",
            path(&best),
            "--resume",
        ],
    );
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("--resume"), "{err}");
}

/// `1234` as `1,234`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
