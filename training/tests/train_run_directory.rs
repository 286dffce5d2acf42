//! A run directory under misuse: a resume of a changed model is refused with what
//! changed, a second training on the same directory is refused with the holder's id, a
//! fresh run does not silently replace an earlier one nor lose its best weights, and
//! temporary files of a killed run are cleaned up.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_artifact::Artifact;
use strata_artifact::train_config::TrainConfig;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_training::{Checkpoint, TrainError, TrainOptions, train};

/// A small model on the built-in iris data; `{act}`, `{extra}`, `{optimizer}`,
/// `{loss}` and `{settings}` are the parts the tests change.
const TEMPLATE: &str = r#"
model Net {
    input x: f32[batch, 4]
    output logits = x |> dense(8) |> {act}{extra} |> dense(3)
}
train Net {
    data = iris
    label y: i32[batch]
    loss = cross_entropy(logits, y){loss}
    optimizer = {optimizer}(lr = 1e-2)
    batch = 16  epochs = 2  split = 0.8 / 0.2 / 0.0  seed = 3
    {settings}
}
"#;

struct Variant {
    act: &'static str,
    extra: &'static str,
    loss: &'static str,
    optimizer: &'static str,
    settings: &'static str,
}

const BASE: Variant = Variant {
    act: "relu",
    extra: "",
    loss: "",
    optimizer: "adam",
    settings: "",
};

fn artifact(v: &Variant) -> Artifact {
    let text = TEMPLATE
        .replace("{act}", v.act)
        .replace("{extra}", v.extra)
        .replace("{loss}", v.loss)
        .replace("{optimizer}", v.optimizer)
        .replace("{settings}", v.settings);
    let source = SourceFile::new("net.strata", text);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    compile(&source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact
}

fn config(artifact: &Artifact) -> TrainConfig {
    artifact.manifest.train.clone().expect("a train section")
}

fn options(dir: &Path) -> TrainOptions {
    TrainOptions {
        run_dir: dir.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

fn try_train(artifact: &Artifact, options: &TrainOptions) -> Result<(), TrainError> {
    let mut session = Session::new(artifact).expect("the artifact loads");
    train(&mut session, &config(artifact), options).map(|_| ())
}

/// A run of `BASE` stopped after its first step, leaving `last.ckpt`.
fn interrupted_run(dir: &Path) {
    let stop_at_once = TrainOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..options(dir)
    };
    try_train(&artifact(&BASE), &stop_at_once).expect("the run starts");
    assert!(dir.join("last.ckpt").is_file());
}

fn resume_error(dir: &Path, variant: &Variant) -> String {
    let resume = TrainOptions {
        resume: true,
        ..options(dir)
    };
    try_train(&artifact(variant), &resume)
        .expect_err("a changed model must not resume")
        .to_string()
}

#[test]
fn resuming_a_changed_model_is_refused_naming_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_run(dir.path());
    let cases = [
        (
            Variant {
                act: "tanh",
                ..BASE
            },
            "the model graph",
        ),
        (
            Variant {
                extra: " |> dropout(0.1)",
                ..BASE
            },
            "the model graph",
        ),
        (
            Variant {
                loss: " + 1e-3 * l2(weights)",
                ..BASE
            },
            "the model graph",
        ),
        (
            Variant {
                optimizer: "adamw",
                ..BASE
            },
            "the optimizer (was train: adam (lr 0.01)",
        ),
        (
            Variant {
                settings: "normalize = standardize",
                ..BASE
            },
            "the normalization (was none, now standardize)",
        ),
    ];
    for (variant, part) in cases {
        let message = resume_error(dir.path(), &variant);
        assert!(
            message.contains("was trained from a different model") && message.contains(part),
            "expected `{part}` in: {message}"
        );
    }
    // The checkpoint is untouched by the refusals: the unchanged model resumes.
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    try_train(&artifact(&BASE), &resume).expect("the same model resumes");
}

#[test]
fn a_second_training_on_a_locked_directory_is_refused_with_the_holders_id() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_run(dir.path());
    // Another process holds the lock: a separate open file description locked here
    // stands for it (advisory locks conflict between descriptions, even in one process).
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(".lock"))
        .expect("the run left its lock file");
    holder.try_lock().expect("nobody holds the lock now");
    std::fs::write(dir.path().join(".lock"), "4242\n").unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    let error = try_train(&artifact(&BASE), &resume).expect_err("the directory is locked");
    assert!(
        matches!(
            error,
            TrainError::RunLocked {
                holder: Some(4242),
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("in use by another training (process 4242)"),
        "{message}"
    );
    drop(holder);
    try_train(&artifact(&BASE), &resume).expect("the lock is free again");
}

#[test]
fn a_fresh_run_over_an_earlier_one_is_refused_with_the_ways_out() {
    let dir = tempfile::tempdir().unwrap();
    try_train(&artifact(&BASE), &options(dir.path())).expect("the first run");
    let before = std::fs::read(dir.path().join("best.safetensors")).unwrap();
    let error = try_train(&artifact(&BASE), &options(dir.path())).expect_err("a run is there");
    let message = error.to_string();
    for hint in [
        "already holds a run",
        "--resume",
        "--overwrite",
        "--run-dir",
    ] {
        assert!(message.contains(hint), "`{hint}` missing: {message}");
    }
    assert!(strata_training::args::is_usage_error(&error));
    assert!(std::fs::read(dir.path().join("best.safetensors")).unwrap() == before);
}

#[test]
fn an_overwriting_retry_that_diverges_keeps_the_earlier_best_weights() {
    let dir = tempfile::tempdir().unwrap();
    let base = artifact(&BASE);
    try_train(&base, &options(dir.path())).expect("a good run");
    let best = dir.path().join("best.safetensors");
    let good = std::fs::read(&best).unwrap();

    let mut diverging = config(&base);
    diverging.steps[0].lr = 1e30;
    let overwrite = TrainOptions {
        overwrite: true,
        ..options(dir.path())
    };
    let mut session = Session::new(&base).unwrap();
    let error = train(&mut session, &diverging, &overwrite).expect_err("the loss blows up");
    assert!(matches!(error, TrainError::Diverged { .. }), "{error}");
    assert!(
        std::fs::read(&best).unwrap() == good,
        "the earlier best.safetensors was lost"
    );

    // A retry that finishes an epoch replaces it with its own.
    try_train(&base, &overwrite).expect("the retry runs");
    let last = Checkpoint::load(&dir.path().join("last.ckpt")).unwrap();
    assert_eq!(last.epoch, 2);
}

#[test]
fn temporary_files_of_a_killed_run_are_removed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_run(dir.path());
    let stale = [".last.ckpt.aB3xYz.tmp", ".best.safetensors.Qr5tUv.tmp"];
    for name in stale {
        std::fs::write(dir.path().join(name), b"half a file").unwrap();
    }
    // Not the run's: left alone.
    std::fs::write(dir.path().join(".notes.tmp"), b"mine").unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    try_train(&artifact(&BASE), &resume).expect("the run resumes");
    for name in stale {
        assert!(!dir.path().join(name).exists(), "{name} was left behind");
    }
    assert!(dir.path().join(".notes.tmp").exists());
}

#[cfg(unix)]
#[test]
fn a_run_file_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("last.ckpt")).unwrap();
    let overwrite = TrainOptions {
        overwrite: true,
        ..options(dir.path())
    };
    let error = try_train(&artifact(&BASE), &overwrite).expect_err("last.ckpt is a directory");
    let message = error.to_string();
    assert!(
        message.contains("is a directory, not a regular file"),
        "{message}"
    );
    assert!(dir.path().join("last.ckpt").is_dir());
}
