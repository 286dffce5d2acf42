//! `strata sweep` end to end, as a user runs it: a tiny search over the MLP example,
//! a sweep killed with SIGKILL and resumed, and the mistakes it must refuse.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn mlp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsl-examples/mlp.strata")
}

/// A short search: 2 epochs, a small hidden size, 2 jobs of 1 thread.
fn sweep(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = strata();
    cmd.arg("sweep")
        .arg(mlp())
        .args(["--space", "lr=log(1e-3,3e-2)", "--space", "hidden=[16,32]"])
        .args([
            "--set",
            "epochs=2",
            "--jobs",
            "2",
            "--metric",
            "val.accuracy",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("sweep.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_random_sweep_ranks_its_trials_and_scores_only_the_choice_on_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let out = sweep(&dir, &["--trials", "3"]).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");

    let recs = records(&dir);
    assert_eq!(recs.len(), 3, "{all}");
    for r in &recs {
        assert_eq!(r["status"], "done", "{r}");
        let acc = r["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r}");
    }
    // The table is sorted by the metric, best first.
    let table = std::fs::read_to_string(dir.join("table.txt")).unwrap();
    let values: Vec<f64> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(values.len(), 3, "{table}");
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{table}");

    // Trials never scored the test split; the chosen one was, once.
    for t in 0..3 {
        let log =
            std::fs::read_to_string(dir.join(format!("trial-{t:03}/train-rung0.log"))).unwrap();
        assert!(!log.contains("test"), "{log}");
    }
    assert_eq!(all.matches("\ntest: ").count(), 1, "{all}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("best.json")).unwrap()).unwrap();
    assert!(best["test"]["metrics"]["accuracy"].as_f64().unwrap() > 0.0);
    assert!((best["value"].as_f64().unwrap() - values[0]).abs() < 1e-4);

    // The chosen model as a file: its values written in, and it checks.
    let file = dir.join("best.strata");
    let source = std::fs::read_to_string(&file).unwrap();
    let hidden = best["config"]["hidden"].as_str().unwrap();
    assert!(source.contains(&format!("hidden = {hidden}")), "{source}");
    assert!(source.contains("epochs = 2"), "{source}");
    let check = strata().arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check));

    let svg = std::fs::read_to_string(dir.join("sweep.svg")).unwrap();
    assert_eq!(
        svg.matches("<circle").count(),
        3 * 2,
        "one point per trial and dimension"
    );
}

/// The records of a sweep without their timings (which differ between runs).
fn results(dir: &Path) -> BTreeSet<String> {
    records(dir)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("seconds");
            r.to_string()
        })
        .collect()
}

#[test]
fn a_killed_halving_sweep_resumes_to_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--trials", "4", "--method", "halving", "--eta", "2", "--set", "epochs=4",
    ];
    // Uninterrupted.
    let whole = tmp.path().join("whole");
    let out = sweep(&whole, &args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let expected = results(&whole);
    assert!(
        expected.iter().any(|r| r.contains("\"pruned\"")),
        "{expected:?}"
    );

    // Killed once the first trial has finished, then resumed.
    let dir = tmp.path().join("killed");
    let mut child = sweep(&dir, &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.join("sweep.jsonl").is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no trial finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = records(&dir).len();
    assert!(before < expected.len(), "the sweep was not interrupted");

    // A fresh sweep over it is refused; resuming finishes it.
    let out = sweep(&dir, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--resume"), "{}", text(&out));
    let out = sweep(&dir, &[&args[..], &["--resume"]].concat())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(results(&dir), expected);
    // No training left running, no temporary file left.
    for entry in walk(&dir) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "{}", entry.display());
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn mistakes_are_refused_before_any_trial_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    for (space, why) in [
        ("lr=log(0,1)", "above 0"),
        ("lr=between(1,2)", "`between` is not a range"),
        ("hidden", "no `=`"),
    ] {
        let out = strata()
            .args(["sweep"])
            .arg(mlp())
            .args(["--space", space, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{space}: {}", text(&out));
        assert!(text(&out).contains(why), "{space}: {}", text(&out));
    }
    // A value the model refuses names its trial, and nothing ran.
    let out = strata()
        .args(["sweep"])
        .arg(mlp())
        .args(["--space", "hidden=[32,0]", "--method", "grid", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("trial 1 (--set hidden=0)"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("sweep.jsonl").exists());

    // Resuming a different sweep is refused.
    let out = sweep(&dir, &["--trials", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = sweep(&dir, &["--trials", "2", "--resume"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("different sweep"), "{}", text(&out));
}

#[test]
fn a_sweep_section_in_the_file_is_the_space_and_the_command_line_adds_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mlp.strata");
    let mlp_text = std::fs::read_to_string(mlp()).unwrap();
    let section =
        "\nsweep Mlp {\n    hidden = [16, 32]\n    trials = 2   metric = val.accuracy\n}\n";
    std::fs::write(&file, format!("{mlp_text}{section}")).unwrap();
    let dir = tmp.path().join("s");
    let run = |extra: &[&str]| {
        strata()
            .arg("sweep")
            .arg(&file)
            .args(["--set", "epochs=1", "--jobs", "2", "--dir"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--space", "lr=[0.01]"]);
    assert!(out.status.success(), "{}", text(&out));
    let header: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(
        header["space"],
        serde_json::json!(["hidden=[16, 32]", "lr=[0.01]"])
    );
    assert_eq!(header["metric"], "val.accuracy");
    assert_eq!(records(&dir).len(), 2);
    // Still a model file every other command takes.
    let check = strata().arg("check").arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", text(&check));

    // A range the sweep cannot read is located in the file.
    let bad = section.replace("[16, 32]", "log(0, 1)");
    std::fs::write(&file, format!("{mlp_text}{bad}")).unwrap();
    let out = run(&["--overwrite"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = mlp_text.lines().count();
    assert!(
        text(&out).contains(&format!("mlp.strata:{}:14", lines + 3)),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("above 0"), "{}", text(&out));
    // A section for a model the file does not have.
    std::fs::write(
        &file,
        format!("{mlp_text}{}", section.replace("Mlp", "Mpl")),
    )
    .unwrap();
    let out = run(&["--overwrite"]);
    assert!(
        text(&out).contains("`sweep Mpl` names no model"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_reports_every_mistake_of_a_sweep_section() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mlp.strata");
    let mlp_text = std::fs::read_to_string(mlp()).unwrap();
    let section = "\nsweep Mlp {\n    hiden = [16, 32]\n    lr = log(0, 1)\n    method = annealing\n    trials = 0\n}\n";
    std::fs::write(&file, format!("{mlp_text}{section}")).unwrap();
    let out = strata().arg("check").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    let first = mlp_text.lines().count() + 3;
    for (line, what) in [
        (
            first,
            "`hiden` is neither a hyper-parameter of `Mlp` nor a train setting",
        ),
        (first, "did you mean `hidden`?"),
        (first + 1, "above 0"),
        (first + 2, "`method` is one of grid, random, halving"),
        (first + 3, "`trials` is a whole number of at least 1"),
    ] {
        assert!(all.contains(what), "{what}: {all}");
        assert!(
            all.contains(&format!("mlp.strata:{line}:")),
            "line {line}: {all}"
        );
    }
    // A section for a model the file does not have, with a suggestion.
    std::fs::write(
        &file,
        format!("{mlp_text}{}", section.replace("Mlp", "Mpl")),
    )
    .unwrap();
    let out = strata().arg("check").arg(&file).output().unwrap();
    assert!(text(&out).contains("did you mean `Mlp`?"), "{}", text(&out));
}
