//! Machine code compiled ahead of time: it runs exactly as the code compiled at a run,
//! survives the artifact's bytes, is used only when allowed and runnable, and anything
//! else falls back to compiling the kernel IR.

use strata_artifact::machine_code::FunctionCode;
use strata_artifact::{Artifact, ArtifactError, HostTensor};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::cpu::machine_code::{Unusable, runnable_here};
use strata_runtime::cpu::{MappedCode, compile_machine_code};
use strata_runtime::gpu::GpuOptions;
use strata_runtime::{Backend, CarriedCode, Session};

// Products, reductions, softmax's inline exp and tanh, and Adam's update (in the train
// step): code with vector constants and every kind of body.
const MODEL: &str = "model Small {
    input x: f32[batch, 4]
    h = x |> dense(8) |> tanh
    output logits = h |> dense(3)
    output probs = softmax(logits)
}

train Small {
    data      = iris
    label     y: i32[batch]
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
    batch = 8   epochs = 2
}
";

fn artifact() -> Artifact {
    let source = SourceFile::new("small.strata", MODEL);
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

fn with_machine_code(mut artifact: Artifact) -> Artifact {
    artifact.machine_code = Some(compile_machine_code(&artifact.manifest.kernels).unwrap());
    artifact
}

fn session(artifact: &Artifact, carried: CarriedCode) -> Session {
    Session::new_with_code(artifact, Backend::Cpu, &GpuOptions::default(), carried).unwrap()
}

fn input() -> Vec<(&'static str, HostTensor)> {
    let values = (0..3 * 4).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0);
    vec![("x", HostTensor::f32(vec![3, 4], values.collect()).unwrap())]
}

fn origin(session: &Session) -> String {
    session.code().expect("a CPU session").origin()
}

#[test]
fn carried_code_runs_bit_for_bit_as_code_compiled_at_start() {
    let artifact = with_machine_code(artifact());
    // Through the artifact's bytes, as an executable carries it.
    let artifact = Artifact::from_bytes(&artifact.to_bytes().unwrap()).unwrap();
    let mut carried = session(&artifact, CarriedCode::UseIfRunnable);
    let mut compiled = session(&artifact, CarriedCode::Compile);
    assert!(carried.code().unwrap().is_carried(), "{}", origin(&carried));
    assert_eq!(
        origin(&compiled),
        "compiled from the kernel IR when first run"
    );
    assert_eq!(
        carried.run("infer", &input()).unwrap(),
        compiled.run("infer", &input()).unwrap()
    );
}

#[test]
fn an_artifact_file_is_compiled_unless_the_executable_allows_its_code() {
    // `Session::new` (every path that loads an artifact it did not build) never maps code.
    let artifact = with_machine_code(artifact());
    let session = Session::new(&artifact).unwrap();
    assert_eq!(
        origin(&session),
        "compiled from the kernel IR when first run"
    );
}

#[test]
fn code_for_features_this_cpu_lacks_falls_back_to_compiling() {
    let mut artifact = with_machine_code(artifact());
    let code = artifact.machine_code.as_mut().unwrap();
    code.features.push("has_a_future_extension".into());
    match runnable_here(code) {
        Err(Unusable::MissingFeatures(f)) => assert_eq!(f, "has_a_future_extension"),
        other => panic!("{other:?}"),
    }
    let mut fallback = session(&artifact, CarriedCode::UseIfRunnable);
    let text = origin(&fallback);
    assert!(
        text.starts_with("compiled from the kernel IR when first run (the executable's machine code is unusable: it needs has_a_future_extension"),
        "{text}"
    );
    let mut reference = session(&artifact, CarriedCode::Compile);
    assert_eq!(
        fallback.run("infer", &input()).unwrap(),
        reference.run("infer", &input()).unwrap()
    );
}

#[test]
fn code_for_another_target_or_generator_is_not_run() {
    let artifact = with_machine_code(artifact());
    let mut other_target = artifact.machine_code.clone().unwrap();
    other_target.target = "aarch64-unknown-linux-gnu".into();
    assert!(matches!(
        MappedCode::map(&other_target),
        Err(Unusable::OtherTarget { .. })
    ));
    let mut other_generator = artifact.machine_code.clone().unwrap();
    other_generator.generator = "strata 0.0.1 (Cranelift 0.1)".into();
    assert!(matches!(
        MappedCode::map(&other_generator),
        Err(Unusable::OtherGenerator { .. })
    ));
}

/// A change to a section's function table (and code) that makes it invalid.
type Breaks = dyn Fn(&mut Vec<FunctionCode>, &mut Vec<u8>);

#[test]
fn a_malformed_code_section_is_an_error_when_the_artifact_is_read() {
    let artifact = with_machine_code(artifact());
    let code = artifact.machine_code.as_ref().unwrap();
    let first = code.functions[0].clone();
    let cases: Vec<(&str, Box<Breaks>)> = vec![
        (
            "is not inside",
            Box::new(|f, bytes| f[0].len = bytes.len() as u64 + 1),
        ),
        ("not a multiple of 64", Box::new(|f, _| f[0].offset += 1)),
        ("appears twice", Box::new(move |f, _| f.push(first.clone()))),
        (
            "overlap",
            Box::new(|f, _| {
                f[1].offset = f[0].offset;
                f[1].len = f[0].len - 1;
            }),
        ),
        (
            "which is no kernel function",
            Box::new(|f, _| {
                let mut extra = f[0].clone();
                extra.name = "elsewhere".into();
                f.push(extra);
            }),
        ),
    ];
    for (expected, break_it) in cases {
        let mut broken = artifact.clone();
        let code = broken.machine_code.as_mut().unwrap();
        break_it(&mut code.functions, &mut code.code);
        let bytes = broken.to_bytes().unwrap();
        match Artifact::from_bytes(&bytes) {
            Err(ArtifactError::BadMachineCode { reason }) => {
                assert!(reason.contains(expected), "{expected}: {reason}")
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn carried_code_trains_as_code_compiled_at_start() {
    use strata_runtime::bench::BenchInputs;
    let artifact = with_machine_code(artifact());
    let mut carried = session(&artifact, CarriedCode::UseIfRunnable);
    let mut compiled = session(&artifact, CarriedCode::Compile);
    let entry = artifact
        .manifest
        .entries
        .iter()
        .find(|e| e.name == "train_step")
        .expect("a train step");
    let mut inputs = BenchInputs::new(&artifact.manifest, entry, 8).unwrap();
    for _ in 0..3 {
        let run = inputs.next_run();
        assert_eq!(
            carried.run("train_step", &run).unwrap(),
            compiled.run("train_step", &run).unwrap()
        );
    }
    let weights = |s: &Session| -> Vec<(String, HostTensor)> {
        s.weights()
            .map(|(k, t)| (k.to_owned(), t.clone()))
            .collect()
    };
    assert_eq!(weights(&carried), weights(&compiled));
}

#[test]
fn kernels_without_carried_code_are_compiled_when_their_entry_first_runs() {
    // The executable carries the inference kernels only, as `strata build` writes it.
    let mut artifact = artifact();
    let infer = artifact
        .manifest
        .entries
        .iter()
        .find(|e| e.name == "infer")
        .unwrap();
    let kernels: Vec<_> = infer
        .launches
        .iter()
        .map(|l| artifact.manifest.kernels[l.kernel].clone())
        .collect();
    artifact.machine_code = Some(compile_machine_code(&kernels).unwrap());
    let artifact = Artifact::from_bytes(&artifact.to_bytes().unwrap()).unwrap();
    let mut partial = session(&artifact, CarriedCode::UseIfRunnable);
    let mut compiled = session(&artifact, CarriedCode::Compile);
    assert!(partial.code().unwrap().is_carried());
    let entry = artifact
        .manifest
        .entries
        .iter()
        .find(|e| e.name == "train_step")
        .unwrap();
    let mut inputs = strata_runtime::bench::BenchInputs::new(&artifact.manifest, entry, 8).unwrap();
    let run = inputs.next_run();
    assert_eq!(
        partial.run("train_step", &run).unwrap(),
        compiled.run("train_step", &run).unwrap()
    );
    assert_eq!(
        partial.run("infer", &input()).unwrap(),
        compiled.run("infer", &input()).unwrap()
    );
}

/// A residual network's blocks are kernels that differ only in their names: each shape is
/// compiled once and the other blocks' functions point at that code, which runs as the
/// code compiled at a start.
#[test]
fn kernels_that_differ_only_in_names_share_one_compiled_function() {
    let source = SourceFile::new(
        "residual.strata",
        "block Residual(x, width) {\n    return x + (x |> dense(width) |> relu |> dense(width))\n}\n\
         model R {\n    input x: f32[batch, 4]\n    \
         output y = x |> dense(4) |> relu |> repeat 6 Residual(4)\n}\n",
    );
    let artifact = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact;
    let code = compile_machine_code(&artifact.manifest.kernels).unwrap();
    let names: usize = artifact
        .manifest
        .kernels
        .iter()
        .map(|k| k.function_names().len())
        .sum();
    assert_eq!(code.functions.len(), names, "every function is listed");
    let mut places: Vec<(u64, u64)> = code.functions.iter().map(|f| (f.offset, f.len)).collect();
    places.sort_unstable();
    places.dedup();
    assert!(
        places.len() * 3 <= names,
        "{} places for {names} functions",
        places.len()
    );
    let artifact = Artifact {
        machine_code: Some(code),
        ..artifact
    };
    let artifact = Artifact::from_bytes(&artifact.to_bytes().unwrap()).unwrap();
    let mut carried = session(&artifact, CarriedCode::UseIfRunnable);
    let mut compiled = session(&artifact, CarriedCode::Compile);
    assert!(carried.code().unwrap().is_carried(), "{}", origin(&carried));
    assert_eq!(
        carried.run("infer", &input()).unwrap(),
        compiled.run("infer", &input()).unwrap()
    );
}
