//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) in the normal suite:
//! every input must be handled without a panic, and in well under the fuzzer's timeout.

use strata_tests::{fuzz_bodies, root};

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = root().join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("readable");
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{} panicked on {}", target, path.display());
        // Inputs that once hung a target stay fast (the fuzzer allows 10 s an input).
        let took = started.elapsed();
        assert!(
            took.as_secs() < 10,
            "{target} took {took:?} on {}",
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn check_corpus_never_panics() {
    assert!(replay("check", fuzz_bodies::check_text) >= 3);
}

#[test]
fn compile_corpus_never_panics() {
    assert!(replay("compile", fuzz_bodies::compile_text) >= 3);
}

#[test]
fn artifact_corpus_never_panics() {
    assert!(replay("artifact", fuzz_bodies::load_artifact) >= 3);
}

/// The artifact fuzzer needs one artifact that loads, so its mutations reach the
/// manifest, the kernels and the bounds checks instead of stopping at the header: a tiny
/// two-layer model's artifact, of the current format. After a format change,
/// `STRATA_BLESS=1` writes it again.
#[test]
fn the_artifact_corpus_holds_a_valid_artifact() {
    let path = root().join("fuzz/corpus/artifact/valid_tiny_mlp");
    if std::env::var_os("STRATA_BLESS").is_some() {
        let source = strata_compiler::source::SourceFile::new(
            "tiny.strata",
            "model Tiny {\n    input x: f32[batch, 3]\n    output y = x |> dense(4) |> relu |> dense(2)\n}\n",
        );
        let options = strata_compiler::driver::CompileOptions::default();
        let compiled = strata_compiler::driver::compile(&source, &options).expect("compiles");
        std::fs::write(&path, compiled.artifact.to_bytes().expect("encodes")).expect("writes");
    }
    let bytes = std::fs::read(&path).expect("the seed exists (STRATA_BLESS=1 writes it)");
    let artifact = strata_artifact::Artifact::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}; re-bless it with STRATA_BLESS=1", path.display()));
    assert_eq!(artifact.manifest.model, "Tiny");
}

#[test]
fn data_corpus_never_panics() {
    assert!(replay("data", fuzz_bodies::load_data) >= 8);
}

#[test]
fn checkpoint_corpus_never_panics() {
    assert!(replay("checkpoint", fuzz_bodies::load_checkpoint) >= 3);
}

#[test]
fn kernel_ir_corpus_never_panics() {
    assert!(replay("kernel_ir", fuzz_bodies::parse_kernel_text) >= 30);
}

#[test]
fn weights_corpus_never_panics() {
    assert!(replay("weights", fuzz_bodies::load_weights) >= 3);
}

#[test]
fn onnx_corpus_never_panics() {
    assert!(replay("onnx", fuzz_bodies::import_onnx) >= 5);
}

/// A built artifact, every byte flipped in turn over a stride, never panics the loader.
#[test]
fn mutated_artifacts_never_panic() {
    use strata_compiler::driver::{CompileOptions, compile};
    let source = strata_tests::load_example(&root().join("dsl-examples/mlp.strata"));
    let compiled = compile(&source, &CompileOptions::default()).expect("compiles");
    let bytes = compiled.artifact.to_bytes().expect("serializes");
    for i in (0..bytes.len()).step_by(97) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        fuzz_bodies::load_artifact(&b);
        fuzz_bodies::load_artifact(&b[..i]);
    }
}
