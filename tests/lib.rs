//! Shared helpers for Strata's end-to-end tests.

use std::path::{Path, PathBuf};
use strata_compiler::source::SourceFile;

/// Whether a GPU adapter is there; outside CI, prints why a test is skipped.
pub fn gpu_available(test: &str) -> bool {
    match strata_runtime::gpu::describe_adapter(&strata_runtime::gpu::GpuOptions::from_env()) {
        Ok(adapter) => {
            eprintln!("{test}: running on {adapter}");
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: CI needs a GPU adapter (lavapipe): {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped: {e}");
            false
        }
    }
}

/// For each `(call, needle)`, compiles a model whose one output is `call` on an input
/// `x` of type `input`, and asserts the error mentions `needle` and is located on the
/// call's line (line 3 of `m.strata`).
pub fn assert_located_errors(input: &str, cases: &[(&str, &str)]) {
    use strata_compiler::driver::{CompileOptions, compile};
    for (call, needle) in cases {
        let text = format!("model M {{\n    input x: {input}\n    output y = {call}\n}}\n");
        let source = SourceFile::new("m.strata", text);
        let err = compile(&source, &CompileOptions::default())
            .err()
            .unwrap_or_else(|| panic!("`{call}` compiles"));
        let rendered = err.render(&source);
        assert!(rendered.contains(needle), "`{call}`: {rendered}");
        assert!(
            rendered.contains("m.strata:3:"),
            "`{call}` is located: {rendered}"
        );
    }
}

/// The session's weights with every value moved a little (variances and scales kept
/// positive), as a safetensors file: weights that differ from a model's initial ones, so
/// a check comparing two runs of them cannot pass by reading defaults.
pub fn perturbed_weights(session: &strata_runtime::Session, rng: &mut TestRng) -> Vec<u8> {
    use strata_artifact::{HostTensor, TensorData};
    let tensors: Vec<(String, HostTensor)> = session
        .weights()
        .map(|(name, t)| {
            let positive = name.ends_with("running_var") || name == "normalize.scale";
            let data = match &t.data {
                TensorData::F32(v) => TensorData::F32(
                    v.iter()
                        .map(|&x| match positive {
                            true => x.abs() + 0.5 + 0.5 * rng.uniform().abs(),
                            false => x + 0.1 * rng.uniform(),
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            (
                name.to_string(),
                HostTensor {
                    shape: t.shape.clone(),
                    data,
                },
            )
        })
        .collect();
    strata_artifact::weights::encode_weights(tensors.iter().map(|(n, t)| (n.as_str(), t)))
        .expect("encodes")
}

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

/// Golden files: expected outputs kept next to their inputs under `tests/golden/`,
/// compared verbatim, and rewritten from what the code now produces when the test runs
/// with `STRATA_BLESS=1` (then review the diff).
pub mod golden {
    use std::path::{Path, PathBuf};

    /// `tests/golden/`.
    pub fn dir() -> PathBuf {
        super::root().join("tests/golden")
    }

    /// Whether this run rewrites the golden files (`STRATA_BLESS=1`).
    pub fn blessing() -> bool {
        std::env::var_os("STRATA_BLESS").is_some_and(|v| v == "1")
    }

    /// The files of `tests/golden/<folder>/` whose name ends with `suffix`, sorted.
    pub fn cases(folder: &str, suffix: &str) -> Vec<PathBuf> {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(dir().join(folder))
            .unwrap_or_else(|e| panic!("tests/golden/{folder}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        cases.sort();
        cases
    }

    /// A case's path relative to `tests/golden/`, for messages.
    pub fn case_name(path: &Path) -> String {
        path.strip_prefix(dir())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Compares `got` with the golden file `want` (or writes it when blessing), and
    /// describes a difference: the first line that differs, then all of `got`.
    pub fn compare(want: &Path, got: &str) -> Result<(), String> {
        if blessing() {
            return std::fs::write(want, got).map_err(|e| format!("{}: {e}", want.display()));
        }
        let expected = std::fs::read_to_string(want).unwrap_or_default();
        if expected == got {
            return Ok(());
        }
        let (mut want_lines, mut got_lines) = (expected.lines(), got.lines());
        let mut line = 1;
        let (w, g) = loop {
            match (want_lines.next(), got_lines.next()) {
                (Some(w), Some(g)) if w == g => line += 1,
                (w, g) => break (w, g),
            }
        };
        let show = |l: Option<&str>| l.map_or("(nothing)".to_string(), |l| format!("`{l}`"));
        let got_text: String = got.lines().map(|l| format!("    {l}\n")).collect();
        Err(format!(
            "{} differs at line {line}:\n  want {}\n  got  {}\nall of it now:\n{got_text}",
            case_name(want),
            show(w),
            show(g)
        ))
    }

    /// The kernels in the text `print_kernels` writes: every line from a `kernel` header
    /// to the `}` that closes it, without the buffer table and the bindings.
    pub fn kernel_blocks(text: &str) -> String {
        let mut blocks = String::new();
        let mut inside = false;
        for line in text.lines() {
            inside |= line.starts_with("kernel ");
            if inside {
                blocks.push_str(line);
                blocks.push('\n');
            }
            inside &= line != "}";
        }
        blocks
    }
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
    use strata_compiler::source::SourceFile;

    fn source(data: &[u8]) -> Option<SourceFile> {
        std::str::from_utf8(data)
            .ok()
            .map(|text| SourceFile::new("fuzz.strata", text))
    }

    /// Parser and checker: any text gives well-formed models or diagnostics, and
    /// rendering every diagnostic works.
    pub fn check_text(data: &[u8]) {
        if let Some(src) = source(data)
            && let Err(errors) = check(&src, &Default::default(), &[])
        {
            for d in errors {
                let _ = d.render(&src);
                let _ = d.to_json(&src);
            }
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
        let _ = strata_artifact::Artifact::from_bytes(data);
        let _ = strata_artifact::find_in_executable(data);
    }

    /// The most bytes a fuzzed gzip stream may inflate to: far below the default limit,
    /// so the fuzzer's memory limit is never what stops a decompression bomb.
    const FUZZ_DECOMPRESSED_BYTES: u64 = 16 << 20;

    /// The data loaders: the same bytes (gunzipped first when they start with the gzip
    /// magic) as a CSV file, an IDX file, an NPY file, a safetensors dataset and an NPZ
    /// archive's members; each
    /// gives a dataset or an error, and a dataset it gives is consistent.
    pub fn load_data(data: &[u8]) {
        use strata_training::loaders::{self, CsvOptions, HeaderMode};
        let Ok(bytes) =
            loaders::maybe_gunzip_at_most(data.to_vec(), "fuzz", FUZZ_DECOMPRESSED_BYTES)
        else {
            return;
        };
        let no_header = CsvOptions {
            header: HeaderMode::Absent,
            delimiter: b';',
            drop_missing: true,
            ..CsvOptions::default()
        };
        for options in [CsvOptions::default(), no_header] {
            if let Ok(set) = loaders::parse_csv(&bytes, "fuzz.csv", &options) {
                dataset_is_consistent(&set);
            }
        }
        if let Ok(tensor) = loaders::parse_idx(&bytes, "fuzz.idx") {
            tensor
                .check_len()
                .expect("a parsed IDX tensor holds its shape's elements");
        }
        if let Ok(tensor) = strata_artifact::npy::read_npy_bytes(&bytes, "fuzz.npy".as_ref()) {
            tensor
                .check_len()
                .expect("a parsed NPY tensor holds its shape's elements");
        }
        if let Ok(set) = loaders::parse_safetensors(&bytes, "fuzz.safetensors") {
            dataset_is_consistent(&set);
        }
        if let Ok(archive) = loaders::npz_file::NpzArchive::parse(bytes, "fuzz.npz") {
            for name in archive.names() {
                if let Ok(Some(npy)) = archive.npy_bytes(&name, FUZZ_DECOMPRESSED_BYTES)
                    && let Ok(tensor) =
                        strata_artifact::npy::read_npy_bytes(&npy, "fuzz.npz".as_ref())
                {
                    tensor
                        .check_len()
                        .expect("a parsed NPZ member holds its shape's elements");
                }
            }
        }
    }

    /// A loaded dataset validates, and fitting a normalization to it is a result.
    fn dataset_is_consistent(set: &strata_training::Dataset) {
        set.validate().expect("a loaded dataset is valid");
        let _ = strata_training::Normalizer::fit(strata_training::Normalization::Standardize, set);
    }

    /// The checkpoint reader: arbitrary bytes are a checkpoint or an error, and a
    /// checkpoint it reads writes back to bytes that read as the same checkpoint.
    pub fn load_checkpoint(data: &[u8]) {
        use strata_training::Checkpoint;
        let origin = std::path::Path::new("fuzz.ckpt");
        let Ok(checkpoint) = Checkpoint::from_bytes(data, origin) else {
            return;
        };
        let _ = checkpoint.check_against([("w", [2u64, 3])]);
        let Ok(bytes) = checkpoint.to_bytes() else {
            return;
        };
        let again = Checkpoint::from_bytes(&bytes, origin).expect("a written checkpoint reads");
        assert_eq!(
            again.to_bytes().ok(),
            Some(bytes),
            "checkpoint bytes round-trip"
        );
    }

    /// The kernel IR text parser: any text gives kernels or a located error, and kernels
    /// it gives print as text that parses back to the same kernels.
    pub fn parse_kernel_text(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(kernels) = strata_kernels::parse::parse_kernels(text) else {
            return;
        };
        let printed: String = kernels.iter().map(|k| k.to_string()).collect();
        let again = strata_kernels::parse::parse_kernels(&printed)
            .unwrap_or_else(|e| panic!("printed kernels do not parse ({e}):\n{printed}"));
        assert_eq!(again, kernels, "kernels round-trip through their text");
    }

    /// The weights loader: arbitrary bytes read as safetensors weights or an error, and
    /// matched against a small model's buffers, as `strata run --weights` does.
    pub fn load_weights(data: &[u8]) {
        use std::sync::OnceLock;
        static MANIFEST: OnceLock<strata_artifact::Manifest> = OnceLock::new();
        let manifest = MANIFEST.get_or_init(|| {
            let source = SourceFile::new(
                "fuzz.strata",
                "model M {\n    input x: f32[batch, 3]\n    output y = x |> dense(2) |> relu\n}\n",
            );
            compile(&source, &CompileOptions::default())
                .expect("the fuzz model compiles")
                .artifact
                .manifest
        });
        if let Ok(tensors) = strata_artifact::weights::read_weights(data) {
            for (_, tensor) in &tensors {
                tensor
                    .check_len()
                    .expect("a read tensor holds its shape's elements");
            }
        }
        if let Ok(views) = strata_artifact::weights::match_weights(manifest, data) {
            for (_, view) in &views {
                let _ = strata_artifact::weights::to_host_tensor(view);
            }
        }
    }

    /// The ONNX reader: arbitrary bytes import as a model file and its weights or give
    /// an error; a model file it writes goes through the parser and checker (with
    /// diagnostics rendered) and its weights encode.
    pub fn import_onnx(data: &[u8]) {
        let options = strata_onnx::ImportOptions {
            model_name: "Fuzz".into(),
            source_name: "fuzz.onnx".into(),
            weights_name: "fuzz.safetensors".into(),
        };
        let Ok(imported) = strata_onnx::import_model(data, &options) else {
            return;
        };
        let _ = strata_artifact::weights::encode_weights(
            imported.weights.iter().map(|(n, t)| (n.as_str(), t)),
        );
        check_text(imported.source.as_bytes());
    }
}

/// Runs a model's compiled `train_step` and the reference interpreter side by side.
pub mod train_check {
    use super::TestRng;
    use std::collections::HashMap;
    use strata_artifact::{HostTensor, TensorData};
    use strata_compiler::driver::{CompileOptions, compile};
    use strata_compiler::elaborate::ElaborateOptions;
    use strata_compiler::ir::interpret::{Tensor, interpret_values};
    use strata_compiler::ir::{Graph, Op};
    use strata_compiler::source::SourceFile;
    use strata_runtime::Session;

    /// A runtime tensor as an interpreter tensor.
    pub fn to_tensor(t: &HostTensor) -> Tensor {
        let shape = t.shape.iter().map(|&d| d as usize).collect();
        let data = match &t.data {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        };
        Tensor::new(shape, data).expect("consistent")
    }

    /// The options that build a model's training entries.
    pub fn training_options() -> CompileOptions {
        CompileOptions {
            elaborate: ElaborateOptions {
                train: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Compiles `text` (a model with input `x` of per-sample shape `sample` and, if its
    /// train section has a label, integer labels `y` in `0..classes`), runs `steps` train
    /// steps at batch `batch` on the CPU and in the interpreter from the same weights and
    /// random inputs, and asserts every step's loss and the final weights (parameters and
    /// optimizer state) agree to 1e-4 of their scale.
    pub fn assert_train_steps_match(
        what: &str,
        text: &str,
        sample: &[u64],
        classes: u64,
        batch: u64,
        steps: u32,
    ) {
        let source = SourceFile::new(format!("{what}.strata"), text.to_string());
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let step_graph = &compiled
            .training
            .iter()
            .find(|e| e.name == "train_step")
            .expect("train_step")
            .graph;
        let takes_label = step_graph
            .inputs
            .iter()
            .any(|&i| matches!(&step_graph.node(i).op, Op::Input { name } if name == "y"));
        let mut session = Session::new(&compiled.artifact).expect("loads");
        let mut params: HashMap<String, Tensor> = session
            .weights()
            .map(|(k, t)| (k.to_string(), to_tensor(t)))
            .collect();
        let mut rng = TestRng::new(11);
        let mut shape = vec![batch];
        shape.extend_from_slice(sample);
        let n: u64 = shape.iter().product();
        let usize_shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        for step in 1..=steps {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let y: Vec<i32> = (0..batch)
                .map(|_| (rng.next_u64() % classes) as i32)
                .collect();
            let lr = 0.01f32;
            let mut host = vec![
                (
                    "x",
                    HostTensor::f32(shape.clone(), x.clone()).expect("sizes"),
                ),
                ("lr", HostTensor::f32(vec![], vec![lr]).expect("sizes")),
                (
                    "step",
                    HostTensor::f32(vec![], vec![step as f32]).expect("sizes"),
                ),
            ];
            let mut inputs: HashMap<String, Tensor> = HashMap::from([
                (
                    "x".to_string(),
                    Tensor::from_f32(usize_shape.clone(), &x).expect("sizes"),
                ),
                ("lr".to_string(), Tensor::scalar(f64::from(lr))),
                ("step".to_string(), Tensor::scalar(f64::from(step))),
            ]);
            if takes_label {
                host.push(("y", HostTensor::i32(vec![batch], y.clone()).expect("sizes")));
                inputs.insert(
                    "y".to_string(),
                    Tensor::new(
                        vec![batch as usize],
                        y.iter().map(|&v| f64::from(v)).collect(),
                    )
                    .expect("sizes"),
                );
            }
            let run = EntryRun {
                session: &mut session,
                entry: "train_step",
                graph: step_graph,
                host: &host,
                inputs: &inputs,
            };
            run.step_both(&format!("{what} step {step}"), &mut params);
        }
        assert_weights_match(what, &session, &params, &format!("{steps} steps"));
    }

    /// One run of a training entry: on the CPU with `host`, and of its `graph` in the
    /// interpreter with `inputs`.
    pub struct EntryRun<'a> {
        pub session: &'a mut Session,
        pub entry: &'a str,
        pub graph: &'a Graph,
        pub host: &'a [(&'a str, HostTensor)],
        pub inputs: &'a HashMap<String, Tensor>,
    }

    impl EntryRun<'_> {
        /// Runs both from `params`, asserts the losses agree to 1e-4 of their scale, and
        /// takes the interpreter's updated values as the next `params`.
        pub fn step_both(self, what: &str, params: &mut HashMap<String, Tensor>) {
            let out = self.session.run(self.entry, self.host).expect("runs");
            let values = interpret_values(self.graph, self.inputs, params).expect("interprets");
            let (_, loss_v) = self
                .graph
                .outputs
                .iter()
                .find(|(n, _)| n == "loss")
                .expect("loss");
            let want = values[loss_v].data[0];
            let got = f64::from(out[0].1.as_f32().expect("f32")[0]);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{what}: loss {got} vs {want}"
            );
            for (param, new) in &self.graph.updates {
                let Op::Param { path, .. } = &self.graph.node(*param).op else {
                    unreachable!("updates replace parameters")
                };
                params.insert(path.clone(), values[new].clone());
            }
        }
    }

    /// Asserts the session's persistent values (parameters, optimizer state) agree
    /// with `params` to 1e-4 of their scale, `after` saying when.
    pub fn assert_weights_match(
        what: &str,
        session: &Session,
        params: &HashMap<String, Tensor>,
        after: &str,
    ) {
        for (key, t) in session.weights() {
            let err = to_tensor(t).max_relative_error(&params[key]);
            assert!(
                err <= 1e-4,
                "{what}: `{key}` after {after}: relative error {err:e}"
            );
        }
    }
}

/// Runs the training entries of a model whose section has several `step` blocks (or
/// one) in the driver's order, compiled and in the interpreter side by side.
pub mod steps_check {
    use super::TestRng;
    use super::train_check::{EntryRun, assert_weights_match, to_tensor, training_options};
    use std::collections::HashMap;
    use strata_artifact::HostTensor;
    use strata_compiler::driver::compile;
    use strata_compiler::ir::interpret::Tensor;
    use strata_compiler::source::SourceFile;
    use strata_runtime::Session;

    /// Compiles `text` (a label-free model with input `x` of per-sample shape `sample`),
    /// then for `rounds` batches of random inputs runs every training entry in the
    /// section's order, on the CPU and in the interpreter from the same weights, and
    /// asserts every loss and the final weights (parameters and every optimizer's state)
    /// agree to 1e-4 of their scale. Returns the entries' names.
    pub fn assert_step_entries_match(
        what: &str,
        text: &str,
        sample: &[u64],
        batch: u64,
        rounds: u32,
    ) -> Vec<String> {
        let source = SourceFile::new(format!("{what}.strata"), text.to_string());
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let config = compiled.train_config.clone().expect("a train section");
        let mut session = Session::new(&compiled.artifact).expect("loads");
        let mut params: HashMap<String, Tensor> = session
            .weights()
            .map(|(k, t)| (k.to_string(), to_tensor(t)))
            .collect();
        let mut rng = TestRng::new(5);
        let mut shape = vec![batch];
        shape.extend_from_slice(sample);
        let n: u64 = shape.iter().product();
        let usize_shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        for round in 1..=rounds {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 0.5 + 0.5).collect();
            for update in &config.steps {
                let graph = &compiled
                    .training
                    .iter()
                    .find(|e| e.name == update.entry)
                    .unwrap_or_else(|| panic!("entry `{}`", update.entry))
                    .graph;
                let lr = 0.01f32;
                let host = vec![
                    (
                        "x",
                        HostTensor::f32(shape.clone(), x.clone()).expect("sizes"),
                    ),
                    ("lr", HostTensor::f32(vec![], vec![lr]).expect("sizes")),
                    (
                        "step",
                        HostTensor::f32(vec![], vec![round as f32]).expect("sizes"),
                    ),
                ];
                let inputs: HashMap<String, Tensor> = HashMap::from([
                    (
                        "x".to_string(),
                        Tensor::from_f32(usize_shape.clone(), &x).expect("sizes"),
                    ),
                    ("lr".to_string(), Tensor::scalar(f64::from(lr))),
                    ("step".to_string(), Tensor::scalar(f64::from(round))),
                ]);
                let run = EntryRun {
                    session: &mut session,
                    entry: &update.entry,
                    graph,
                    host: &host,
                    inputs: &inputs,
                };
                run.step_both(
                    &format!("{what} `{}` round {round}", update.entry),
                    &mut params,
                );
            }
        }
        assert_weights_match(what, &session, &params, &format!("{rounds} rounds"));
        config.steps.iter().map(|s| s.entry.clone()).collect()
    }
}

/// Trains an example of `dsl-examples/` per its train section, as `strata train` does.
pub mod train_run {
    use super::{load_example, root};
    use std::time::Instant;
    use strata_artifact::train_config::TrainConfig;
    use strata_compiler::driver::compile;
    use strata_runtime::Session;
    use strata_training::{Normalization, builtin, normalize_splits};
    use strata_training::{TrainOptions, TrainSummary, train};

    /// What one training run gave: the driver's summary, the trainable weight count,
    /// the wall time of the training loop, the run directory (removed on drop) and the
    /// session holding the trained weights.
    pub struct Trained {
        pub summary: TrainSummary,
        pub parameters: u64,
        pub seconds: f64,
        pub run_dir: tempfile::TempDir,
        pub session: Session,
    }

    impl Trained {
        /// A metric a head scores against `label` on the test split.
        pub fn test_head_metric(&self, label: &str, name: &str) -> f64 {
            let test = self.summary.test.as_ref().expect("a test split");
            test.heads
                .iter()
                .find(|h| h.label == label)
                .and_then(|h| {
                    strata_artifact::Metric::from_name(name).and_then(|m| h.metrics.value(m))
                })
                .unwrap_or_else(|| panic!("`{label}.{name}` is not reported ({:#?})", test.heads))
        }

        /// A metric of the test split (panics with the history if it is missing).
        pub fn test_metric(&self, name: &str) -> f64 {
            let test = self.summary.test.as_ref().expect("a test split");
            strata_artifact::Metric::from_name(name)
                .and_then(|m| test.metrics.value(m))
                .unwrap_or_else(|| panic!("`{name}` is not reported ({:#?})", self.summary.history))
        }
    }

    /// The MSE, over the test split of the digits, of predicting each pixel's mean over the
    /// train split: the splits and normalization (`scale(16)`) recomputed as the driver
    /// makes them. The bar reconstructions are measured against.
    pub fn mean_pixel_baseline(config: &TrainConfig) -> f64 {
        let data = builtin("digits").expect("built in");
        let [a, b, c] = config.split;
        let (mut train, mut val, mut test) = data.split((a, b, c), config.seed).expect("splits");
        assert_eq!(config.normalize, "scale:16");
        normalize_splits(
            Normalization::Scale(16.0),
            &mut train,
            &mut [&mut val, &mut test],
        )
        .expect("normalizes");
        let width = 64;
        let mut mean = vec![0.0f64; width];
        for row in train.features.chunks(width) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x) / train.len as f64;
            }
        }
        let squared: f64 = test
            .features
            .chunks(width)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .map(|(&x, m)| (f64::from(x) - m).powi(2))
            })
            .sum();
        squared / test.features.len() as f64
    }

    /// Compiles `dsl-examples/<file>` with its train section and trains it quietly in a
    /// temporary run directory.
    pub fn train_example(file: &str) -> Trained {
        let source = load_example(&root().join("dsl-examples").join(file));
        let artifact = compile(&source, &super::train_check::training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)))
            .artifact;
        let config = artifact.manifest.train.clone().expect("a train section");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut session = Session::new(&artifact).expect("loads");
        let parameters = session
            .weights()
            .filter(|(name, _)| !name.starts_with("optim."))
            .map(|(_, t)| t.shape.iter().product::<u64>())
            .sum();
        // A file of named arrays is named relative to the repository's root, where the
        // README's commands run.
        let data_override = strata_artifact::train_config::names_arrays(&config.data).then(|| {
            match config.data.split_once(':') {
                Some((kind, rest)) => format!("{kind}:{}", root().join(rest).display()),
                None => config.data.clone(),
            }
        });
        let options = TrainOptions {
            run_dir: dir.path().to_path_buf(),
            quiet: true,
            data_override,
            ..Default::default()
        };
        let started = Instant::now();
        let summary = train(&mut session, &config, &options).expect("training runs");
        Trained {
            summary,
            parameters,
            seconds: started.elapsed().as_secs_f64(),
            run_dir: dir,
            session,
        }
    }
}

/// Runs a compiled model's `infer` entry and the reference interpreter on the same random
/// inputs and compares every output.
pub mod infer_check {
    use super::TestRng;
    use super::train_check::to_tensor;
    use std::collections::HashMap;
    use strata_artifact::HostTensor;
    use strata_compiler::ir::interpret::{Tensor, interpret};
    use strata_compiler::ir::{DType, Graph, Op};
    use strata_compiler::source::SourceFile;
    use strata_runtime::Session;

    /// The session's persistent values as interpreter parameters.
    pub fn params_of(session: &Session) -> HashMap<String, Tensor> {
        session
            .weights()
            .map(|(k, t)| (k.to_string(), to_tensor(t)))
            .collect()
    }

    /// For each batch size, feeds the same inputs to `infer` and to the interpreter of
    /// `graph` (the entry's graph after the passes): uniform in [-2, 2) for f32 inputs,
    /// integers in `0..16` for i32 ones (token ids, a few out of a small vocabulary),
    /// and asserts
    /// `max |a - b| / max |b| <= tolerance` for every output. `what` names the model in
    /// messages.
    pub fn assert_infer_matches(
        what: &str,
        session: &mut Session,
        graph: &Graph,
        batches: &[u64],
        tolerance: f64,
    ) {
        let params = params_of(session);
        for (round, &batch) in batches.iter().enumerate() {
            let mut rng = TestRng::new(round as u64 + 1);
            let mut host = Vec::new();
            let mut reference = HashMap::new();
            for &i in &graph.inputs {
                let Op::Input { name } = &graph.node(i).op else {
                    unreachable!("inputs are Input ops")
                };
                let ty = graph.ty(i);
                let shape: Vec<u64> = ty.shape.resolve(batch).iter().map(|&d| d as u64).collect();
                let n: u64 = shape.iter().product();
                let dims = shape.iter().map(|&d| d as usize).collect();
                let (tensor, values) = match ty.dtype {
                    DType::F32 => {
                        let data: Vec<f32> = (0..n).map(|_| rng.uniform() * 2.0).collect();
                        let values = data.iter().map(|&x| f64::from(x)).collect();
                        (HostTensor::f32(shape, data), values)
                    }
                    DType::I32 => {
                        let data: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 16) as i32).collect();
                        let values = data.iter().map(|&x| f64::from(x)).collect();
                        (HostTensor::i32(shape, data), values)
                    }
                };
                reference.insert(
                    name.clone(),
                    Tensor::new(dims, values).expect("sizes agree"),
                );
                host.push((name.clone(), tensor.expect("sizes agree")));
            }
            let inputs: Vec<(&str, HostTensor)> =
                host.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
            let outputs = session
                .run("infer", &inputs)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let expected = interpret(graph, &reference, &params).expect("the interpreter runs");
            for (name, got) in outputs {
                let err = to_tensor(&got).max_relative_error(&expected[&name]);
                eprintln!("{what} `{name}` batch {batch}: max relative error {err:.2e}");
                assert!(
                    err <= tolerance,
                    "{what} output `{name}` at batch {batch}: relative error {err:e}"
                );
            }
        }
    }

    /// Compiles `source` for the CPU and, where one is found, the GPU, and checks
    /// `infer` at `batches` against the interpreter (as [`assert_infer_matches`], 1e-5).
    pub fn check_backends(test: &str, source: &SourceFile, batches: &[u64]) {
        use strata_compiler::driver::{Backend, CompileOptions, compile};
        let mut targets = vec![Backend::Cpu];
        if crate::gpu_available(test) {
            targets.push(Backend::Gpu);
        }
        for target in targets {
            let options = CompileOptions {
                target,
                ..CompileOptions::default()
            };
            let compiled =
                compile(source, &options).unwrap_or_else(|e| panic!("{}", e.render(source)));
            let mut session = Session::new_with(&compiled.artifact, target).expect("loads");
            let what = format!("{test} on {target:?}");
            assert_infer_matches(&what, &mut session, &compiled.optimized, batches, 1e-5);
        }
    }
}

/// Gradients of a model's loss, as autodiff builds them, against central finite
/// differences, both evaluated by the reference interpreter in f64.
pub mod gradient_check {
    use super::TestRng;
    use std::collections::HashMap;
    use strata_compiler::driver::compile;
    use strata_compiler::elaborate::{ElaborateOptions, elaborate};
    use strata_compiler::ir::Op;
    use strata_compiler::ir::interpret::{Tensor, initial_params, interpret};
    use strata_compiler::passes::autodiff::gradients;
    use strata_compiler::source::SourceFile;

    /// Compiles `text` (a model with a train section whose label is `y`), feeds it
    /// `inputs` (by name, f64 values in their shapes), and asserts that the gradient of
    /// the loss with respect to every parameter matches central differences at `probes`
    /// entries of each parameter (chosen by a seeded draw) to `tolerance`, relative to
    /// the parameter's largest gradient entry (at least 1e-3).
    pub fn assert_gradients_match_finite_differences(
        what: &str,
        text: &str,
        inputs: &HashMap<String, Tensor>,
        probes: usize,
        tolerance: f64,
    ) {
        let source = SourceFile::new(format!("{what}.strata"), text.to_string());
        let compiled = compile(&source, &super::train_check::training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        assert_graph_gradients_match(what, compiled.typed, inputs, probes, tolerance);
    }

    /// [`assert_gradients_match_finite_differences`] on the graph of the training step:
    /// the model elaborated in training mode (dropout masks, batch statistics, random
    /// draws and augmentations on), whose `inputs` include `step`, which fixes the draws.
    pub fn assert_training_gradients_match_finite_differences(
        what: &str,
        text: &str,
        inputs: &HashMap<String, Tensor>,
        probes: usize,
        tolerance: f64,
    ) {
        let source = SourceFile::new(format!("{what}.strata"), text.to_string());
        let program = strata_compiler::syntax::parse(&source.text)
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let options = ElaborateOptions {
            train: true,
            training_mode: true,
            ..Default::default()
        };
        let elaborated =
            elaborate(&program, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
        assert_graph_gradients_match(what, elaborated.graph, inputs, probes, tolerance);
    }

    fn assert_graph_gradients_match(
        what: &str,
        forward: strata_compiler::ir::Graph,
        inputs: &HashMap<String, Tensor>,
        probes: usize,
        tolerance: f64,
    ) {
        let (_, loss) = forward
            .outputs
            .iter()
            .find(|(n, _)| n == "loss")
            .cloned()
            .expect("a loss");
        let params = initial_params(&forward, 3).expect("initial values");
        let wrt: Vec<(strata_compiler::ir::ValueId, String)> = forward
            .params()
            .into_iter()
            .map(|(v, p)| (v, p.to_string()))
            .collect();
        let mut backward = forward.clone();
        let ids: Vec<_> = wrt.iter().map(|(v, _)| *v).collect();
        let grads = gradients(&mut backward, loss, &ids).expect("differentiable");
        backward.outputs = wrt
            .iter()
            .zip(&grads)
            .map(|((_, path), g)| (path.clone(), *g))
            .collect();
        let analytic = interpret(&backward, inputs, &params).expect("interprets");
        let mut loss_only = forward.clone();
        loss_only.outputs = vec![("loss".to_string(), loss)];
        let loss_at = |params: &HashMap<String, Tensor>| {
            interpret(&loss_only, inputs, params).expect("interprets")["loss"].data[0]
        };
        let mut rng = TestRng::new(5);
        let h = 1e-5;
        for (v, path) in &wrt {
            assert!(
                matches!(forward.node(*v).op, Op::Param { .. }),
                "{path} is a parameter"
            );
            let grad = &analytic[path];
            let scale = grad.data.iter().fold(1e-3f64, |m, g| m.max(g.abs()));
            for _ in 0..probes.min(grad.data.len()) {
                let i = (rng.next_u64() % grad.data.len() as u64) as usize;
                let mut shifted = params.clone();
                let p = shifted.get_mut(path).expect("a parameter");
                p.data[i] += h;
                let up = loss_at(&shifted);
                let p = shifted.get_mut(path).expect("a parameter");
                p.data[i] -= 2.0 * h;
                let down = loss_at(&shifted);
                let numeric = (up - down) / (2.0 * h);
                let err = (numeric - grad.data[i]).abs() / scale;
                assert!(
                    err <= tolerance,
                    "{what}: d loss / d {path}[{i}]: autodiff {} vs finite differences {numeric} (error {err:e} of {scale:e})",
                    grad.data[i]
                );
            }
        }
    }
}
