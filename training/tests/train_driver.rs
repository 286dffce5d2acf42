//! The training driver on a small compiled model and the built-in digits: the loss goes
//! down, runs resume bitwise exactly (after a finished run and after Ctrl-C part-way
//! through an epoch), early stopping restores the best weights, a diverging run stops
//! with a clear error and a loadable checkpoint, and bad checkpoints are refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use strata_artifact::Artifact;
use strata_artifact::train_config::{EarlyStop, TrainConfig};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_training::{
    Checkpoint, EvalSplit, StopReason, TrainError, TrainOptions, TrainSummary, evaluate, train,
};

const MODEL: &str = r#"
model Mlp(hidden = 32) {
    input x: f32[batch, 64]
    output logits = x |> dense(hidden) |> relu |> dense(10)
}
train Mlp {
    data = digits
    label y: i32[batch]
    loss = cross_entropy(logits, y) + 1e-4 * l2(weights)
    optimizer = adam(lr = 3e-3)
    normalize = scale(16)
    batch = 32  epochs = 3  split = 0.8 / 0.1 / 0.1  seed = 7
    metrics = [accuracy, f1]
}
"#;

/// The artifact of `MODEL` with `hidden` units.
fn artifact(hidden: u32) -> Artifact {
    let source = SourceFile::new("mlp.strata", MODEL.to_string());
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            overrides: vec![("hidden".into(), hidden.to_string())],
            ..Default::default()
        },
        ..Default::default()
    };
    compile(&source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact
}

fn config(artifact: &Artifact) -> TrainConfig {
    artifact
        .manifest
        .train
        .clone()
        .expect("the model has a train section")
}

fn options(dir: &Path) -> TrainOptions {
    TrainOptions {
        run_dir: dir.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

/// Trains a fresh session of `artifact`; returns the session and the summary.
fn run(
    artifact: &Artifact,
    config: &TrainConfig,
    options: &TrainOptions,
) -> (Session, TrainSummary) {
    let mut session = Session::new(artifact).expect("the artifact loads");
    let summary = train(&mut session, config, options).expect("training runs");
    (session, summary)
}

fn weights_bytes(session: &Session) -> Vec<u8> {
    session.save_weights().expect("weights encode")
}

#[test]
fn a_short_run_on_digits_lowers_the_loss_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = artifact(32);
    let (_, summary) = run(&artifact, &config(&artifact), &options(dir.path()));
    assert_eq!(summary.stop, StopReason::Completed);
    assert_eq!(summary.epochs, 3);
    // 1797 samples: 1438 train, in batches of 32 (the last one partial).
    assert_eq!(summary.steps, 3 * 45);
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(
        losses[2] < losses[1] && losses[1] < losses[0],
        "train losses {losses:?}"
    );
    assert!(losses[2] < 0.75 * losses[0], "train losses {losses:?}");
    let last = summary.history.last().unwrap();
    assert!(last.val_loss.unwrap() < summary.history[0].val_loss.unwrap());
    assert!(last.metrics["val_accuracy"] > 0.85, "{:?}", last.metrics);
    assert!(last.metrics.contains_key("val_f1"));
    let test = summary.test.expect("a test split");
    assert_eq!(test.samples, 179);
    assert!(
        test.metrics
            .value(strata_artifact::Metric::Accuracy)
            .unwrap()
            > 0.85
    );

    for file in [
        "last.ckpt",
        "best.safetensors",
        "metrics.jsonl",
        "curves.svg",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} is missing");
    }
    assert_eq!(
        strata_training::log::read_log(&dir.path().join("metrics.jsonl"))
            .unwrap()
            .len(),
        3
    );
    let svg = std::fs::read_to_string(dir.path().join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("accuracy"));
    let checkpoint = Checkpoint::load(&dir.path().join("last.ckpt")).unwrap();
    assert_eq!((checkpoint.epoch, checkpoint.step), (3, 135));
    assert!(
        checkpoint
            .weights
            .iter()
            .any(|(k, _)| k.starts_with("optim."))
    );
}

#[test]
fn a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one() {
    let artifact = artifact(16);
    let config = config(&artifact);
    let straight = tempfile::tempdir().unwrap();
    let (straight_session, straight_summary) = run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(4),
            ..options(straight.path())
        },
    );

    let split = tempfile::tempdir().unwrap();
    let first = TrainOptions {
        epochs_override: Some(2),
        ..options(split.path())
    };
    run(&artifact, &config, &first);
    let second = TrainOptions {
        epochs_override: Some(4),
        resume: true,
        ..options(split.path())
    };
    let (resumed_session, resumed_summary) = run(&artifact, &config, &second);

    assert_eq!(
        weights_bytes(&resumed_session),
        weights_bytes(&straight_session)
    );
    let best = |dir: &Path| std::fs::read(dir.join("best.safetensors")).unwrap();
    assert!(
        best(straight.path()) == best(split.path()),
        "best.safetensors differs"
    );
    // Byte for byte: a checkpoint's header is written in key order.
    let last = |dir: &Path| std::fs::read(dir.join("last.ckpt")).unwrap();
    assert!(
        last(straight.path()) == last(split.path()),
        "last.ckpt differs"
    );
    let losses = |s: &TrainSummary| {
        s.history
            .iter()
            .map(|r| r.train_loss.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&resumed_summary), losses(&straight_summary));
    assert_eq!(resumed_summary.steps, straight_summary.steps);
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_mid_epoch_exactly() {
    let artifact = artifact(16);
    let config = config(&artifact);
    let two_epochs = |dir: &Path| TrainOptions {
        epochs_override: Some(2),
        ..options(dir)
    };
    let straight = tempfile::tempdir().unwrap();
    let (straight_session, _) = run(&artifact, &config, &two_epochs(straight.path()));

    let dir = tempfile::tempdir().unwrap();
    // A flag already set stops the run after its first step.
    let interrupt = Some(Arc::new(AtomicBool::new(true)));
    let (_, stopped) = run(
        &artifact,
        &config,
        &TrainOptions {
            interrupt,
            ..two_epochs(dir.path())
        },
    );
    assert_eq!(stopped.stop, StopReason::Interrupted { step: 1, epoch: 1 });
    assert!(stopped.test.is_none());
    let checkpoint = Checkpoint::load(&dir.path().join("last.ckpt")).unwrap();
    assert_eq!((checkpoint.step, checkpoint.epoch), (1, 0));

    let (resumed, summary) = run(
        &artifact,
        &config,
        &TrainOptions {
            resume: true,
            ..two_epochs(dir.path())
        },
    );
    assert_eq!(summary.stop, StopReason::Completed);
    assert_eq!(weights_bytes(&resumed), weights_bytes(&straight_session));
}

#[test]
fn early_stopping_puts_the_best_weights_back() {
    let artifact = artifact(16);
    let mut config = config(&artifact);
    // No later epoch can beat the first by 10 nats: the run stops after `patience` more.
    config.early_stop = Some(EarlyStop {
        monitor: "val.loss".into(),
        patience: 2,
        maximize: false,
        min_delta: 10.0,
        restore_best: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let (session, summary) = run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(10),
            ..options(dir.path())
        },
    );
    assert_eq!(summary.stop, StopReason::EarlyStopped { epoch: 3 });
    assert_eq!(summary.best_epoch, Some(1));
    assert!(summary.restored_best);

    let best = std::fs::read(dir.path().join("best.safetensors")).unwrap();
    let best = safetensors::SafeTensors::deserialize(&best).unwrap();
    let last = Checkpoint::load(&dir.path().join("last.ckpt")).unwrap();
    let mut params = 0;
    for (key, tensor) in session.weights() {
        if key.starts_with("optim.") {
            assert!(
                best.tensor(key).is_err(),
                "best.safetensors holds optimizer state `{key}`"
            );
            continue;
        }
        let stored = best.tensor(key).unwrap();
        assert_eq!(
            stored.data(),
            tensor.data.as_bytes(),
            "`{key}` is not the best epoch's"
        );
        if key.starts_with("normalize.") {
            // The fitted normalization is saved with the parameters and never changes.
            continue;
        }
        params += 1;
        assert_ne!(
            last.tensor(key).unwrap(),
            tensor,
            "`{key}` was not restored"
        );
    }
    assert_eq!(params, 4);
}

#[test]
fn a_diverging_run_names_the_step_and_keeps_a_loadable_checkpoint() {
    let artifact = artifact(16);
    let mut config = config(&artifact);
    config.steps[0].lr = 1e30;
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let error = train(&mut session, &config, &options(dir.path())).expect_err("the loss blows up");
    let TrainError::Diverged {
        step,
        epoch,
        checkpoint,
        ..
    } = &error
    else {
        panic!("expected divergence, got {error}");
    };
    assert_eq!(*epoch, 1);
    let message = error.to_string();
    assert!(
        message.contains(&format!("step {step}")) && message.contains("epoch 1"),
        "{message}"
    );
    assert!(message.contains("last.ckpt"), "{message}");
    let (path, done) = checkpoint.clone().expect("a checkpoint to go back to");
    assert_eq!(done, 0);
    let saved = Checkpoint::load(&path).expect("last.ckpt loads");
    assert!(
        saved
            .weights
            .iter()
            .all(|(_, t)| t.as_f32().is_none_or(|v| v.iter().all(|x| x.is_finite())))
    );
    Session::new(&artifact)
        .unwrap()
        .load_weights(&saved.weights_safetensors().unwrap())
        .unwrap();
}

#[test]
fn a_corrupt_checkpoint_is_refused_on_resume() {
    let artifact = artifact(16);
    let config = config(&artifact);
    let dir = tempfile::tempdir().unwrap();
    run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(1),
            ..options(dir.path())
        },
    );
    let path = dir.path().join("last.ckpt");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40; // a flipped bit in the last tensor's data
    std::fs::write(&path, &bytes).unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    let message = train(&mut session, &config, &resume)
        .expect_err("corrupt")
        .to_string();
    assert!(
        message.contains("corrupt checkpoint") && message.contains("last.ckpt"),
        "{message}"
    );
}

#[test]
fn a_checkpoint_of_another_model_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let small = artifact(16);
    run(
        &small,
        &config(&small),
        &TrainOptions {
            epochs_override: Some(1),
            ..options(dir.path())
        },
    );
    let large = artifact(24);
    let mut session = Session::new(&large).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    let message = train(&mut session, &config(&large), &resume)
        .expect_err("mismatch")
        .to_string();
    assert!(
        message.contains("does not fit the model") && message.contains("[24, 64]"),
        "{message}"
    );
}

#[test]
fn resuming_without_a_checkpoint_says_so() {
    let artifact = artifact(16);
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    let message = train(&mut session, &config(&artifact), &resume)
        .expect_err("nothing to resume")
        .to_string();
    assert!(message.contains("last.ckpt does not exist"), "{message}");
}

#[test]
fn evaluate_scores_the_split_training_held_out() {
    let artifact = artifact(16);
    let config = config(&artifact);
    let dir = tempfile::tempdir().unwrap();
    let (mut session, summary) = run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(1),
            ..options(dir.path())
        },
    );
    let report = evaluate(&mut session, &config, None, EvalSplit::Test).unwrap();
    assert_eq!(Some(&report), summary.test.as_ref());
    let all = evaluate(&mut session, &config, None, EvalSplit::All).unwrap();
    assert_eq!(all.samples, 1797);
    let text = report.to_string();
    assert!(
        text.contains("test split: 179 samples") && text.contains("confusion matrix"),
        "{text}"
    );
}

#[test]
fn checkpoint_every_keeps_a_snapshot_of_every_nth_epoch() {
    let artifact = artifact(8);
    let config = TrainConfig {
        checkpoint_every: 2,
        ..config(&artifact)
    };
    let dir = tempfile::tempdir().unwrap();
    let (session, _) = run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(5),
            ..options(dir.path())
        },
    );
    for epoch in [2, 4] {
        let snapshot = Checkpoint::load(&dir.path().join(format!("epoch-{epoch}.ckpt")))
            .unwrap_or_else(|e| panic!("epoch {epoch}'s snapshot: {e}"));
        assert_eq!(snapshot.epoch, epoch);
    }
    for epoch in [1, 3, 5] {
        assert!(
            !dir.path().join(format!("epoch-{epoch}.ckpt")).exists(),
            "no snapshot of epoch {epoch}"
        );
    }
    // last.ckpt holds the end of the run, whatever the snapshots' rhythm.
    let last = Checkpoint::load(&dir.path().join("last.ckpt")).unwrap();
    assert_eq!(last.epoch, 5);
    let mut final_weights: Vec<_> = session
        .weights()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    final_weights.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(last.weights, final_weights);
}

#[test]
fn the_test_score_is_of_the_weights_saved_as_best() {
    let artifact = artifact(16);
    // A learning rate high enough that the last epoch is not the best one.
    let mut config = config(&artifact);
    config.steps[0].lr = 0.05;
    let dir = tempfile::tempdir().unwrap();
    let (_, summary) = run(
        &artifact,
        &config,
        &TrainOptions {
            epochs_override: Some(6),
            ..options(dir.path())
        },
    );
    let mut best = Session::new(&artifact).unwrap();
    let bytes = std::fs::read(dir.path().join("best.safetensors")).unwrap();
    strata_training::driver::load_params(&mut best, &bytes).unwrap();
    let report = evaluate(&mut best, &config, None, EvalSplit::Test).unwrap();
    assert_ne!(
        summary.best_epoch,
        Some(summary.epochs),
        "the case this test is about: a last epoch that is not the best"
    );
    assert_eq!(
        Some(&report),
        summary.test.as_ref(),
        "the printed test score is best.safetensors' (best epoch {:?} of {})",
        summary.best_epoch,
        summary.epochs
    );
}

#[test]
fn a_directory_where_last_ckpt_should_be_is_reported_as_a_directory() {
    let artifact = artifact(16);
    let config = config(&artifact);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("last.ckpt")).unwrap();
    let mut session = Session::new(&artifact).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..options(dir.path())
    };
    let message = train(&mut session, &config, &resume)
        .expect_err("a directory is no checkpoint")
        .to_string();
    assert!(message.contains("is a directory"), "{message}");
}
