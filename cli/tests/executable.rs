//! A built executable's command line, run in-process on an artifact in memory
//! (`strata_cli::executable::run_cli`): what it prints, the files it writes, and its exit
//! codes. `cli.rs` runs the real binary end to end.

use std::process::ExitCode;
use strata_artifact::npy::{read_npy, write_npy};
use strata_artifact::{Artifact, HostTensor, append_to_executable};
use strata_cli::executable::run_cli;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;

const MODEL: &str = "model AddRelu {
    input x: f32[batch, 4]
    output h = x |> dense(2)
    output y = relu(h)
}
";

fn artifact() -> Artifact {
    let source = SourceFile::new("addrelu.strata", MODEL);
    compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact
}

/// Runs the executable made of `artifact` appended to a stand-in binary.
fn run(args: &[&str], exe: Vec<u8>) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_cli(args.iter().copied(), || Ok(exe), &mut out, &mut err);
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (code, text(out), text(err))
}

fn executable() -> Vec<u8> {
    append_to_executable(b"stub", &artifact().to_bytes().expect("serializes"))
}

#[test]
fn the_executable_prints_its_model_info() {
    let (code, out, err) = run(&["addrelu", "info"], executable());
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("entry infer"), "{out}");
    assert!(out.contains("input   x  f32[batch, 4]"), "{out}");
    assert!(out.contains("device      cpu"), "{out}");
}

/// Output whose every write fails with this error: `BrokenPipe` when its reader has gone
/// (`./model info | head -1`).
struct FailingOutput(std::io::ErrorKind);

impl std::io::Write for FailingOutput {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_output_stops_the_executable_quietly() {
    let info = |kind| {
        let mut err = Vec::new();
        let exe = executable();
        let code = run_cli(
            ["addrelu", "info"],
            || Ok(exe),
            &mut FailingOutput(kind),
            &mut err,
        );
        (code, String::from_utf8(err).unwrap())
    };
    assert_eq!(
        info(std::io::ErrorKind::BrokenPipe),
        (ExitCode::SUCCESS, String::new())
    );
    // Any other write error is one.
    let (code, err) = info(std::io::ErrorKind::StorageFull);
    assert_eq!(code, ExitCode::from(1));
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn an_executable_without_a_model_says_so() {
    let (code, _, err) = run(&["stub", "info"], b"just a stub".to_vec());
    assert_eq!(code, ExitCode::from(1));
    assert!(
        err.starts_with("error: this executable holds no compiled model"),
        "{err}"
    );
}

#[test]
fn an_executable_without_an_onnx_model_says_why_it_cannot_export() {
    // `compile` alone leaves the ONNX section empty (`strata build` fills it).
    let dir = tempfile::tempdir().expect("temp dir");
    let onnx = dir.path().join("addrelu.onnx");
    let path = onnx.to_str().expect("utf-8");
    let (code, _, err) = run(&["addrelu", "export", "-o", path], executable());
    assert_eq!(code, ExitCode::from(1));
    assert!(
        err.starts_with(
            "error: this executable carries no ONNX model: the `infer` of `AddRelu` does not export"
        ),
        "{err}"
    );
    assert!(!onnx.exists());
}

#[test]
fn the_executable_refuses_bad_arguments_with_exit_code_2() {
    let (code, _, err) = run(&["stub", "infer", "--bogus"], Vec::new());
    assert_eq!(code, ExitCode::from(2));
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn the_executable_runs_inference_on_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let (x_path, y_path) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let x = HostTensor::f32(vec![3, 4], (0..12).map(|i| i as f32 * 0.25 - 1.0).collect())
        .expect("a tensor");
    write_npy(&x_path, &x).unwrap();
    let want = Session::new(&artifact())
        .unwrap()
        .run("infer", &[("x", x.clone())])
        .unwrap();
    let want_y = &want.iter().find(|(n, _)| n == "y").expect("output y").1;

    let x_arg = format!("x={}", x_path.display());
    let y_arg = format!("y={}", y_path.display());
    let (code, _, err) = run(
        &["model", "infer", "--input", &x_arg, "--output", &y_arg],
        executable(),
    );
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert_eq!(&read_npy(&y_path).unwrap(), want_y);

    // Without --output it prints a preview; a single input needs no name.
    let lone = x_path.display().to_string();
    let (code, out, err) = run(&["model", "infer", "-i", &lone], executable());
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("h: f32[3, 2] = ["), "{out}");
    assert!(out.contains("y: f32[3, 2] = ["), "{out}");
}

#[test]
fn the_executable_benchmarks_its_entries_as_json_lines() {
    let args = [
        "model",
        "bench",
        "--entry",
        "infer",
        "--batch",
        "3",
        "--batch",
        "5",
        "--seconds",
        "0",
        "--profile",
        "--json",
    ];
    let (code, out, err) = run(&args, executable());
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, batch) in lines.iter().zip([3, 5]) {
        assert!(line.contains(&format!("\"batch\":{batch},")), "{line}");
        assert!(line.contains("\"entry\":\"infer\""), "{line}");
        assert!(line.contains("\"median_ms\":"), "{line}");
        assert!(line.contains("\"kernels\":[{"), "a profile: {line}");
    }
}

#[test]
fn the_executable_refuses_a_bench_of_an_unknown_entry() {
    let (code, _, err) = run(&["model", "bench", "--entry", "nope"], executable());
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("no entry `nope`"), "{err}");
}
