//! The `strata` command and the executables it builds, run as a user would run them:
//! as subprocesses, the executable copied into a directory with nothing else in it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dsl-examples")
        .join(name)
}

/// A minimal .npy (format 1.0, little-endian f32, C order) so this test needs nothing
/// but the binaries.
fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write npy");
}

/// The f32 payload of an .npy this runtime wrote (header length from the preamble).
fn read_npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("output written");
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Builds `dsl-examples/mlp.strata` into `dir/mlp` and returns its path.
fn build_mlp(dir: &Path) -> PathBuf {
    let exe = dir.join("mlp");
    let out = strata()
        .arg("build")
        .arg(example("mlp.strata"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("strata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs a program this test wrote, retrying while the kernel reports it busy: another
/// test's child process, forked while this file was open for writing, can hold the
/// write descriptor for a moment (ETXTBSY).
fn output_of(command: &mut Command) -> std::process::Output {
    for _ in 0..50 {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("runs"),
        }
    }
    command.output().expect("runs")
}

/// Marks a copied or rewritten file executable.
fn make_executable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[test]
fn built_executable_runs_alone_and_matches_strata_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_mlp(dir.path());

    // A second directory holding only the executable and its input: no compiler, no source.
    let alone = tempfile::tempdir().expect("temp dir");
    let lone_exe = alone.path().join("mlp");
    std::fs::copy(&exe, &lone_exe).expect("copy");
    make_executable(&lone_exe);
    let x: Vec<f32> = (0..7 * 64)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    write_npy_f32(&alone.path().join("x.npy"), &[7, 64], &x);

    let info = output_of(
        Command::new(&lone_exe)
            .arg("info")
            .current_dir(alone.path()),
    );
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info_text = String::from_utf8_lossy(&info.stdout);
    assert!(info_text.contains("infer"), "{info_text}");
    assert!(info_text.contains("logits"), "{info_text}");
    // It carries its kernels' machine code, compiled for this machine's CPU.
    assert!(
        info_text.contains("cpu code    machine code for") && info_text.contains("runs here"),
        "{info_text}"
    );

    let run = output_of(
        Command::new(&lone_exe)
            .args(["infer", "--input", "x=x.npy", "--output", "logits=y.npy"])
            .current_dir(alone.path()),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let from_exe = read_npy_f32(&alone.path().join("y.npy"));
    assert_eq!(from_exe.len(), 7 * 10);

    // `strata run` compiles the same file with the same seed: identical numbers.
    let y2 = alone.path().join("y2.npy");
    let run2 = strata()
        .arg("run")
        .arg(example("mlp.strata"))
        .arg("--input")
        .arg(format!("x={}", alone.path().join("x.npy").display()))
        .arg("--output")
        .arg(format!("logits={}", y2.display()))
        .output()
        .expect("strata runs");
    assert!(
        run2.status.success(),
        "{}",
        String::from_utf8_lossy(&run2.stderr)
    );
    assert_eq!(read_npy_f32(&y2), from_exe);
}

#[test]
fn an_executable_built_without_machine_code_compiles_at_start_and_answers_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let with_code = build_mlp(dir.path());
    let without = dir.path().join("mlp_jit");
    let out = strata()
        .arg("build")
        .arg(example("mlp.strata"))
        .args(["--no-machine-code", "-o"])
        .arg(&without)
        .output()
        .expect("strata runs");
    let err = stderr_of(&out);
    assert!(
        out.status.success() && err.contains("no machine code"),
        "{err}"
    );
    let info = output_of(Command::new(&without).arg("info"));
    let info_text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info_text.contains("cpu code    compiled when first run (built without machine code)"),
        "{info_text}"
    );
    let x: Vec<f32> = (0..5 * 64)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
        .collect();
    write_npy_f32(&dir.path().join("x.npy"), &[5, 64], &x);
    let logits = |exe: &Path, name: &str| {
        let y = dir.path().join(name);
        let run = output_of(
            Command::new(exe)
                .args(["infer", "--input", "x=x.npy", "--output"])
                .arg(format!("logits={}", y.display()))
                .current_dir(dir.path()),
        );
        assert!(run.status.success(), "{}", stderr_of(&run));
        read_npy_f32(&y)
    };
    assert_eq!(logits(&with_code, "a.npy"), logits(&without, "b.npy"));
}

#[test]
fn executable_rejects_wrong_input_shape_naming_both_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_mlp(dir.path());
    write_npy_f32(&dir.path().join("bad.npy"), &[3, 63], &vec![0.0; 3 * 63]);
    let run = output_of(
        Command::new(&exe)
            .args(["infer", "--input"])
            .arg(format!("x={}", dir.path().join("bad.npy").display())),
    );
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("f32[batch, 64]") && err.contains("f32[3, 63]"),
        "{err}"
    );
}

#[test]
fn altered_executable_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_mlp(dir.path());
    let mut bytes = std::fs::read(&exe).expect("read");
    // Flip a byte inside the appended artifact (just before the 16-byte trailer).
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    let broken = dir.path().join("broken");
    std::fs::write(&broken, &bytes).expect("write");
    make_executable(&broken);
    let run = output_of(Command::new(&broken).arg("info"));
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn check_reports_diagnostics_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.strata");
    std::fs::write(
        &file,
        "model M {\n    input x: f32[batch, 4]\n    output y = x |> rellu\n}\n",
    )
    .expect("write");
    let out = strata().arg("check").arg(&file).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("E0003") && err.contains("did you mean `relu`"),
        "{err}"
    );

    let ok = strata()
        .arg("check")
        .arg(example("mlp.strata"))
        .output()
        .expect("runs");
    assert!(ok.status.success());
}

#[test]
fn check_shows_the_first_twenty_mistakes_and_counts_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("many.strata");
    // 25 bindings, each calling a misspelled layer: 25 independent mistakes.
    let mut text = String::from("model M {\n    input x: f32[batch, 4]\n");
    for i in 0..25 {
        text.push_str(&format!("    h{i} = x |> rellu\n"));
    }
    text.push_str("    output y = x |> relu\n}\n");
    std::fs::write(&file, text).expect("write");
    let out = strata().arg("check").arg(&file).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("error[E0003]").count(), 20, "{err}");
    assert!(err.contains("5 more errors not shown"), "{err}");
    assert!(err.contains("25 errors found"), "{err}");

    let json = strata()
        .args(["check", "--error-format", "json"])
        .arg(&file)
        .output()
        .expect("runs");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 21);
    assert_eq!(lines[20]["more_errors"], 5);
}

#[test]
fn check_lists_every_model_of_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("two.strata");
    std::fs::write(
        &file,
        "model A {\n    input x: f32[batch, 4]\n    output y = x |> relu\n}\n\
         model B {\n    input x: f32[batch, 4]\n    output y = x |> dense(2)\n}\n",
    )
    .expect("write");
    let out = strata().arg("check").arg(&file).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("model `A` is well-formed"), "{text}");
    assert!(
        text.contains("model `B` is well-formed (6 ops, 10 parameters)"),
        "{text}"
    );
}

#[test]
fn set_overrides_a_hyper_parameter() {
    let out = strata()
        .args(["ir", "--set", "hidden=32"])
        .arg(example("mlp.strata"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("@dense0.weight : f32[32, 64]"), "{text}");
}

#[test]
fn ir_dot_is_a_digraph() {
    let out = strata()
        .args(["ir", "--format", "dot"])
        .arg(example("residual.strata"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("digraph \"ResMlp\" {") && text.trim_end().ends_with('}'),
        "{text}"
    );
}

#[test]
fn bench_stops_quietly_when_its_output_closes() {
    use std::io::{BufRead, BufReader};
    let mut child = strata()
        .args(["bench", "--entry", "infer", "--batch", "1", "--batch", "2"])
        .args(["--batch", "3", "--seconds", "0.2", "--profile"])
        .arg(example("mlp.strata"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strata runs");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("a line");
    // The reader goes away (as `| head -1` does) while bench still has lines to print.
    let out = child.wait_with_output().expect("strata ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("Mlp: "), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn build_refuses_to_replace_anything_but_a_regular_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let build_to = |out: &Path| {
        strata()
            .arg("build")
            .arg(example("mlp.strata"))
            .arg("-o")
            .arg(out)
            .output()
            .expect("strata runs")
    };
    let target = dir.path().join("out");
    std::fs::create_dir(&target).unwrap();
    let mut refused = vec![(target.clone(), "is a directory")];
    #[cfg(unix)]
    {
        refused.push((PathBuf::from("/dev/null"), "is a character device"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        refused.push((link, "is a directory"));
        let fifo = dir.path().join("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            refused.push((fifo, "is a FIFO"));
        }
    }
    for (path, what) in refused {
        let out = build_to(&path);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            err.contains(&format!("{what}, not a regular file")),
            "{}: {err}",
            path.display()
        );
    }
    assert!(target.is_dir() && std::fs::read_dir(&target).unwrap().next().is_none());
    let file = dir.path().join("mlp");
    std::fs::write(&file, b"an old build").unwrap();
    let out = build_to(&file);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn build_and_run_without_weights_say_the_weights_are_untrained() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = strata()
        .arg("build")
        .arg(example("mlp.strata"))
        .arg("-o")
        .arg(dir.path().join("mlp"))
        .current_dir(dir.path())
        .output()
        .expect("strata runs");
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: no --weights: the model's")
            && err.contains("parameters are UNTRAINED")
            && err.contains("strata train"),
        "{err}"
    );

    // With a run directory, the warning points at its weights (and still uses none).
    let run_dir = dir.path().join("runs/mlp");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("best.safetensors"), b"").unwrap();
    write_npy_f32(&dir.path().join("x.npy"), &[1, 64], &[0.5; 64]);
    let out = strata()
        .arg("run")
        .arg(example("mlp.strata"))
        .args(["--input", "x=x.npy"])
        .current_dir(dir.path())
        .output()
        .expect("strata runs");
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("UNTRAINED")
            && err.contains("runs/mlp/best.safetensors holds trained weights: pass --weights"),
        "{err}"
    );
}

#[test]
fn an_executable_evaluates_the_weights_its_train_command_just_wrote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_mlp(dir.path());
    let eval = |extra: &[&str]| {
        let out = output_of(
            Command::new(&exe)
                .arg("eval")
                .args(extra)
                .current_dir(dir.path()),
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr_of(&out),
        )
    };
    let (built_in, note) = eval(&[]);
    assert!(note.contains("scoring the built-in weights"), "{note}");

    let trained = output_of(
        Command::new(&exe)
            .args(["train", "--epochs", "1", "--quiet"])
            .current_dir(dir.path()),
    );
    assert!(trained.status.success(), "{}", stderr_of(&trained));
    assert!(dir.path().join("runs/mlp/best.safetensors").is_file());

    let (after, note) = eval(&[]);
    assert!(
        note.contains("scoring the weights in runs/mlp/best.safetensors"),
        "{note}"
    );
    assert_ne!(after, built_in, "eval still scores the built-in weights");
    let (named, _) = eval(&["--weights", "runs/mlp/best.safetensors"]);
    assert_eq!(after, named);

    // A second fresh `train` refuses to replace the run (usage error, exit code 2).
    let again = output_of(
        Command::new(&exe)
            .args(["train", "--epochs", "1", "--quiet"])
            .current_dir(dir.path()),
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr_of(&again));
    assert!(
        stderr_of(&again).contains("runs/mlp already holds a run"),
        "{}",
        stderr_of(&again)
    );
}

#[test]
fn a_second_training_on_a_run_directory_in_use_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run_dir = dir.path().join("run");
    let train = |epochs: &str, extra: &[&str]| {
        let mut command = strata();
        command
            .arg("train")
            .arg(example("mlp.strata"))
            .args([
                "--set",
                "hidden=16",
                "--epochs",
                epochs,
                "--quiet",
                "--run-dir",
            ])
            .arg(&run_dir)
            .args(extra);
        command
    };
    let mut first = train("1000", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strata starts");
    // The lock is taken before the first checkpoint is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !run_dir.join("last.ckpt").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = train("1000", &["--resume"]).output().expect("strata runs");
    first.kill().expect("SIGKILL is sent");
    first.wait().expect("the first run is reaped");
    let err = stderr_of(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is in use by another training (process {})",
            first.id()
        )),
        "{err}"
    );
    // Its holder gone, the directory is free again.
    let third = train("1", &["--resume"]).output().expect("strata runs");
    assert!(third.status.success(), "{}", stderr_of(&third));
}

/// `strata weights` on PyTorch's `state_dict` of a `TransformerEncoderLayer` (written by
/// `tests/fixtures/torch/make_fixtures.py`): every tensor matches the built-in layer; a
/// model that differs is told apart tensor by tensor, with exit code 1.
#[test]
fn weights_lists_a_torch_state_dict_against_the_model() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/torch/encoder_relu.safetensors");
    let dir = tempfile::tempdir().expect("temp dir");
    let model = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        file
    };
    let same = model(
        "same.strata",
        "model M {\n    input x: f32[batch, 5, 8]\n    layer enc = transformer_encoder_layer(heads = 2, ff = 16)\n    output y = enc(x)\n}\n",
    );
    let out = strata()
        .arg("weights")
        .arg(&same)
        .arg(&weights)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.lines()
            .any(|l| words(l) == "matched enc.self_attn.in_proj_weight f32[24, 8]"),
        "{text}"
    );
    assert!(
        text.contains("12 matched, 0 missing, 0 unused, 0 mismatched"),
        "{text}"
    );

    // A wider feed-forward network, and a layer the file does not have.
    let other = model(
        "other.strata",
        "model M {\n    input x: f32[batch, 5, 8]\n    layer enc = transformer_encoder_layer(heads = 2, ff = 32)\n    layer extra = dense(8)\n    output y = x |> enc |> extra\n}\n",
    );
    let out = strata()
        .arg("weights")
        .arg(&other)
        .arg(&weights)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("mismatch  enc.linear1.weight")
            && text.contains("model f32[32, 8], file f32[16, 8]"),
        "{text}"
    );
    assert!(text.contains("missing   extra.weight"), "{text}");
    assert!(
        text.contains("9 matched, 2 missing, 0 unused, 3 mismatched"),
        "{text}"
    );

    let unrelated = model(
        "unrelated.strata",
        "model M {\n    input x: f32[batch, 8]\n    output y = x |> dense(4)\n}\n",
    );
    let out = strata()
        .arg("weights")
        .arg(&unrelated)
        .arg(&weights)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("unused    enc.norm2.bias"), "{text}");
    assert!(
        text.contains("0 matched, 2 missing, 12 unused, 0 mismatched"),
        "{text}"
    );
}

/// Every f32 tensor of a safetensors file, by name.
fn read_safetensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).expect("readable");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

/// `strata step` from PyTorch's weights of an encoder layer, one Adam step on the batch
/// PyTorch stepped on: the written weights moved as PyTorch's did, the gradients are
/// PyTorch's, and the optimizer state is written beside them.
#[test]
fn step_runs_adam_on_a_given_batch_as_torch_does() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch");
    let weights = fixtures.join("encoder_gelu.safetensors");
    let io = read_safetensors(&fixtures.join("encoder_gelu.io.safetensors"));
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("enc.strata");
    std::fs::write(
        &model,
        "model Enc {\n    input x: f32[batch, 5, 8]\n    layer enc = transformer_encoder_layer(heads = 2, ff = 16, activation = gelu)\n    output y = enc(x)\n}\ntrain Enc {\n    label target: f32[batch, 5, 8]\n    loss = mse(y, target)\n    optimizer = adam(lr = 0.01)\n}\n",
    )
    .expect("write");
    for name in ["x", "target"] {
        let (shape, data) = &io[name];
        write_npy_f32(&dir.path().join(format!("{name}.npy")), shape, data);
    }
    let out_path = dir.path().join("after.safetensors");
    let out = strata()
        .arg("step")
        .arg(&model)
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(format!("x={}", dir.path().join("x.npy").display()))
        .arg("--input")
        .arg(format!(
            "target={}",
            dir.path().join("target.npy").display()
        ))
        .args(["--steps", "1", "-o"])
        .arg(&out_path)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("step 1 train: loss"), "{text}");
    let after = read_safetensors(&out_path);
    let before = read_safetensors(&weights);
    assert!(
        after.keys().any(|k| k.starts_with("optim.")),
        "optimizer state written"
    );
    let (mut worst, mut scale) = (0.0f32, 0.0f32);
    for (key, (_, old)) in &before {
        let (_, ours) = &after[key];
        let (_, theirs) = &io[&format!("adam.{key}")];
        // The key's part of in_proj_bias: a zero gradient here, rounding noise in
        // PyTorch (see docs/language.md).
        let third = old.len() / 3;
        for i in 0..old.len() {
            if key.ends_with("in_proj_bias") && (third..2 * third).contains(&i) {
                continue;
            }
            let (mine, want) = (ours[i] - old[i], theirs[i] - old[i]);
            worst = worst.max((mine - want).abs());
            scale = scale.max(want.abs());
        }
    }
    assert!(
        scale > 0.0 && worst / scale < 1e-4,
        "update error {}",
        worst / scale
    );

    // The gradients of the step, every parameter's against PyTorch's `.grad`.
    let (mut worst, mut scale) = (0.0f32, 0.0f32);
    for key in before.keys() {
        let (_, ours) = &after[&format!("grad.{key}")];
        let (_, theirs) = &io[&format!("grad.{key}")];
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    eprintln!("gradient error {:.2e}", worst / scale);
    assert!(
        scale > 0.0 && worst / scale < 1e-5,
        "gradient error {}",
        worst / scale
    );
}

#[test]
fn export_writes_the_given_weights_as_initializers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("tiny.strata");
    std::fs::write(
        &model,
        "model Tiny() {\n    input x: f32[batch, 2]\n    output y = x |> dense(1)\n}\n",
    )
    .expect("write model");
    let weights = dir.path().join("w.safetensors");
    let w: Vec<u8> = [3.0f32, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let b: Vec<u8> = 5.0f32.to_le_bytes().to_vec();
    let tensors = [
        (
            "dense0.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 2], &w)
                .expect("view"),
        ),
        (
            "dense0.bias",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &b)
                .expect("view"),
        ),
    ];
    std::fs::write(
        &weights,
        safetensors::serialize(tensors, None).expect("serialize"),
    )
    .expect("write weights");
    let onnx = dir.path().join("tiny.onnx");
    let out = strata()
        .arg("export")
        .arg(&model)
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(&onnx)
        .output()
        .expect("strata runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("UNTRAINED"), "{stderr}");
    let bytes = std::fs::read(&onnx).expect("the file is written");
    let decoded = strata_onnx::decode_model(&bytes).expect("an ONNX model");
    let graph = decoded.graph.expect("a graph");
    let raw = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
            .raw_data
            .clone()
    };
    assert_eq!(raw("dense0.weight"), w);
    assert_eq!(raw("dense0.bias"), b);
    assert_eq!(graph.input[0].name, "x");
    assert_eq!(graph.output[0].name, "y");
}

#[test]
fn export_of_a_random_draw_in_infer_writes_an_onnx_draw_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let onnx = dir.path().join("gan.onnx");
    let out = strata()
        .arg("export")
        .arg(example("gan.strata"))
        .arg("-o")
        .arg(&onnx)
        .output()
        .expect("strata runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("gan.strata:20:9): the ONNX model draws them with the runtime's generator")
            && stderr.contains("not the numbers Strata draws"),
        "{stderr}"
    );
    let model = strata_onnx::decode_model(&std::fs::read(&onnx).expect("written")).expect("ONNX");
    let graph = model.graph.expect("a graph");
    assert!(
        graph.node.iter().any(|n| n.op_type == "RandomUniformLike"),
        "the draw is an ONNX draw"
    );
}

/// `./model export` writes, byte for byte, the file `strata export` writes for the model
/// file it was built from and the same weights: the built-in ones (here the initial
/// weights) and a file given to both.
#[test]
fn a_built_executable_exports_the_file_strata_export_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = example("conv_autoencoder.strata");
    let exe = dir.path().join("conv_autoencoder");
    let out = strata()
        .arg("build")
        .arg(&model)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("strata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = |command: &mut Command, onnx: &Path| {
        let out = output_of(command.arg("-o").arg(onnx));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        std::fs::read(onnx).expect("written")
    };
    let by_strata = export(
        strata().arg("export").arg(&model),
        &dir.path().join("a.onnx"),
    );
    let by_exe = export(Command::new(&exe).arg("export"), &dir.path().join("b.onnx"));
    assert!(
        by_strata == by_exe,
        "the built-in weights export as `strata export` writes them"
    );

    // Other weights, given to both: the exported parameters, changed.
    let weights = dir.path().join("w.safetensors");
    let init = strata_onnx::decode_model(&by_strata).expect("ONNX");
    let graph = init.graph.expect("a graph");
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = graph
        .initializer
        .iter()
        // The parameters and the normalization's statistics; not the export's constants.
        .filter(|t| !t.name.starts_with("onnx."))
        .map(|t| {
            let values: Vec<u8> = t
                .raw_data
                .chunks_exact(4)
                .flat_map(|c| {
                    (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 0.5 + 0.25).to_le_bytes()
                })
                .collect();
            (
                t.name.clone(),
                t.dims.iter().map(|&d| d as usize).collect(),
                values,
            )
        })
        .collect();
    assert!(
        tensors.len() >= 10,
        "every layer's weight and bias, and the normalization"
    );
    let views = tensors.iter().map(|(name, dims, values)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.clone(), values)
                .expect("view");
        (name.as_str(), view)
    });
    std::fs::write(
        &weights,
        safetensors::serialize(views, None).expect("serialize"),
    )
    .expect("write weights");
    let by_strata = export(
        strata()
            .arg("export")
            .arg(&model)
            .arg("--weights")
            .arg(&weights),
        &dir.path().join("c.onnx"),
    );
    let by_exe = export(
        Command::new(&exe)
            .arg("export")
            .arg("--weights")
            .arg(&weights),
        &dir.path().join("d.onnx"),
    );
    assert!(
        by_strata == by_exe,
        "given weights export as `strata export` writes them"
    );
    let trained = strata_onnx::decode_model(&by_exe).expect("ONNX");
    assert!(
        trained
            .doc_string
            .ends_with(&format!("with the weights of {}", weights.display())),
        "{}",
        trained.doc_string
    );
}

/// `strata import` on a PyTorch-exported ONNX model writes a model file and its weights
/// that `strata build` makes into an executable computing PyTorch's output.
#[test]
fn an_imported_onnx_model_builds_to_an_executable_that_matches_torch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/onnx/fixtures");
    let model = dir.path().join("mlp.strata");
    let out = strata()
        .arg("import")
        .arg(fixtures.join("mlp.onnx"))
        .arg("-o")
        .arg(&model)
        .output()
        .expect("strata runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let weights = dir.path().join("mlp.safetensors");
    assert!(
        stderr_of(&out).contains("wrote") && weights.exists(),
        "{}",
        stderr_of(&out)
    );
    let text = std::fs::read_to_string(&model).expect("the model file");
    assert!(text.contains("model Mlp {"), "{text}");

    let exe = dir.path().join("mlp");
    let out = strata()
        .arg("build")
        .arg(&model)
        .arg("--weights")
        .arg(&weights)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("strata runs");
    assert!(out.status.success(), "{}", stderr_of(&out));

    // PyTorch's input and output, from the fixture's safetensors file.
    let io = std::fs::read(fixtures.join("mlp.io.safetensors")).expect("io");
    let io = safetensors::SafeTensors::deserialize(&io).expect("safetensors");
    let tensor = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = io.tensor(name).expect("a tensor");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), v)
    };
    let (x_shape, x) = tensor("x");
    let (_, want) = tensor("y");
    write_npy_f32(&dir.path().join("x.npy"), &x_shape, &x);
    let run = output_of(
        Command::new(&exe)
            .args(["infer", "--input", "x=x.npy", "--output", "y=y.npy"])
            .current_dir(dir.path()),
    );
    assert!(run.status.success(), "{}", stderr_of(&run));
    let got = read_npy_f32(&dir.path().join("y.npy"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn import_of_a_file_that_is_not_onnx_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff\xff\xff not protobuf").expect("write");
    let out = strata()
        .arg("import")
        .arg(&junk)
        .arg("-o")
        .arg(dir.path().join("m.strata"))
        .output()
        .expect("strata runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.starts_with("error: ") && err.contains("junk.onnx: not an ONNX model"),
        "{err}"
    );
    assert!(!dir.path().join("m.strata").exists());
}
