//! `random_uniform`, the counter-based draws behind dropout masks: the interpreter, the
//! kernel IR's reference evaluator, the CPU backend and the GPU backend give the same
//! bits for every element, at every step and batch size (DESIGN.md, "Determinism").
//!
//! The GPU tests need an adapter; without one they are skipped with a message, except in
//! CI (`CI=true`), where a missing adapter fails them (as in `gpu.rs`).

use std::collections::HashMap;
use strata_artifact::{Artifact, HostTensor};
use strata_compiler::artifact::{EntryBuild, build_artifact};
use strata_compiler::driver::Backend;
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::ir::print::print_graph;
use strata_compiler::ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Shape, TensorType, ValueId};
use strata_compiler::lower::{Lowered, lower};
use strata_compiler::passes::autodiff::gradients;
use strata_compiler::plan::{check_plan, plan_memory};
use strata_compiler::source::Span;
use strata_kernels::eval::eval_kernel;
use strata_kernels::rng;
use strata_runtime::Session;
use strata_tests::TestRng;
use strata_tests::gpu_available;

const B: Dim = Dim::Batch;

fn input(g: &mut Graph, name: &str, dims: &[Dim]) -> ValueId {
    g.add_leaf(
        Op::Input { name: name.into() },
        TensorType::new(DType::F32, dims.to_vec()),
        Span::default(),
    )
}

fn op(g: &mut Graph, op: Op, operands: &[ValueId]) -> ValueId {
    g.add(op, operands, Span::default())
        .unwrap_or_else(|e| panic!("well-typed: {e}"))
}

fn constant(g: &mut Graph, value: f64) -> ValueId {
    op(g, Op::Const { value }, &[])
}

/// `u = random_uniform seed=seed [batch, 4, 5] %step`, with an input `x: f32[batch, 1]`
/// that gives the run its batch.
fn uniform_graph(seed: u64) -> Graph {
    let mut g = Graph::new("uniform");
    input(&mut g, "x", &[B, Dim::Fixed(1)]);
    let step = input(&mut g, "step", &[]);
    let shape = Shape(vec![B, Dim::Fixed(4), Dim::Fixed(5)]);
    let u = op(&mut g, Op::RandomUniform { seed, shape }, &[step]);
    g.outputs.push(("u".into(), u));
    g
}

/// Inverted dropout: `y = x * ge(random_uniform, p) / (1 - p)` over `x: f32[batch, 8]`.
fn dropout_graph(seed: u64, p: f64) -> Graph {
    let mut g = Graph::new("dropout");
    let x = input(&mut g, "x", &[B, Dim::Fixed(8)]);
    let step = input(&mut g, "step", &[]);
    let shape = Shape(vec![B, Dim::Fixed(8)]);
    let u = op(&mut g, Op::RandomUniform { seed, shape }, &[step]);
    let pv = constant(&mut g, p);
    let keep = op(&mut g, Op::Binary(BinaryOp::Ge), &[u, pv]);
    let kept = op(&mut g, Op::Binary(BinaryOp::Mul), &[x, keep]);
    let one = constant(&mut g, 1.0);
    let scale = op(&mut g, Op::Binary(BinaryOp::Sub), &[one, pv]);
    let y = op(&mut g, Op::Binary(BinaryOp::Div), &[kept, scale]);
    g.outputs.push(("y".into(), y));
    g
}

/// Lowered, planned, with CLIF (and WGSL for the GPU), as the driver builds it.
fn compile(graph: &Graph) -> (Lowered, Artifact) {
    let lowered = lower(graph).expect("lowers");
    let plan = plan_memory(&lowered);
    check_plan(&lowered, &plan).expect("a valid memory plan");
    let clif = strata_kernels::cpu::emit_clif(&lowered.kernels).expect("CLIF");
    let entry = EntryBuild {
        name: "infer",
        graph,
        lowered: &lowered,
        plan: &plan,
    };
    let mut artifact = build_artifact(&[entry], clif, 7, None).expect("an artifact");
    artifact.wgsl = strata_kernels::gpu::emit_wgsl(&lowered.kernels).expect("WGSL");
    (lowered, artifact)
}

/// The inputs of one run: `x` from a test generator (non-zero, so that dropout's zeros
/// are the mask's), `step` as given.
struct Run {
    batch: u64,
    step: f32,
    x: Vec<f32>,
    x_dims: Vec<u64>,
}

impl Run {
    fn new(graph: &Graph, batch: u64, step: f32) -> Run {
        let x = graph
            .inputs
            .iter()
            .find(|&&i| matches!(&graph.node(i).op, Op::Input { name } if name == "x"))
            .expect("an input x");
        let x_dims: Vec<u64> = graph
            .ty(*x)
            .shape
            .resolve(batch)
            .iter()
            .map(|&d| d as u64)
            .collect();
        let mut rng = TestRng::new(batch);
        let x = (0..x_dims.iter().product())
            .map(|_| rng.uniform() + 1.5)
            .collect();
        Run {
            batch,
            step,
            x,
            x_dims,
        }
    }

    fn host_inputs(&self) -> Vec<(&'static str, HostTensor)> {
        vec![
            (
                "x",
                HostTensor::f32(self.x_dims.clone(), self.x.clone()).expect("sizes"),
            ),
            (
                "step",
                HostTensor::f32(vec![], vec![self.step]).expect("sizes"),
            ),
        ]
    }

    fn interpreter_inputs(&self) -> HashMap<String, Tensor> {
        let dims = self.x_dims.iter().map(|&d| d as usize).collect();
        HashMap::from([
            (
                "x".to_string(),
                Tensor::from_f32(dims, &self.x).expect("sizes"),
            ),
            ("step".to_string(), Tensor::scalar(f64::from(self.step))),
        ])
    }
}

/// Every output, as `f32`s, from the interpreter.
fn on_interpreter(graph: &Graph, run: &Run) -> HashMap<String, Vec<f32>> {
    interpret(graph, &run.interpreter_inputs(), &HashMap::new())
        .expect("the interpreter runs")
        .into_iter()
        .map(|(name, t)| (name, t.to_f32()))
        .collect()
}

/// Every output from the lowered kernels run one by one by `strata_kernels::eval`.
fn on_kernel_evaluator(lowered: &Lowered, run: &Run) -> HashMap<String, Vec<f32>> {
    let mut buffers: Vec<Vec<f64>> = lowered
        .buffers
        .iter()
        .map(|b| {
            vec![
                0.0;
                b.shape
                    .iter()
                    .map(|d| d.resolve(run.batch))
                    .product::<u64>() as usize
            ]
        })
        .collect();
    for (name, b) in &lowered.inputs {
        buffers[*b] = match name.as_str() {
            "x" => run.x.iter().map(|&v| f64::from(v)).collect(),
            "step" => vec![f64::from(run.step)],
            other => panic!("unexpected input {other}"),
        };
    }
    for launch in &lowered.launches {
        let mut bound: Vec<Vec<f64>> = launch
            .bindings
            .iter()
            .map(|&b| buffers[b].clone())
            .collect();
        eval_kernel(&lowered.kernels[launch.kernel], &mut bound, run.batch)
            .expect("the evaluator runs");
        for (&b, data) in launch.bindings.iter().zip(bound) {
            buffers[b] = data;
        }
    }
    lowered
        .outputs
        .iter()
        .map(|(name, b)| {
            (
                name.clone(),
                buffers[*b].iter().map(|&v| v as f32).collect(),
            )
        })
        .collect()
}

/// Every output from a session on `backend`.
fn on_backend(session: &mut Session, run: &Run) -> HashMap<String, Vec<f32>> {
    session
        .run("infer", &run.host_inputs())
        .expect("the entry runs")
        .into_iter()
        .map(|(name, t)| (name, t.as_f32().expect("f32 output").to_vec()))
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Asserts that every output of `got` has exactly the bits of `want`.
fn assert_same_bits(
    what: &str,
    got: &HashMap<String, Vec<f32>>,
    want: &HashMap<String, Vec<f32>>,
    run: &Run,
) {
    assert_eq!(got.len(), want.len(), "{what}: outputs");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(
            bits(g),
            bits(w),
            "{what} output `{name}` at batch {} step {}",
            run.batch,
            run.step
        );
    }
}

const STEPS: [f32; 4] = [0.0, 1.0, 7.0, 123_456.0];
const BATCHES: [u64; 3] = [1, 3, 64];

#[test]
fn random_uniform_draws_the_same_bits_in_the_interpreter_evaluator_and_cpu() {
    let graph = uniform_graph(42);
    let (lowered, artifact) = compile(&graph);
    let mut cpu = Session::new(&artifact).expect("the artifact loads");
    for batch in BATCHES {
        for step in STEPS {
            let run = Run::new(&graph, batch, step);
            let want = on_interpreter(&graph, &run);
            // The interpreter is `rng::uniform_at` itself.
            let reference: Vec<f32> = (0..batch * 20)
                .map(|i| rng::uniform_at(42, i, step as u32))
                .collect();
            assert_eq!(bits(&want["u"]), bits(&reference));
            assert_same_bits(
                "evaluator",
                &on_kernel_evaluator(&lowered, &run),
                &want,
                &run,
            );
            assert_same_bits("cpu", &on_backend(&mut cpu, &run), &want, &run);
        }
    }
}

#[test]
fn random_uniform_draws_the_same_bits_on_gpu() {
    if !gpu_available("random_uniform_draws_the_same_bits_on_gpu") {
        return;
    }
    let graph = uniform_graph(42);
    let (_, artifact) = compile(&graph);
    let mut gpu = Session::new_with(&artifact, Backend::Gpu).expect("the artifact loads");
    for batch in BATCHES {
        for step in STEPS {
            let run = Run::new(&graph, batch, step);
            let want = on_interpreter(&graph, &run);
            assert_same_bits("gpu", &on_backend(&mut gpu, &run), &want, &run);
        }
    }
}

#[test]
fn random_uniform_has_the_moments_of_u01() {
    let mut g = Graph::new("moments");
    input(&mut g, "x", &[B, Dim::Fixed(1)]);
    let step = input(&mut g, "step", &[]);
    let shape = Shape(vec![B, Dim::Fixed(1000)]);
    let u = op(&mut g, Op::RandomUniform { seed: 3, shape }, &[step]);
    g.outputs.push(("u".into(), u));
    let (_, artifact) = compile(&g);
    let mut cpu = Session::new(&artifact).expect("the artifact loads");
    let u = &on_backend(&mut cpu, &Run::new(&g, 100, 5.0))["u"];
    assert_eq!(u.len(), 100_000);
    assert!(u.iter().all(|x| (0.0..1.0).contains(x)), "values in [0, 1)");
    let n = u.len() as f64;
    let mean = u.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = u
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
    let below_tenth = u.iter().filter(|&&x| x < 0.1).count() as f64 / n;
    assert!(
        (below_tenth - 0.1).abs() < 0.005,
        "P(u < 0.1) = {below_tenth}"
    );
}

#[test]
fn random_uniform_depends_on_seed_step_and_index_only() {
    let run_cpu = |seed: u64, batch: u64, step: f32| -> Vec<f32> {
        let graph = uniform_graph(seed);
        let (_, artifact) = compile(&graph);
        let mut cpu = Session::new(&artifact).expect("the artifact loads");
        on_backend(&mut cpu, &Run::new(&graph, batch, step))
            .remove("u")
            .expect("output u")
    };
    let base = run_cpu(1, 3, 10.0);
    // The same inputs give the same bits, in a fresh session too.
    assert_eq!(bits(&base), bits(&run_cpu(1, 3, 10.0)));
    // Another step or seed gives a fresh draw: (almost) every element differs.
    for other in [run_cpu(1, 3, 11.0), run_cpu(2, 3, 10.0)] {
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same <= 1, "{same} of {} elements repeat", base.len());
    }
    // Elements within one draw differ, and the batch only appends rows.
    let distinct: std::collections::HashSet<u32> = base.iter().map(|v| v.to_bits()).collect();
    assert!(distinct.len() >= base.len() - 1);
    assert_eq!(bits(&run_cpu(1, 1, 10.0)), bits(&base[..20]));
}

#[test]
fn a_compiled_dropout_mask_matches_the_interpreter_exactly() {
    let p = 0.3;
    let graph = dropout_graph(2024, p);
    let (_, artifact) = compile(&graph);
    let mut cpu = Session::new(&artifact).expect("the artifact loads");
    let mut dropped = 0usize;
    let mut total = 0usize;
    for batch in [1, 5, 250] {
        for step in [0.0, 1.0, 2.0] {
            let run = Run::new(&graph, batch, step);
            let want = &on_interpreter(&graph, &run)["y"];
            let got = &on_backend(&mut cpu, &run)["y"];
            let zeros = |v: &[f32]| v.iter().map(|&x| x == 0.0).collect::<Vec<_>>();
            assert_eq!(
                zeros(got),
                zeros(want),
                "zero pattern at batch {batch} step {step}"
            );
            for ((&g, &w), &x) in got.iter().zip(want).zip(&run.x) {
                assert!(g == 0.0 || (g - w).abs() <= 1e-6 * w.abs(), "{g} vs {w}");
                assert!(g == 0.0 || (g - x / (1.0 - p as f32)).abs() <= 1e-6 * g.abs());
            }
            dropped += got.iter().filter(|&&x| x == 0.0).count();
            total += got.len();
        }
    }
    let rate = dropped as f64 / total as f64;
    assert!((rate - p).abs() < 0.03, "dropped {rate} of the elements");
}

#[test]
fn a_dropout_mask_matches_the_interpreter_on_gpu() {
    if !gpu_available("a_dropout_mask_matches_the_interpreter_on_gpu") {
        return;
    }
    let graph = dropout_graph(2024, 0.3);
    let (_, artifact) = compile(&graph);
    let mut gpu = Session::new_with(&artifact, Backend::Gpu).expect("the artifact loads");
    for batch in [1, 5, 250] {
        for step in [0.0, 1.0, 2.0] {
            let run = Run::new(&graph, batch, step);
            let want = &on_interpreter(&graph, &run)["y"];
            let got = &on_backend(&mut gpu, &run)["y"];
            let zeros = |v: &[f32]| v.iter().map(|&x| x == 0.0).collect::<Vec<_>>();
            assert_eq!(
                zeros(got),
                zeros(want),
                "zero pattern at batch {batch} step {step}"
            );
        }
    }
}

#[test]
fn random_uniform_passes_no_gradient_to_its_step() {
    let mut graph = dropout_graph(5, 0.5);
    let y = graph.outputs[0].1;
    let x = graph.inputs[0];
    let step = graph.inputs[1];
    let loss = op(
        &mut graph,
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0, 1],
            keep_dims: false,
        },
        &[y],
    );
    let grads = gradients(&mut graph, loss, &[x, step]).expect("differentiates");
    graph.outputs = vec![("dx".into(), grads[0]), ("dstep".into(), grads[1])];
    let run = Run::new(&graph, 4, 9.0);
    let got = interpret(&graph, &run.interpreter_inputs(), &HashMap::new()).expect("runs");
    assert_eq!(got["dstep"].data, [0.0]);
    // d(sum y)/dx is the mask scaled by 1 / (1 - p).
    let mask: Vec<f64> = (0..32)
        .map(|i| {
            if rng::uniform_at(5, i, 9) >= 0.5 {
                2.0
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(got["dx"].data, mask);
}

#[test]
fn random_uniform_prints_its_seed_shape_and_step() {
    let text = print_graph(&uniform_graph(42), None);
    assert!(
        text.contains("= random_uniform seed=42 [batch, 4, 5] %step"),
        "{text}"
    );
}

#[test]
fn random_uniform_takes_a_scalar_f32_step() {
    let mut g = Graph::new("bad");
    let shape = Shape(vec![Dim::Fixed(3)]);
    for (dtype, dims) in [(DType::F32, vec![Dim::Fixed(2)]), (DType::I32, vec![])] {
        let step = g.add_leaf(
            Op::Input {
                name: format!("step{}", g.len()),
            },
            TensorType::new(dtype, dims),
            Span::default(),
        );
        let e = g
            .add(
                Op::RandomUniform {
                    seed: 1,
                    shape: shape.clone(),
                },
                &[step],
                Span::default(),
            )
            .unwrap_err();
        assert!(e.contains("needs the step as an f32[] scalar"), "{e}");
    }
}

#[test]
fn a_dropout_in_a_matrix_product_epilogue_matches_the_interpreter() {
    // y = (x @ w) * ge(random_uniform, p) / (1 - p): the mask is drawn inside the
    // product's epilogue, over the product's coordinates.
    let p = 0.25;
    let mut g = Graph::new("dense_dropout");
    let x = input(&mut g, "x", &[B, Dim::Fixed(6)]);
    let w = input(&mut g, "w", &[Dim::Fixed(6), Dim::Fixed(8)]);
    let step = input(&mut g, "step", &[]);
    let z = op(&mut g, Op::MatMul, &[x, w]);
    let shape = Shape(vec![B, Dim::Fixed(8)]);
    let u = op(&mut g, Op::RandomUniform { seed: 11, shape }, &[step]);
    let pv = constant(&mut g, p);
    let keep = op(&mut g, Op::Binary(BinaryOp::Ge), &[u, pv]);
    let kept = op(&mut g, Op::Binary(BinaryOp::Mul), &[z, keep]);
    let scale = constant(&mut g, 1.0 / (1.0 - p));
    let y = op(&mut g, Op::Binary(BinaryOp::Mul), &[kept, scale]);
    g.outputs.push(("y".into(), y));
    let (_, artifact) = compile(&g);
    let mut sessions = vec![("cpu", Session::new(&artifact).expect("the artifact loads"))];
    if gpu_available("a_dropout_in_a_matrix_product_epilogue_matches_the_interpreter") {
        let gpu = Session::new_with(&artifact, Backend::Gpu).expect("the artifact loads");
        sessions.push(("gpu", gpu));
    }
    let mut rng = TestRng::new(99);
    let w_data: Vec<f32> = (0..48).map(|_| rng.uniform()).collect();
    for batch in [1u64, 7, 40] {
        for step in [0.0f32, 3.0] {
            let run = Run::new(&g, batch, step);
            let mut host = run.host_inputs();
            host.push((
                "w",
                HostTensor::f32(vec![6, 8], w_data.clone()).expect("sizes"),
            ));
            let mut reference = run.interpreter_inputs();
            reference.insert(
                "w".into(),
                Tensor::from_f32(vec![6, 8], &w_data).expect("sizes"),
            );
            let want = interpret(&g, &reference, &HashMap::new()).expect("runs")["y"].clone();
            for (backend, session) in &mut sessions {
                let outputs = session.run("infer", &host).expect("the entry runs");
                let got = outputs[0].1.as_f32().expect("f32").to_vec();
                for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
                    assert_eq!(g == 0.0, w == 0.0, "{backend} element {i}: {g} vs {w}");
                    assert!(
                        (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{g} vs {w}"
                    );
                }
            }
        }
    }
}
