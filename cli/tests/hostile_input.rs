//! Hostile input to the `strata` command, run as a subprocess: bytes that are not a
//! model file, batch sizes no machine holds, settings out of range. Each must end with
//! a clear message and exit code, never a panic or an abort.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("strata runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dsl-examples")
        .join(name)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path.display().to_string()
}

/// Whether the process ended by itself (not by a signal such as an abort).
fn exited(out: &Output) -> bool {
    out.status.code().is_some()
}

#[test]
fn invalid_utf8_is_located_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "bad.strata",
        b"model M {\n    input x: f32[batch, 4] // caf\xe9\n}\n",
    );
    let out = strata(&["check", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.strata:2:34: not valid UTF-8"), "{err}");
    assert!(err.contains("0xe9"), "{err}");
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = b"\xef\xbb\xbf".to_vec();
    text.extend_from_slice(b"model M {\n    input x: f32[batch, 4]\n    output y = x |> relu\n}\n");
    let file = write(dir.path(), "bom.strata", &text);
    let out = strata(&["check", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bench_refuses_a_batch_whose_sizes_overflow() {
    let mlp = example("mlp.strata");
    let out = strata(&[
        "bench",
        mlp.to_str().expect("utf-8 path"),
        "--batch",
        "18446744073709551615",
        "--entry",
        "infer",
    ]);
    assert!(exited(&out), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is too large"), "{}", stderr(&out));
}

#[test]
fn bench_refuses_a_batch_past_the_memory_budget_and_names_the_option() {
    let mlp = example("mlp.strata");
    let out = strata(&[
        "bench",
        mlp.to_str().expect("utf-8 path"),
        "--batch",
        "4294967296",
        "--entry",
        "infer",
    ]);
    assert!(exited(&out), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("more than the budget"), "{err}");
    assert!(err.contains("--max-memory"), "{err}");
}

#[test]
fn a_nan_learning_rate_override_is_a_range_error() {
    let mlp = example("mlp.strata");
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let out = strata(&[
        "train",
        mlp.to_str().expect("utf-8 path"),
        "--set",
        "lr=nan",
        "--set",
        "epochs=1",
        "--run-dir",
        run_dir.to_str().expect("utf-8 path"),
        "--quiet",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--set lr=NaN"), "{err}");
    assert!(err.contains("must be a finite number > 0"), "{err}");
}
