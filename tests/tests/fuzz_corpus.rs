//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) on stable Rust: every
//! input must be handled without a panic.

use strata_tests::{fuzz_bodies, root};

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = root().join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("readable");
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{} panicked on {}", target, path.display());
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
    assert!(replay("artifact", fuzz_bodies::load_artifact) >= 2);
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
