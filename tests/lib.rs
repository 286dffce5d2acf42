//! Shared helpers for Strata's end-to-end tests.

use std::path::{Path, PathBuf};
use strata_compiler::syntax::SourceFile;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every model file in `dsl-examples/`, sorted by name.
pub fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("dsl-examples"))
        .expect("dsl-examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "strata"))
        .collect();
    files.sort();
    files
}

/// A model file loaded under its short name (`mlp.strata`), so snapshots do not depend on
/// where the checkout lives.
pub fn load_example(path: &Path) -> SourceFile {
    let text = std::fs::read_to_string(path).expect("example is readable");
    let name = path
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .to_string();
    SourceFile::new(name, text)
}

/// A small deterministic generator for test inputs (xorshift64*), so tests need no
/// random-number crate and fail the same way every run.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The bodies of the fuzz targets in `fuzz/`, shared with the corpus-replay test so the
/// normal suite runs exactly what the fuzzer runs. Each must return without panicking
/// for any input.
pub mod fuzz_bodies {
    use strata_compiler::driver::{CompileOptions, check, compile};
    use strata_compiler::syntax::SourceFile;

    fn source(data: &[u8]) -> Option<SourceFile> {
        std::str::from_utf8(data)
            .ok()
            .map(|text| SourceFile::new("fuzz.strata", text))
    }

    /// Parser and checker: any text gives a graph or a diagnostic, and rendering the
    /// diagnostic works.
    pub fn check_text(data: &[u8]) {
        if let Some(src) = source(data)
            && let Err(d) = check(&src, &Default::default())
        {
            let _ = d.render(&src);
            let _ = d.to_json(&src);
        }
    }

    /// The whole compile pipeline down to an artifact (no execution).
    pub fn compile_text(data: &[u8]) {
        if let Some(src) = source(data)
            && let Err(e) = compile(&src, &CompileOptions::default())
        {
            let _ = e.render(&src);
        }
    }

    /// The artifact loader: arbitrary bytes are a valid artifact or an error.
    pub fn load_artifact(data: &[u8]) {
        let _ = strata_runtime::Artifact::from_bytes(data);
        let _ = strata_runtime::artifact::find_in_executable(data);
    }
}
