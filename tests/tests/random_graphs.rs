//! Randomly generated valid graphs: every simplification pass keeps what the reference
//! interpreter computes, and the fused, planned, compiled graph (run by the CPU runtime)
//! agrees with the interpreter, outputs and in-place parameter updates alike.
//!
//! The generator is small and seeded ([`TestRng`]), so a failure names its seed and
//! replays exactly: `RANDOM_GRAPH_SEED=17 cargo test -p strata-tests --test random_graphs`.

use std::collections::HashMap;
use strata_artifact::{HostTensor, TensorData};
use strata_compiler::artifact::{EntryBuild, build_artifact};
use strata_compiler::ir::interpret::{Tensor, interpret_values};
use strata_compiler::ir::print::print_graph;
use strata_compiler::ir::{
    BinaryOp, DType, Dim, Graph, Init, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueId,
};
use strata_compiler::lower::lower;
use strata_compiler::passes::{pipeline, run_pipeline};
use strata_compiler::plan::{check_plan, plan_memory};
use strata_compiler::source::Span;
use strata_runtime::Session;
use strata_tests::TestRng;

/// Cases in the normal suite.
const CASES: u64 = 300;
const TOLERANCE: f64 = 1e-4;

struct Gen {
    g: Graph,
    rng: TestRng,
    /// f32 values to build on.
    pool: Vec<ValueId>,
    params: Vec<ValueId>,
}

fn f32_type(dims: &[Dim]) -> TensorType {
    TensorType::f32(dims.to_vec())
}

impl Gen {
    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn any(&mut self) -> ValueId {
        // Prefer recent values: deeper chains.
        let n = self.pool.len();
        let back = self.pick(n.min(6));
        self.pool[n - 1 - back]
    }

    fn add(&mut self, op: Op, operands: &[ValueId]) -> Option<ValueId> {
        let v = self.g.add(op, operands, Span::default()).ok()?;
        self.pool.push(v);
        Some(v)
    }

    fn constant(&mut self, value: f64) -> ValueId {
        self.g
            .add(Op::Const { value }, &[], Span::default())
            .expect("a constant")
    }

    fn shape(&self, v: ValueId) -> Vec<Dim> {
        self.g.ty(v).shape.0.clone()
    }

    /// A value whose shape broadcasts with `x`'s to `x`'s shape, or a constant.
    fn partner(&mut self, x: ValueId) -> ValueId {
        let target = self.g.ty(x).shape.clone();
        let fits: Vec<ValueId> = self
            .pool
            .iter()
            .copied()
            .filter(|o| {
                strata_compiler::ir::op::broadcast_shapes(&self.g.ty(*o).shape, &target).ok()
                    == Some(target.clone())
            })
            .collect();
        if fits.is_empty() || self.pick(4) == 0 {
            let c = [0.0, 1.0, 0.5, -2.0][self.pick(4)];
            self.constant(c)
        } else {
            let i = self.pick(fits.len());
            fits[i]
        }
    }

    fn step(&mut self) {
        let x = self.any();
        let dims = self.shape(x);
        let rank = dims.len();
        match self.pick(13) {
            0 | 1 => {
                let op = [
                    UnaryOp::Neg,
                    UnaryOp::Abs,
                    UnaryOp::Tanh,
                    UnaryOp::Sigmoid,
                    UnaryOp::Relu,
                ][self.pick(5)];
                self.add(Op::Unary(op), &[x]);
            }
            // Expensive ops on bounded arguments, so values stay finite.
            2 => {
                let t = self.add(Op::Unary(UnaryOp::Tanh), &[x]).expect("tanh");
                let op = [UnaryOp::Exp, UnaryOp::Sqrt, UnaryOp::Log][self.pick(3)];
                let arg = if op == UnaryOp::Exp {
                    t
                } else {
                    let two = self.constant(2.0);
                    self.add(Op::Binary(BinaryOp::Add), &[t, two]).expect("add")
                };
                self.add(Op::Unary(op), &[arg]);
            }
            3..=5 => {
                let y = self.partner(x);
                let op = [
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Max,
                    BinaryOp::Min,
                ][self.pick(5)];
                let (a, b) = if self.pick(2) == 0 { (x, y) } else { (y, x) };
                self.add(Op::Binary(op), &[a, b]);
            }
            6 => {
                let zero = self.constant(0.0);
                self.add(Op::Binary(BinaryOp::Gt), &[x, zero]);
            }
            7 if rank >= 1 => {
                let axis = self.pick(rank);
                let op = [ReduceOp::Sum, ReduceOp::Max][self.pick(2)];
                let keep_dims = self.pick(2) == 0;
                self.add(
                    Op::Reduce {
                        op,
                        axes: vec![axis],
                        keep_dims,
                    },
                    &[x],
                );
            }
            8 if rank == 2 && matches!(dims[1], Dim::Fixed(_)) => {
                let Dim::Fixed(k) = dims[1] else { return };
                let n = [3u64, 4, 5][self.pick(3)];
                let transposed = self.pick(2) == 0;
                let pshape = if transposed { vec![n, k] } else { vec![k, n] };
                let w = self.param(&pshape);
                let w = if transposed {
                    self.g
                        .add(Op::Transpose { perm: vec![1, 0] }, &[w], Span::default())
                        .expect("transpose")
                } else {
                    w
                };
                self.add(Op::MatMul, &[x, w]);
            }
            9 if rank == 2 => {
                self.add(Op::Transpose { perm: vec![1, 0] }, &[x]);
            }
            10 if rank >= 1 => {
                let mut target = dims.clone();
                if self.pick(2) == 0 {
                    target.insert(0, Dim::Fixed(2));
                    if target.iter().filter(|d| **d == Dim::Batch).count() > 1 {
                        return;
                    }
                }
                // Broadcast from a dim of 1 where there is one.
                if let Some(i) = dims.iter().position(|d| *d == Dim::Fixed(1)) {
                    let at = target.len() - rank + i;
                    target[at] = Dim::Fixed(3);
                }
                self.add(
                    Op::Broadcast {
                        shape: Shape(target),
                    },
                    &[x],
                );
            }
            11 if rank >= 1 => {
                let mut to = dims.clone();
                to.push(Dim::Fixed(1));
                let r = self
                    .g
                    .add(Op::Reshape { shape: Shape(to) }, &[x], Span::default())
                    .expect("reshape");
                if self.pick(2) == 0 {
                    self.pool.push(r);
                } else {
                    // A non-unit reshape: flatten two fixed dims.
                    self.add(
                        Op::Reshape {
                            shape: Shape(dims.clone()),
                        },
                        &[r],
                    );
                }
            }
            12 if rank >= 1 => {
                let axis = rank - 1;
                if let Dim::Fixed(n) = dims[axis]
                    && n >= 2
                {
                    if self.pick(2) == 0 {
                        self.add(
                            Op::Slice {
                                axis,
                                start: 1,
                                len: n - 1,
                            },
                            &[x],
                        );
                    } else {
                        let y = self.partner(x);
                        if self.g.ty(y).shape.0 == dims {
                            self.add(Op::Concat { axis }, &[x, y]);
                        }
                    }
                }
            }
            _ => {
                self.add(Op::StopGradient, &[x]);
            }
        }
    }

    fn param(&mut self, dims: &[u64]) -> ValueId {
        let path = format!("p{}", self.params.len());
        let ty = f32_type(&dims.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>());
        let init = [Init::HeUniform, Init::XavierUniform, Init::Uniform(0.5)][self.pick(3)].clone();
        let p = self
            .g
            .add_leaf(Op::Param { path, init }, ty, Span::default());
        self.params.push(p);
        p
    }
}

/// A valid graph: two inputs, a parameter or two, 4 to 16 random ops, one to three
/// outputs and maybe parameter updates.
fn random_graph(seed: u64) -> Graph {
    let mut gn = Gen {
        g: Graph::new(format!("Random{seed}")),
        rng: TestRng::new(seed),
        pool: Vec::new(),
        params: Vec::new(),
    };
    let x = gn.g.add_leaf(
        Op::Input { name: "x".into() },
        f32_type(&[Dim::Batch, Dim::Fixed(4)]),
        Span::default(),
    );
    let s = gn.g.add_leaf(
        Op::Input { name: "s".into() },
        f32_type(&[Dim::Batch, Dim::Fixed(1)]),
        Span::default(),
    );
    gn.pool.extend([x, s]);
    let b = gn.param(&[4]);
    gn.pool.push(b);
    let n = 4 + gn.pick(13);
    for _ in 0..n {
        gn.step();
    }
    let outputs = 1 + gn.pick(3);
    let len = gn.pool.len();
    for i in 0..outputs {
        let v = gn.pool[len - 1 - (i * 2).min(len - 1)];
        if !gn.g.outputs.iter().any(|(_, o)| *o == v) {
            gn.g.outputs.push((format!("out{i}"), v));
        }
    }
    // Updates: p <- p - 0.1 * (something of p's shape computed from the graph).
    for p in gn.params.clone() {
        if gn.pick(2) == 0 {
            continue;
        }
        let pshape = gn.g.ty(p).shape.clone();
        let candidates: Vec<ValueId> = gn
            .pool
            .iter()
            .copied()
            .filter(|v| {
                strata_compiler::ir::op::broadcast_shapes(&gn.g.ty(*v).shape, &pshape).ok()
                    == Some(pshape.clone())
            })
            .collect();
        let delta = if candidates.is_empty() {
            p
        } else {
            candidates[gn.pick(candidates.len())]
        };
        let lr = gn.constant(0.1);
        let scaled =
            gn.g.add(Op::Binary(BinaryOp::Mul), &[lr, delta], Span::default())
                .expect("mul");
        let new =
            gn.g.add(Op::Binary(BinaryOp::Sub), &[p, scaled], Span::default())
                .expect("sub");
        if gn.g.ty(new) == gn.g.ty(p) {
            gn.g.updates.push((p, new));
        }
    }
    strata_compiler::passes::dce::eliminate_dead_code(&mut gn.g, false);
    gn.g.verify().expect("the generator makes valid graphs");
    gn.g
}

fn inputs_for(
    graph: &Graph,
    batch: u64,
    seed: u64,
) -> (HashMap<String, Tensor>, Vec<(String, HostTensor)>) {
    let mut rng = TestRng::new(seed ^ 0x5eed);
    let mut reference = HashMap::new();
    let mut host = Vec::new();
    for &i in &graph.inputs {
        let Op::Input { name } = &graph.node(i).op else {
            unreachable!()
        };
        let ty = graph.ty(i);
        assert_eq!(ty.dtype, DType::F32);
        let shape: Vec<u64> = ty.shape.resolve(batch).iter().map(|&d| d as u64).collect();
        let n: u64 = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let dims = shape.iter().map(|&d| d as usize).collect();
        reference.insert(name.clone(), Tensor::from_f32(dims, &data).expect("sizes"));
        host.push((name.clone(), HostTensor::f32(shape, data).expect("sizes")));
    }
    (reference, host)
}

fn to_tensor(t: &HostTensor) -> Tensor {
    let shape = t.shape.iter().map(|&d| d as usize).collect();
    let data = match &t.data {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
    };
    Tensor::new(shape, data).expect("consistent")
}

/// Outputs and new parameter values of `graph` by the interpreter, keyed by output name
/// and parameter path.
fn reference(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    params: &HashMap<String, Tensor>,
) -> HashMap<String, Tensor> {
    let values = interpret_values(graph, inputs, params).expect("the interpreter runs");
    let mut out = HashMap::new();
    for (name, v) in &graph.outputs {
        out.insert(format!("output {name}"), values[v].clone());
    }
    for (p, new) in &graph.updates {
        let Op::Param { path, .. } = &graph.node(*p).op else {
            unreachable!()
        };
        out.insert(format!("param {path}"), values[new].clone());
    }
    out
}

fn compare(what: &str, got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, tol: f64) {
    for (k, w) in want {
        let g = &got[k];
        let err = g.max_relative_error(w);
        assert!(err <= tol, "{what}: `{k}` relative error {err:e}");
    }
}

/// Returns (ops, kernels, compared tensors) of the case.
fn check_case(seed: u64) -> (usize, usize, usize) {
    let graph = random_graph(seed);
    let text = print_graph(&graph, None);
    let batch = 1 + seed % 5;
    let (inputs, host) = inputs_for(&graph, batch, seed);
    let params = strata_compiler::ir::interpret::initial_params(&graph, seed).expect("params");
    let want = reference(&graph, &inputs, &params);

    // Every pass alone keeps the interpreter's results (f64, so the tolerance is tight).
    let mut passed = graph.clone();
    for pass in pipeline() {
        (pass.run)(&mut passed).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        passed
            .verify()
            .unwrap_or_else(|e| panic!("seed {seed}: after `{}`: {e}\n{text}", pass.name));
        let got = reference(&passed, &inputs, &params);
        compare(
            &format!("seed {seed}, after `{}`\n{text}", pass.name),
            &got,
            &want,
            1e-9,
        );
    }

    // The whole pipeline, fused and planned, on the CPU.
    let mut optimized = graph.clone();
    run_pipeline(&mut optimized, |_, _| {}).expect("passes");
    let lowered = lower(&optimized).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
    let plan = plan_memory(&lowered);
    check_plan(&lowered, &plan).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
    let clif = strata_kernels::cpu::emit_clif(&lowered.kernels)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
    let entry = EntryBuild {
        name: "infer",
        graph: &optimized,
        lowered: &lowered,
        plan: &plan,
    };
    let artifact = build_artifact(&[entry], clif, seed, None)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
    let mut session = Session::new(&artifact).expect("the artifact loads");
    let start: HashMap<String, Tensor> = session
        .weights()
        .map(|(k, t)| (k.to_string(), to_tensor(t)))
        .collect();
    let want = reference(&graph, &inputs, &start);
    let host_inputs: Vec<(&str, HostTensor)> =
        host.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let outputs = session.run("infer", &host_inputs).expect("the entry runs");
    let mut got: HashMap<String, Tensor> = outputs
        .iter()
        .map(|(n, t)| (format!("output {n}"), to_tensor(t)))
        .collect();
    for (k, t) in session.weights() {
        got.insert(format!("param {k}"), to_tensor(t));
    }
    compare(
        &format!(
            "seed {seed}, compiled at batch {batch}\n{text}\n{}",
            strata_compiler::lower::print::print_kernels(&lowered)
        ),
        &got,
        &want,
        TOLERANCE,
    );
    (optimized.len(), lowered.kernels.len(), want.len())
}

#[test]
fn random_graphs_keep_their_values_through_every_pass_and_the_cpu() {
    if let Ok(seed) = std::env::var("RANDOM_GRAPH_SEED") {
        check_case(seed.parse().expect("a seed"));
        return;
    }
    let (mut ops, mut kernels, mut compared) = (0, 0, 0);
    for seed in 0..CASES {
        let (o, k, c) = check_case(seed);
        ops += o;
        kernels += k;
        compared += c;
    }
    eprintln!("{CASES} graphs: {ops} ops, {kernels} kernels, {compared} tensors compared");
    assert!(compared >= CASES as usize, "every case compares something");
}
