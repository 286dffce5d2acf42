//! Training killed with SIGKILL at random moments, then resumed, ends exactly where an
//! uninterrupted run ends: the same `best.safetensors` and `last.ckpt`, byte for byte,
//! and no temporary file left behind. A kill can land anywhere (compiling, in a step,
//! while a checkpoint or the log is being written); the run directory must survive
//! every one. A start that is refused must say why and leave the directory usable.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills per test run; each lands at a moment drawn from [`SEED`].
const KILLS: usize = 20;
const SEED: u64 = 0x5eed_2026_1202;

/// A small version of the digits MLP: eight epochs of a narrow network keep a whole run
/// under a second in a debug build, so twenty kills cost seconds.
fn train(run_dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .arg("train")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsl-examples/mlp.strata"))
        .args([
            "--set",
            "hidden=16",
            "--epochs",
            "8",
            "--quiet",
            "--run-dir",
        ])
        .arg(run_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// SplitMix64: a few lines of a well-known generator, so the kill times are the same on
/// every run without a dependency.
struct Moments(u64);

impl Moments {
    /// A duration uniformly in `[0, max)`.
    fn next(&mut self, max: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        max.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// The arguments that start or continue the run in `dir`: `--resume` once a checkpoint
/// exists, else a fresh start over whatever a killed start left.
fn next_start(dir: &Path) -> &'static [&'static str] {
    if dir.join("last.ckpt").exists() {
        &["--resume"]
    } else {
        &["--overwrite"]
    }
}

fn check_refusal(output: &Output) {
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "a failed start must be a clear refusal: {err}"
    );
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("the run directory exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}

#[test]
fn runs_killed_at_random_moments_resume_to_the_uninterrupted_result() {
    let root = tempfile::tempdir().expect("temp dir");
    let straight = root.path().join("straight");
    let started = Instant::now();
    let output = train(&straight, &[]).output().expect("strata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let whole_run = started.elapsed();

    let killed = root.path().join("killed");
    let mut moments = Moments(SEED);
    let (mut kills, mut finished, mut refused) = (0, 0, 0);
    // Kills that cut a run short after it had saved a checkpoint (not while compiling).
    let mut after_a_checkpoint = 0;
    while kills < KILLS {
        let mut child = train(&killed, next_start(&killed))
            .spawn()
            .expect("strata starts");
        std::thread::sleep(moments.next(whole_run));
        match child.try_wait().expect("the child can be waited on") {
            None => {
                child.kill().expect("SIGKILL is sent");
                child.wait().expect("the killed child is reaped");
                kills += 1;
                if killed.join("last.ckpt").exists() {
                    after_a_checkpoint += 1;
                }
            }
            Some(status) => {
                let output = child.wait_with_output().expect("its output is read");
                if status.success() {
                    // The run reached its end before the kill: start it over, so that
                    // every kill lands in a run that still has work to do.
                    finished += 1;
                    std::fs::remove_dir_all(&killed).expect("the finished run is removed");
                } else {
                    check_refusal(&output);
                    refused += 1;
                }
            }
        }
        assert!(refused <= KILLS, "starts keep being refused");
    }
    let output = train(&killed, next_start(&killed))
        .output()
        .expect("strata runs");
    assert!(
        output.status.success(),
        "the last resume fails: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    for file in ["best.safetensors", "last.ckpt"] {
        let (a, b) = (straight.join(file), killed.join(file));
        let (a, b) = (
            std::fs::read(&a).expect(file),
            std::fs::read(&b).expect(file),
        );
        assert!(
            a == b,
            "{file} differs from the uninterrupted run's after {kills} kills \
             ({finished} runs finished first, {refused} starts refused)"
        );
    }
    assert_eq!(temporaries(&killed), Vec::<PathBuf>::new());
    eprintln!(
        "{kills} kills over runs of {whole_run:?}, {after_a_checkpoint} after a checkpoint: \
         {finished} finished first, {refused} refused, {:?} in all",
        started.elapsed()
    );
    assert!(
        after_a_checkpoint >= KILLS / 4,
        "only {after_a_checkpoint} kills landed in training; the rest hit the compiler"
    );
}
