//! Gradient graphs from `passes::autodiff`, lowered to kernels and run by the runtime on
//! the CPU, agree with the reference interpreter. (The rules themselves are checked
//! against finite differences in the compiler's unit tests.)

use std::collections::HashMap;
use strata_artifact::{Artifact, HostTensor, TensorData};
use strata_compiler::artifact::{EntryBuild, build_artifact};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::ir::{
    BinaryOp, DType, Dim, Graph, Init, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueId,
};
use strata_compiler::lower::lower;
use strata_compiler::passes::autodiff::gradients;
use strata_compiler::plan::{check_plan, plan_memory};
use strata_compiler::source::Span;
use strata_runtime::Session;
use strata_tests::TestRng;

/// The tolerance the training issue sets for compiled gradients against the interpreter
/// (f32 kernels with polynomial exp/log against f64).
const MAX_RELATIVE_ERROR: f64 = 1e-4;

const B: Dim = Dim::Batch;

fn d(n: u64) -> Dim {
    Dim::Fixed(n)
}

/// Adds ops to a graph; every op in these tests is well-typed.
struct Builder {
    graph: Graph,
}

impl Builder {
    fn input(&mut self, name: &str, dtype: DType, dims: &[Dim]) -> ValueId {
        self.graph.add_leaf(
            Op::Input { name: name.into() },
            TensorType::new(dtype, dims.to_vec()),
            Span::default(),
        )
    }

    fn param(&mut self, path: &str, dims: &[u64], init: Init) -> ValueId {
        self.graph.add_leaf(
            Op::Param {
                path: path.into(),
                init,
            },
            TensorType::f32(dims.iter().map(|&n| d(n)).collect()),
            Span::default(),
        )
    }

    fn op(&mut self, op: Op, operands: &[ValueId]) -> ValueId {
        self.graph
            .add(op, operands, Span::default())
            .unwrap_or_else(|e| panic!("well-typed: {e}"))
    }

    fn binary(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        self.op(Op::Binary(b), &[x, y])
    }

    fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: Vec<usize>, keep_dims: bool) -> ValueId {
        self.op(
            Op::Reduce {
                op,
                axes,
                keep_dims,
            },
            &[x],
        )
    }

    fn sum_all(&mut self, x: ValueId) -> ValueId {
        let rank = self.graph.ty(x).shape.rank();
        self.reduce(ReduceOp::Sum, x, (0..rank).collect(), false)
    }

    /// `x Wᵀ + b` with PyTorch's `[out, in]` weight.
    fn dense(&mut self, x: ValueId, w: ValueId, b: ValueId) -> ValueId {
        let wt = self.op(Op::Transpose { perm: vec![1, 0] }, &[w]);
        let xw = self.op(Op::MatMul, &[x, wt]);
        self.binary(BinaryOp::Add, xw, b)
    }

    /// Appends the gradients of `loss` w.r.t. every parameter as outputs `grad.<path>`.
    fn differentiate(mut self, loss: ValueId) -> Graph {
        let params: Vec<(ValueId, String)> = self
            .graph
            .params()
            .into_iter()
            .map(|(v, p)| (v, p.to_string()))
            .collect();
        let wrt: Vec<ValueId> = params.iter().map(|(v, _)| *v).collect();
        let grads = gradients(&mut self.graph, loss, &wrt).expect("gradients");
        self.graph.verify().expect("the gradient graph verifies");
        self.graph.outputs.push(("loss".into(), loss));
        for ((_, path), g) in params.iter().zip(grads) {
            self.graph.outputs.push((format!("grad.{path}"), g));
        }
        self.graph
    }
}

/// Lower, plan, emit CLIF and pack, as `driver::compile` does after the passes.
fn compile(graph: &Graph) -> Artifact {
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
    build_artifact(&[entry], clif, 7, None).expect("an artifact")
}

/// Runs the compiled graph's `infer` entry and the interpreter on the same inputs and
/// weights; returns the largest relative error over the outputs.
fn compiled_against_interpreter(graph: &Graph, batch: u64, seed: u64) -> f64 {
    let artifact = compile(graph);
    let mut session = Session::new(&artifact).expect("the artifact loads");
    let params: HashMap<String, Tensor> = session
        .weights()
        .map(|(k, t)| {
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            let data = match &t.data {
                TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            };
            (k.to_string(), Tensor::new(shape, data).expect("consistent"))
        })
        .collect();
    let mut rng = TestRng::new(seed);
    let mut host = Vec::new();
    let mut reference = HashMap::new();
    for &i in &graph.inputs {
        let Op::Input { name } = &graph.node(i).op else {
            unreachable!("inputs are inputs")
        };
        let ty = graph.ty(i);
        let shape: Vec<u64> = ty.shape.resolve(batch).iter().map(|&d| d as u64).collect();
        let n: u64 = shape.iter().product();
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        match ty.dtype {
            DType::F32 => {
                let data: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
                reference.insert(name.clone(), Tensor::from_f32(dims, &data).expect("sizes"));
                host.push((name.clone(), HostTensor::f32(shape, data).expect("sizes")));
            }
            DType::I32 => {
                let classes = 3;
                let data: Vec<i32> = (0..n).map(|_| (rng.next_u64() % classes) as i32).collect();
                let as_f64: Vec<f64> = data.iter().map(|&x| f64::from(x)).collect();
                reference.insert(name.clone(), Tensor::new(dims, as_f64).expect("sizes"));
                host.push((name.clone(), HostTensor::i32(shape, data).expect("sizes")));
            }
        }
    }
    let inputs: Vec<(&str, HostTensor)> =
        host.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let outputs = session.run("infer", &inputs).expect("the entry runs");
    let expected = interpret(graph, &reference, &params).expect("the interpreter runs");
    let mut worst = 0.0f64;
    for (name, got) in outputs {
        let got = Tensor::from_f32(
            got.shape.iter().map(|&d| d as usize).collect(),
            got.as_f32().expect("f32 output"),
        )
        .expect("sizes agree");
        let err = got.max_relative_error(&expected[&name]);
        eprintln!("`{name}` batch {batch}: max relative error {err:.2e}");
        assert!(
            err <= MAX_RELATIVE_ERROR,
            "output `{name}` at batch {batch}: relative error {err:e}"
        );
        worst = worst.max(err);
    }
    worst
}

/// A two-layer perceptron with softmax cross-entropy from integer labels:
/// `loss = -sum(one_hot(y) * log_softmax(z)) / batch`.
fn mlp_gradients() -> Graph {
    let mut b = Builder {
        graph: Graph::new("mlp_grad"),
    };
    let x = b.input("x", DType::F32, &[B, d(8)]);
    let y = b.input("y", DType::I32, &[B]);
    let w1 = b.param("l1.weight", &[16, 8], Init::XavierUniform);
    let b1 = b.param("l1.bias", &[16], Init::Uniform(0.3));
    let w2 = b.param("l2.weight", &[3, 16], Init::XavierUniform);
    let b2 = b.param("l2.bias", &[3], Init::Uniform(0.3));
    let h = b.dense(x, w1, b1);
    let h = b.op(Op::Unary(UnaryOp::Relu), &[h]);
    let z = b.dense(h, w2, b2);
    let max = b.reduce(ReduceOp::Max, z, vec![1], true);
    let shifted = b.binary(BinaryOp::Sub, z, max);
    let e = b.op(Op::Unary(UnaryOp::Exp), &[shifted]);
    let s = b.reduce(ReduceOp::Sum, e, vec![1], true);
    let log_s = b.op(Op::Unary(UnaryOp::Log), &[s]);
    let log_softmax = b.binary(BinaryOp::Sub, shifted, log_s);
    let one_hot = b.op(Op::OneHot { classes: 3 }, &[y]);
    let picked = b.binary(BinaryOp::Mul, one_hot, log_softmax);
    let total = b.sum_all(picked);
    let count = b.sum_all(one_hot);
    let mean = b.binary(BinaryOp::Div, total, count);
    let loss = b.op(Op::Unary(UnaryOp::Neg), &[mean]);
    b.differentiate(loss)
}

#[test]
fn compiled_mlp_gradients_match_the_interpreter() {
    let graph = mlp_gradients();
    for (round, batch) in [1u64, 5, 64].into_iter().enumerate() {
        compiled_against_interpreter(&graph, batch, round as u64 + 1);
    }
}

/// The other rules that need new ops or kernels: concat (slices), slice (zero padding),
/// broadcast, stop-gradient, a shared weight over `[batch, seq, k]` (a batched product
/// and a sum), a mean over the batch, max pooling-like reductions.
fn sequence_model_gradients() -> Graph {
    let mut b = Builder {
        graph: Graph::new("seq_grad"),
    };
    let x = b.input("x", DType::F32, &[B, d(4), d(6)]);
    let w = b.param("proj.weight", &[6, 5], Init::XavierUniform);
    let c = b.param("cls", &[1, 5], Init::Uniform(0.5));
    let h = b.op(Op::MatMul, &[x, w]);
    let cls = b.op(
        Op::Broadcast {
            shape: Shape(vec![B, d(1), d(5)]),
        },
        &[c],
    );
    let joined = b.op(Op::Concat { axis: 1 }, &[cls, h]);
    let frozen = b.op(Op::StopGradient, &[joined]);
    let t = b.op(Op::Unary(UnaryOp::Tanh), &[joined]);
    let gated = b.binary(BinaryOp::Mul, t, frozen);
    let head = b.op(
        Op::Slice {
            axis: 1,
            start: 0,
            len: 4,
        },
        &[gated],
    );
    let pooled = b.reduce(ReduceOp::Max, head, vec![1], false);
    let middle = b.op(
        Op::Slice {
            axis: 1,
            start: 2,
            len: 2,
        },
        &[gated],
    );
    let pooled = b.sum_all(pooled);
    let middle = b.sum_all(middle);
    let loss = b.binary(BinaryOp::Add, pooled, middle);
    b.differentiate(loss)
}

#[test]
fn compiled_gradients_through_concat_slice_broadcast_and_stop_gradient_match_the_interpreter() {
    let graph = sequence_model_gradients();
    for (round, batch) in [1u64, 3, 17].into_iter().enumerate() {
        compiled_against_interpreter(&graph, batch, round as u64 + 11);
    }
}
