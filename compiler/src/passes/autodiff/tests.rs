//! Every vector-Jacobian rule against central finite differences, in `f64` through the
//! reference interpreter.
//!
//! A rule is tested on `loss = sum(y * probe)` with a random `probe`, so the cotangent
//! reaching the op is a random tensor rather than ones. Inputs stay away from kinks
//! (relu and abs away from 0, max/min without ties) and from the edges of domains (log,
//! sqrt, recip, pow on positive values).

use super::gradients;
use crate::ir::interpret::{Tensor, interpret, interpret_values};
use crate::ir::{
    BinaryOp, DType, Dim, Graph, Init, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueId,
};
use crate::source::Span;
use std::collections::HashMap;

/// The largest relative error a rule may have against central differences.
const TOLERANCE: f64 = 1e-6;
/// The central-difference step: truncation error ~ STEP^2, rounding ~ 1e-16 / STEP.
const STEP: f64 = 1e-5;

const B: Dim = Dim::Batch;

fn d(n: u64) -> Dim {
    Dim::Fixed(n)
}

/// How a test tensor's elements are drawn.
#[derive(Clone, Copy)]
enum Draw {
    /// Uniform in `[lo, hi)`.
    Uniform(f64, f64),
    /// Magnitude uniform in `[lo, hi)`, random sign: away from 0.
    AwayFromZero(f64, f64),
}

/// A graph under construction with the values of its inputs and parameters.
struct Fixture {
    graph: Graph,
    inputs: HashMap<String, Tensor>,
    params: HashMap<String, Tensor>,
    batch: usize,
    rng: u64,
}

impl Fixture {
    fn new(batch: usize) -> Fixture {
        Fixture {
            graph: Graph::new("grad"),
            inputs: HashMap::new(),
            params: HashMap::new(),
            batch,
            rng: 0x2545_F491_4F6C_DD1D,
        }
    }

    /// Uniform in [0, 1) (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn tensor(&mut self, dims: &[Dim], draw: Draw) -> Tensor {
        let shape: Vec<usize> = dims
            .iter()
            .map(|d| d.resolve(self.batch as u64) as usize)
            .collect();
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| match draw {
                Draw::Uniform(lo, hi) => lo + (hi - lo) * self.unit(),
                Draw::AwayFromZero(lo, hi) => {
                    let m = lo + (hi - lo) * self.unit();
                    if self.unit() < 0.5 { -m } else { m }
                }
            })
            .collect();
        Tensor::new(shape, data).expect("sizes agree")
    }

    fn input(&mut self, name: &str, dims: &[Dim], draw: Draw) -> ValueId {
        let t = self.tensor(dims, draw);
        self.inputs.insert(name.into(), t);
        self.graph.add_leaf(
            Op::Input { name: name.into() },
            TensorType::f32(dims.to_vec()),
            Span::default(),
        )
    }

    /// An input with given values.
    fn input_of(&mut self, name: &str, dtype: DType, dims: &[Dim], t: Tensor) -> ValueId {
        self.inputs.insert(name.into(), t);
        self.graph.add_leaf(
            Op::Input { name: name.into() },
            TensorType::new(dtype, dims.to_vec()),
            Span::default(),
        )
    }

    fn param(&mut self, path: &str, dims: &[Dim], draw: Draw) -> ValueId {
        let t = self.tensor(dims, draw);
        self.params.insert(path.into(), t);
        self.graph.add_leaf(
            Op::Param {
                path: path.into(),
                init: Init::Zeros,
            },
            TensorType::f32(dims.to_vec()),
            Span::default(),
        )
    }

    fn op(&mut self, op: Op, operands: &[ValueId]) -> ValueId {
        self.graph
            .add(op, operands, Span::default())
            .unwrap_or_else(|e| panic!("test graph is well-typed: {e}"))
    }

    fn unary(&mut self, u: UnaryOp, x: ValueId) -> ValueId {
        self.op(Op::Unary(u), &[x])
    }

    fn binary(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        self.op(Op::Binary(b), &[x, y])
    }

    fn constant(&mut self, value: f64) -> ValueId {
        self.op(Op::Const { value }, &[])
    }

    fn sum_all(&mut self, x: ValueId) -> ValueId {
        let rank = self.graph.ty(x).shape.rank();
        if rank == 0 {
            return x;
        }
        self.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: (0..rank).collect(),
                keep_dims: false,
            },
            &[x],
        )
    }

    /// `sum(y * probe)` with a random `probe` input of `y`'s shape.
    fn probe_loss(&mut self, y: ValueId) -> ValueId {
        let dims = self.graph.ty(y).shape.0.clone();
        let name = format!("probe{}", y.index());
        let probe = self.input(&name, &dims, Draw::Uniform(-1.0, 1.0));
        let weighted = self.binary(BinaryOp::Mul, y, probe);
        self.sum_all(weighted)
    }

    /// The gradients of `loss` w.r.t. `wrt` from [`gradients`], evaluated; the graph with
    /// them verifies.
    fn analytic(&self, loss: ValueId, wrt: &[ValueId]) -> Vec<Tensor> {
        let mut graph = self.graph.clone();
        let before = graph.len();
        let grads = gradients(&mut graph, loss, wrt).expect("gradients");
        graph.verify().expect("the gradient graph verifies");
        for (&w, &g) in wrt.iter().zip(&grads) {
            assert_eq!(graph.ty(g), graph.ty(w), "a gradient has its value's type");
        }
        assert!(graph.len() >= before);
        let values = interpret_values(&graph, &self.inputs, &self.params).expect("evaluates");
        grads.iter().map(|g| values[g].clone()).collect()
    }

    fn loss_at(
        &self,
        graph: &Graph,
        inputs: &HashMap<String, Tensor>,
        params: &HashMap<String, Tensor>,
    ) -> f64 {
        let out = interpret(graph, inputs, params).expect("evaluates");
        out["loss"].data[0]
    }

    /// Central differences of `loss` w.r.t. each leaf of `wrt`.
    fn numeric(&self, loss: ValueId, wrt: &[ValueId]) -> Vec<Tensor> {
        let mut graph = self.graph.clone();
        graph.outputs = vec![("loss".into(), loss)];
        wrt.iter()
            .map(|&w| {
                let (is_input, key) = match &graph.node(w).op {
                    Op::Input { name } => (true, name.clone()),
                    Op::Param { path, .. } => (false, path.clone()),
                    other => panic!("finite differences need a leaf, got {}", other.mnemonic()),
                };
                let (mut inputs, mut params) = (self.inputs.clone(), self.params.clone());
                let base = if is_input {
                    &self.inputs[&key]
                } else {
                    &self.params[&key]
                };
                let mut grad = Tensor::zeros(base.shape.clone());
                for j in 0..base.len() {
                    let mut at = |delta: f64| {
                        let mut t = base.clone();
                        t.data[j] += delta;
                        if is_input {
                            inputs.insert(key.clone(), t);
                        } else {
                            params.insert(key.clone(), t);
                        }
                        self.loss_at(&graph, &inputs, &params)
                    };
                    grad.data[j] = (at(STEP) - at(-STEP)) / (2.0 * STEP);
                }
                grad
            })
            .collect()
    }

    /// Asserts that the gradients of `loss` w.r.t. the leaves `wrt` match central
    /// differences; returns the largest relative error.
    fn check(&self, what: &str, loss: ValueId, wrt: &[ValueId]) -> f64 {
        let analytic = self.analytic(loss, wrt);
        let numeric = self.numeric(loss, wrt);
        let mut worst = 0.0f64;
        for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            let err = a.max_relative_error(n);
            assert!(
                err <= TOLERANCE,
                "{what}: gradient {i}: relative error {err:e}\nanalytic {:?}\nnumeric {:?}",
                a.data,
                n.data
            );
            worst = worst.max(err);
        }
        eprintln!("{what}: max relative error {worst:.1e}");
        worst
    }
}

#[test]
fn every_unary_rule_matches_finite_differences() {
    for u in UnaryOp::ALL {
        let draw = match u {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Recip => Draw::Uniform(0.5, 2.0),
            UnaryOp::Abs | UnaryOp::Relu => Draw::AwayFromZero(0.1, 2.0),
            _ => Draw::Uniform(-2.0, 2.0),
        };
        let mut f = Fixture::new(3);
        let x = f.input("x", &[B, d(4)], draw);
        let y = f.unary(u, x);
        let loss = f.probe_loss(y);
        f.check(u.name(), loss, &[x]);
    }
}

#[test]
fn every_arithmetic_binary_rule_matches_finite_differences() {
    use BinaryOp::*;
    for b in [Add, Sub, Mul, Div, Max, Min, Pow] {
        let (da, db) = match b {
            Div => (Draw::Uniform(-2.0, 2.0), Draw::AwayFromZero(0.5, 2.0)),
            Pow => (Draw::Uniform(0.5, 2.0), Draw::Uniform(-2.0, 2.0)),
            _ => (Draw::Uniform(-2.0, 2.0), Draw::Uniform(-2.0, 2.0)),
        };
        let mut f = Fixture::new(3);
        let x = f.input("a", &[B, d(4)], da);
        let y = f.input("b", &[B, d(4)], db);
        let z = f.binary(b, x, y);
        let loss = f.probe_loss(z);
        f.check(b.name(), loss, &[x, y]);
    }
}

#[test]
fn broadcast_operands_sum_the_cotangent_over_stretched_axes() {
    use BinaryOp::*;
    let pairs: [(&[Dim], &[Dim]); 6] = [
        (&[B, d(3), d(4)], &[d(4)]),
        (&[B, d(3), d(4)], &[d(3), d(1)]),
        (&[d(1), d(4)], &[B, d(1), d(1)]),
        (&[B, d(3), d(4)], &[]),
        (&[d(3), d(1)], &[d(1), d(4)]),
        (&[d(1), d(3), d(4)], &[B, d(1), d(4)]),
    ];
    for b in [Add, Sub, Mul, Div, Max, Pow] {
        for (sa, sb) in pairs {
            let (da, db) = match b {
                Div => (Draw::Uniform(-2.0, 2.0), Draw::AwayFromZero(0.5, 2.0)),
                Pow => (Draw::Uniform(0.5, 2.0), Draw::Uniform(-2.0, 2.0)),
                _ => (Draw::Uniform(-2.0, 2.0), Draw::Uniform(-2.0, 2.0)),
            };
            let mut f = Fixture::new(2);
            let x = f.input("a", sa, da);
            let y = f.param("b", sb, db);
            let z = f.binary(b, x, y);
            let loss = f.probe_loss(z);
            f.check(&format!("{} {sa:?} {sb:?}", b.name()), loss, &[x, y]);
        }
    }
}

#[test]
fn comparisons_pass_no_gradient() {
    let mut f = Fixture::new(3);
    let a = f.input("a", &[B, d(4)], Draw::Uniform(-2.0, 2.0));
    let b = f.input("b", &[B, d(4)], Draw::Uniform(-2.0, 2.0));
    let mask = f.binary(BinaryOp::Gt, a, b);
    let y = f.binary(BinaryOp::Mul, mask, a);
    let loss = f.probe_loss(y);
    f.check("gt mask", loss, &[a, b]);
    // `b` reaches the loss only through the comparison: its gradient is zeros, built
    // from nothing but a constant.
    let mut graph = f.graph.clone();
    let grads = gradients(&mut graph, loss, &[b]).expect("gradients");
    assert!(matches!(graph.node(grads[0]).op, Op::Broadcast { .. }));
    assert!(
        matches!(graph.node(graph.operands(grads[0])[0]).op, Op::Const { value } if value == 0.0)
    );
}

#[test]
fn batched_matmul_matches_finite_differences() {
    let cases: [(&[Dim], &[Dim]); 3] = [
        (&[d(3), d(4)], &[d(4), d(5)]),
        (&[d(2), d(3), d(4)], &[d(2), d(4), d(5)]),
        (&[B, d(2), d(3), d(4)], &[B, d(2), d(4), d(5)]),
    ];
    for (sa, sb) in cases {
        let mut f = Fixture::new(2);
        let a = f.input("a", sa, Draw::Uniform(-1.0, 1.0));
        let b = f.input("b", sb, Draw::Uniform(-1.0, 1.0));
        let c = f.op(Op::MatMul, &[a, b]);
        let loss = f.probe_loss(c);
        f.check(&format!("matmul {sa:?} x {sb:?}"), loss, &[a, b]);
    }
}

#[test]
fn matmul_with_a_shared_rank2_rhs_sums_its_gradient_over_leading_dims() {
    // Leading dims that merge into one fixed dim, into the batch, and that do not merge
    // (`batch * 3` rows: the batched product and a sum).
    let cases: [&[Dim]; 5] = [
        &[d(2), d(3), d(4)],
        &[B, d(1), d(4)],
        &[B, d(3), d(4)],
        &[d(2), B, d(3), d(4)],
        &[d(1), B, d(1), d(4)],
    ];
    for sa in cases {
        let mut f = Fixture::new(3);
        let a = f.input("a", sa, Draw::Uniform(-1.0, 1.0));
        let w = f.param("w", &[d(4), d(5)], Draw::Uniform(-1.0, 1.0));
        let c = f.op(Op::MatMul, &[a, w]);
        let loss = f.probe_loss(c);
        f.check(&format!("matmul {sa:?} x [4, 5]"), loss, &[a, w]);
    }
}

#[test]
fn matmul_with_a_shared_rank2_lhs_sums_its_gradient_over_leading_dims() {
    // A convolution's weight [O, C kh kw] times each image's columns [C kh kw, OH OW].
    let cases: [&[Dim]; 4] = [
        &[d(2), d(4), d(5)],
        &[B, d(4), d(5)],
        &[B, d(4), d(1)],
        &[d(2), B, d(4), d(5)],
    ];
    for sb in cases {
        let mut f = Fixture::new(3);
        let w = f.param("w", &[d(3), d(4)], Draw::Uniform(-1.0, 1.0));
        let b = f.input("b", sb, Draw::Uniform(-1.0, 1.0));
        let c = f.op(Op::MatMul, &[w, b]);
        let mut want = sb.to_vec();
        want[sb.len() - 2] = d(3);
        assert_eq!(f.graph.ty(c).shape, Shape(want));
        let loss = f.probe_loss(c);
        f.check(&format!("matmul [3, 4] x {sb:?}"), loss, &[w, b]);
    }
}

#[test]
fn matmul_contracting_over_the_batch_matches_finite_differences() {
    // A dense layer: the weight's gradient is xᵀ x dy, [4, batch] x [batch, 5].
    let mut f = Fixture::new(4);
    let x = f.input("x", &[B, d(4)], Draw::Uniform(-1.0, 1.0));
    let w = f.param("w", &[d(4), d(5)], Draw::Uniform(-1.0, 1.0));
    let y = f.op(Op::MatMul, &[x, w]);
    let loss = f.probe_loss(y);
    f.check("dense", loss, &[x, w]);

    // The forward product itself contracts over the batch: xᵀ [3, batch] x z [batch, 2].
    let mut f = Fixture::new(4);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let z = f.input("z", &[B, d(2)], Draw::Uniform(-1.0, 1.0));
    let xt = f.op(Op::Transpose { perm: vec![1, 0] }, &[x]);
    let c = f.op(Op::MatMul, &[xt, z]);
    assert_eq!(f.graph.ty(c).shape, Shape(vec![d(3), d(2)]));
    let loss = f.probe_loss(c);
    f.check("matmul over the batch", loss, &[x, z]);
}

#[test]
fn reduction_rules_match_finite_differences() {
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        for axes in [vec![1], vec![0], vec![0, 2], vec![0, 1, 2]] {
            for keep_dims in [false, true] {
                let mut f = Fixture::new(3);
                let x = f.input("x", &[B, d(3), d(4)], Draw::Uniform(-2.0, 2.0));
                let y = f.op(
                    Op::Reduce {
                        op,
                        axes: axes.clone(),
                        keep_dims,
                    },
                    &[x],
                );
                let loss = f.probe_loss(y);
                let what = format!("reduce_{} axes={axes:?} keep_dims={keep_dims}", op.name());
                f.check(&what, loss, &[x]);
            }
        }
    }
}

#[test]
fn reduce_max_ties_share_the_gradient() {
    let mut f = Fixture::new(1);
    let row = Tensor::new(vec![2, 3], vec![1.0, 3.0, 3.0, 5.0, 5.0, 5.0]).expect("sizes");
    let x = f.input_of("x", DType::F32, &[d(2), d(3)], row);
    let m = f.op(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1],
            keep_dims: false,
        },
        &[x],
    );
    let loss = f.sum_all(m);
    let g = &f.analytic(loss, &[x])[0];
    let third = 1.0 / 3.0;
    assert_eq!(g.data, vec![0.0, 0.5, 0.5, third, third, third]);
}

#[test]
fn binary_max_ties_split_the_gradient_in_halves() {
    let mut f = Fixture::new(1);
    let a = f.input_of(
        "a",
        DType::F32,
        &[d(3)],
        Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).expect("sizes"),
    );
    let b = f.input_of(
        "b",
        DType::F32,
        &[d(3)],
        Tensor::new(vec![3], vec![2.0, 2.0, 2.0]).expect("sizes"),
    );
    let m = f.binary(BinaryOp::Max, a, b);
    let loss = f.sum_all(m);
    let g = f.analytic(loss, &[a, b]);
    assert_eq!(g[0].data, vec![0.0, 0.5, 1.0]);
    assert_eq!(g[1].data, vec![1.0, 0.5, 0.0]);
}

#[test]
fn reshape_and_transpose_rules_match_finite_differences() {
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(2), d(3), d(4)], Draw::Uniform(-1.0, 1.0));
    let t = f.op(
        Op::Transpose {
            perm: vec![2, 0, 3, 1],
        },
        &[x],
    );
    let r = f.op(
        Op::Reshape {
            shape: Shape(vec![d(12), B, d(2)]),
        },
        &[t],
    );
    let y = f.unary(UnaryOp::Tanh, r);
    let loss = f.probe_loss(y);
    f.check("transpose + reshape", loss, &[x]);
}

#[test]
fn concat_slice_and_broadcast_rules_match_finite_differences() {
    let mut f = Fixture::new(2);
    let a = f.input("a", &[B, d(2), d(3)], Draw::Uniform(-1.0, 1.0));
    let b = f.input("b", &[B, d(1), d(3)], Draw::Uniform(-1.0, 1.0));
    let c = f.param("c", &[d(3)], Draw::Uniform(-1.0, 1.0));
    let cb = f.op(
        Op::Broadcast {
            shape: Shape(vec![B, d(4), d(3)]),
        },
        &[c],
    );
    let joined = f.op(Op::Concat { axis: 1 }, &[a, b, cb]);
    let middle = f.op(
        Op::Slice {
            axis: 1,
            start: 1,
            len: 4,
        },
        &[joined],
    );
    let first = f.op(
        Op::Slice {
            axis: 2,
            start: 0,
            len: 2,
        },
        &[middle],
    );
    let y = f.unary(UnaryOp::Sigmoid, first);
    let loss = f.probe_loss(y);
    f.check("concat + slice + broadcast", loss, &[a, b, c]);
}

#[test]
fn fan_out_accumulates_cotangents() {
    let mut f = Fixture::new(3);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let sq = f.binary(BinaryOp::Mul, x, x);
    let e = f.unary(UnaryOp::Exp, x);
    let s = f.binary(BinaryOp::Add, sq, e);
    let two = f.constant(2.0);
    let twice = f.binary(BinaryOp::Mul, two, x);
    let y = f.binary(BinaryOp::Sub, s, twice);
    let loss = f.probe_loss(y);
    f.check("fan-out", loss, &[x]);
}

#[test]
fn stop_gradient_blocks_the_gradient() {
    let mut f = Fixture::new(3);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let frozen = f.op(Op::StopGradient, &[x]);
    let y = f.binary(BinaryOp::Mul, frozen, x);
    let loss = f.sum_all(y);
    // d/dx sum(stop(x) * x) = stop(x) = x, where the unfrozen sum(x * x) would give 2x.
    let g = &f.analytic(loss, &[x])[0];
    assert_eq!(g, &f.inputs["x"]);

    // Through nothing but a stop-gradient, the gradient is zeros.
    let y = f.unary(UnaryOp::Exp, frozen);
    let loss = f.sum_all(y);
    let g = &f.analytic(loss, &[x])[0];
    assert!(g.data.iter().all(|v| *v == 0.0));
}

#[test]
fn casts_pass_no_gradient_and_agree_with_finite_differences() {
    let mut f = Fixture::new(3);
    let x = f.input("x", &[B, d(4)], Draw::Uniform(-3.0, 3.0));
    // Truncation is piecewise constant: away from whole numbers, finite differences of
    // x * float(int(x)) see only the outer x, d/dx = int(x).
    let whole = f.op(Op::Cast { to: DType::I32 }, &[x]);
    let back = f.op(Op::Cast { to: DType::F32 }, &[whole]);
    let y = f.binary(BinaryOp::Mul, x, back);
    let loss = f.probe_loss(y);
    f.check("x * float(int(x))", loss, &[x]);
    let loss = f.sum_all(back);
    let g = &f.analytic(loss, &[x])[0];
    assert!(g.data.iter().all(|v| *v == 0.0), "{:?}", g.data);
}

#[test]
fn values_that_do_not_influence_the_loss_get_no_gradient_ops() {
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let w = f.param("w", &[d(3)], Draw::Uniform(-1.0, 1.0));
    let unused = f.param("unused", &[d(2), d(3)], Draw::Uniform(-1.0, 1.0));
    let side = f.unary(UnaryOp::Exp, w);
    f.graph.outputs.push(("side".into(), side));
    let y = f.binary(BinaryOp::Mul, x, w);
    let loss = f.probe_loss(y);
    let mut graph = f.graph.clone();
    let before = graph.values();
    let grads = gradients(&mut graph, loss, &[w, unused]).expect("gradients");
    graph.verify().expect("verifies");
    for v in graph.values().into_iter().filter(|v| !before.contains(v)) {
        assert!(
            !graph.operands(v).contains(&side),
            "no gradient op reads the side branch"
        );
    }
    assert_eq!(graph.ty(grads[1]), graph.ty(unused));
    let values = interpret_values(&graph, &f.inputs, &f.params).expect("evaluates");
    assert!(values[&grads[1]].data.iter().all(|v| *v == 0.0));
    f.check("partial", loss, &[w, unused]);
}

#[test]
fn a_gradient_with_respect_to_an_intermediate_value_counts_every_path() {
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let h = f.unary(UnaryOp::Tanh, x);
    let y = f.binary(BinaryOp::Mul, h, h);
    let loss = f.sum_all(y);
    let grads = f.analytic(loss, &[h, x]);
    let hx: Vec<f64> = f.inputs["x"].data.iter().map(|v| v.tanh()).collect();
    for (g, h) in grads[0].data.iter().zip(&hx) {
        assert!((g - 2.0 * h).abs() < 1e-12);
    }
    f.check("through tanh", loss, &[x]);
}

#[test]
fn the_loss_must_be_an_f32_scalar_and_gradients_need_f32_values() {
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let labels = f.input_of(
        "y",
        DType::I32,
        &[B],
        Tensor::new(vec![2], vec![0.0, 1.0]).expect("sizes"),
    );
    let loss = f.sum_all(x);
    let mut graph = f.graph.clone();
    assert!(
        gradients(&mut graph, x, &[x])
            .unwrap_err()
            .contains("scalar")
    );
    assert!(
        gradients(&mut graph, loss, &[labels])
            .unwrap_err()
            .contains("f32")
    );
}

/// A two-layer perceptron with a softmax cross-entropy loss from integer labels, all
/// from IR ops, as the training section builds it:
/// `log_softmax = z - max - log(sum(exp(z - max)))`,
/// `loss = -sum(one_hot(y) * log_softmax) / batch`.
/// Returns the loss and the parameters `[w1, b1, w2, b2]`.
fn mlp_with_cross_entropy(f: &mut Fixture) -> (ValueId, Vec<ValueId>) {
    let (features, hidden, classes) = (4, 5, 3);
    let x = f.input("x", &[B, d(features)], Draw::Uniform(-1.0, 1.0));
    let labels: Vec<f64> = (0..f.batch)
        .map(|i| (i % classes as usize) as f64)
        .collect();
    let n = f.batch;
    let y = f.input_of(
        "y",
        DType::I32,
        &[B],
        Tensor::new(vec![n], labels).expect("sizes"),
    );
    // PyTorch's layout: weight [out, in], dense(x) = x Wᵀ + b.
    let w1 = f.param(
        "l1.weight",
        &[d(hidden), d(features)],
        Draw::Uniform(-1.0, 1.0),
    );
    let b1 = f.param("l1.bias", &[d(hidden)], Draw::Uniform(-0.5, 0.5));
    let w2 = f.param(
        "l2.weight",
        &[d(classes), d(hidden)],
        Draw::Uniform(-1.0, 1.0),
    );
    let b2 = f.param("l2.bias", &[d(classes)], Draw::Uniform(-0.5, 0.5));
    let dense = |f: &mut Fixture, x, w, b| {
        let wt = f.op(Op::Transpose { perm: vec![1, 0] }, &[w]);
        let xw = f.op(Op::MatMul, &[x, wt]);
        f.binary(BinaryOp::Add, xw, b)
    };
    let h = dense(f, x, w1, b1);
    let h = f.unary(UnaryOp::Relu, h);
    let z = dense(f, h, w2, b2);
    let max = f.op(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1],
            keep_dims: true,
        },
        &[z],
    );
    let shifted = f.binary(BinaryOp::Sub, z, max);
    let e = f.unary(UnaryOp::Exp, shifted);
    let s = f.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
            keep_dims: true,
        },
        &[e],
    );
    let log_s = f.unary(UnaryOp::Log, s);
    let log_softmax = f.binary(BinaryOp::Sub, shifted, log_s);
    let one_hot = f.op(Op::OneHot { classes }, &[y]);
    let picked = f.binary(BinaryOp::Mul, one_hot, log_softmax);
    let total = f.sum_all(picked);
    // The batch size, counted from the one-hot rows (one 1 per row).
    let count = f.sum_all(one_hot);
    let mean = f.binary(BinaryOp::Div, total, count);
    let loss = f.unary(UnaryOp::Neg, mean);
    (loss, vec![w1, b1, w2, b2])
}

#[test]
fn mlp_with_softmax_cross_entropy_matches_finite_differences() {
    let mut f = Fixture::new(6);
    let (loss, params) = mlp_with_cross_entropy(&mut f);
    let x = f.graph.inputs[0];
    let mut wrt = params.clone();
    wrt.push(x);
    f.check("mlp cross-entropy", loss, &wrt);
}

#[test]
fn the_constant_one_is_the_loss_gradient_of_itself() {
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(3)], Draw::Uniform(-1.0, 1.0));
    let loss = f.sum_all(x);
    let g = f.analytic(loss, &[loss]);
    assert_eq!(g[0].data, vec![1.0]);
}

#[test]
fn gradient_graphs_print_the_new_ops_with_their_attributes() {
    let mut f = Fixture::new(6);
    let (loss, params) = mlp_with_cross_entropy(&mut f);
    let a = f.input("a", &[d(2), d(3)], Draw::Uniform(-1.0, 1.0));
    let b = f.input("b", &[d(2), d(3)], Draw::Uniform(-1.0, 1.0));
    let joined = f.op(Op::Concat { axis: 1 }, &[a, b]);
    let side = f.sum_all(joined);
    let total = f.binary(BinaryOp::Add, loss, side);
    let mut graph = f.graph.clone();
    gradients(&mut graph, total, &[params[0], a]).expect("gradients");
    let text = crate::ir::print::print_graph(&graph, None);
    for needle in [
        "= one_hot classes=3 %y",
        "= broadcast [batch, 3]",
        "= slice axis=1 start=0 len=3",
    ] {
        assert!(text.contains(needle), "`{needle}` in\n{text}");
    }
}

#[test]
fn im2col_and_col2im_rules_match_finite_differences() {
    use crate::ir::ConvWindow;
    // Padding, stride, dilation and a non-square kernel, so taps fall in the padding and
    // some pixels are read by no window.
    let window = ConvWindow {
        kh: 2,
        kw: 3,
        stride: 2,
        padding: 1,
        dilation: 2,
    };
    let mut f = Fixture::new(2);
    let x = f.input("x", &[B, d(2), d(5), d(6)], Draw::Uniform(-1.0, 1.0));
    let cols = f.op(Op::Im2Col { window }, &[x]);
    let y = f.unary(UnaryOp::Tanh, cols);
    let loss = f.probe_loss(y);
    f.check("im2col", loss, &[x]);

    let mut f = Fixture::new(2);
    // [batch, C, kh, kw, OH, OW]: a 5x6 image gives 3x2 windows.
    let cols_ty = [B, d(2), d(2), d(3), d(3), d(2)];
    let g = f.input("g", &cols_ty, Draw::Uniform(-1.0, 1.0));
    let image = f.op(
        Op::Col2Im {
            window,
            channels: 2,
            height: 5,
            width: 6,
        },
        &[g],
    );
    let y = f.unary(UnaryOp::Tanh, image);
    let loss = f.probe_loss(y);
    f.check("col2im", loss, &[g]);
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    use crate::ir::ConvWindow;
    // <im2col(x), c> == <x, col2im(c)> for random x and c.
    let window = ConvWindow {
        kh: 3,
        kw: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    let mut f = Fixture::new(1);
    let x = f.input("x", &[B, d(2), d(4), d(4)], Draw::Uniform(-1.0, 1.0));
    let c = f.input(
        "c",
        &[B, d(2), d(3), d(3), d(4), d(4)],
        Draw::Uniform(-1.0, 1.0),
    );
    let cols = f.op(Op::Im2Col { window }, &[x]);
    let image = f.op(
        Op::Col2Im {
            window,
            channels: 2,
            height: 4,
            width: 4,
        },
        &[c],
    );
    let lhs = f.binary(BinaryOp::Mul, cols, c);
    let lhs = f.sum_all(lhs);
    let rhs = f.binary(BinaryOp::Mul, x, image);
    let rhs = f.sum_all(rhs);
    f.graph.outputs.push(("lhs".into(), lhs));
    f.graph.outputs.push(("rhs".into(), rhs));
    let out = interpret(&f.graph, &f.inputs, &f.params).expect("interprets");
    let (l, r) = (out["lhs"].data[0], out["rhs"].data[0]);
    assert!((l - r).abs() <= 1e-12 * l.abs().max(1.0), "{l} vs {r}");
}

#[test]
fn im2col_rejects_a_kernel_larger_than_the_padded_input() {
    use crate::ir::ConvWindow;
    let window = ConvWindow {
        kh: 5,
        kw: 5,
        stride: 1,
        padding: 0,
        dilation: 1,
    };
    let mut g = Graph::new("bad");
    let x = g.add_leaf(
        Op::Input { name: "x".into() },
        TensorType::f32(vec![B, d(1), d(4), d(4)]),
        Span::default(),
    );
    let err = g
        .add(Op::Im2Col { window }, &[x], Span::default())
        .unwrap_err();
    assert!(err.contains("kernel spans 5 pixels"), "{err}");
    let flat = g.add_leaf(
        Op::Input {
            name: "flat".into(),
        },
        TensorType::f32(vec![B, d(16)]),
        Span::default(),
    );
    let err = g
        .add(Op::Im2Col { window }, &[flat], Span::default())
        .unwrap_err();
    assert!(err.contains("needs an image"), "{err}");
}

/// An Elman cell `tanh(h Wh + x Wx + b)` as a scan body: carry `[batch, 3]`, step input
/// `[batch, 2]`, constants `Wh`, `Wx`, `b`.
fn elman_body() -> Graph {
    elman_body_with_input_rows(B)
}

/// [`elman_body`] whose step input is `[rows, 2]` (`rows` 1: one input row broadcast
/// over the batch).
fn elman_body_with_input_rows(rows: Dim) -> Graph {
    let mut b = Graph::new("cell");
    let s = Span::default();
    let leaf = |b: &mut Graph, name: &str, dims: Vec<Dim>| {
        b.add_leaf(Op::Input { name: name.into() }, TensorType::f32(dims), s)
    };
    let h = leaf(&mut b, "h", vec![B, d(3)]);
    let x = leaf(&mut b, "x", vec![rows, d(2)]);
    let wh = leaf(&mut b, "wh", vec![d(3), d(3)]);
    let wx = leaf(&mut b, "wx", vec![d(2), d(3)]);
    let bias = leaf(&mut b, "b", vec![d(3)]);
    let hw = b.add(Op::MatMul, &[h, wh], s).unwrap();
    let xw = b.add(Op::MatMul, &[x, wx], s).unwrap();
    let z = b.add(Op::Binary(BinaryOp::Add), &[hw, xw], s).unwrap();
    let z = b.add(Op::Binary(BinaryOp::Add), &[z, bias], s).unwrap();
    let next = b.add(Op::Unary(UnaryOp::Tanh), &[z], s).unwrap();
    b.outputs.push(("next".into(), next));
    b
}

#[test]
fn scan_rule_matches_finite_differences_in_both_directions() {
    use crate::ir::Scan;
    for reverse in [false, true] {
        let mut f = Fixture::new(2);
        let h0 = f.input("h0", &[B, d(3)], Draw::Uniform(-0.5, 0.5));
        let xs = f.input("xs", &[d(4), B, d(2)], Draw::Uniform(-1.0, 1.0));
        let wh = f.param("wh", &[d(3), d(3)], Draw::Uniform(-0.6, 0.6));
        let wx = f.param("wx", &[d(2), d(3)], Draw::Uniform(-0.6, 0.6));
        let b = f.param("b", &[d(3)], Draw::Uniform(-0.3, 0.3));
        let scan = Scan {
            body: elman_body(),
            sequences: 1,
            reverse,
            keep_all: true,
        };
        let r = f.op(Op::Scan(Box::new(scan)), &[h0, xs, wh, wx, b]);
        assert_eq!(
            f.graph.ty(r).shape,
            Shape(vec![d(5), B, d(3)]),
            "every carry, stacked"
        );
        let loss = f.probe_loss(r);
        f.check(
            if reverse { "scan (reverse)" } else { "scan" },
            loss,
            &[h0, xs, wh, wx, b],
        );
        // The backward scans print and parse back to the same graph.
        let mut graph = f.graph.clone();
        gradients(&mut graph, loss, &[h0, xs, wh, wx, b]).expect("gradients");
        let text = crate::ir::print::print_graph(&graph, None);
        // The carries' scan (the sequence's gradient rides along in it) and one
        // accumulating scan per constant.
        assert_eq!(text.matches("graph cell_vjp").count(), 4, "{text}");
        // The forward's products ride along with its carries (a tape), once.
        assert_eq!(text.matches("graph cell_taped").count(), 1, "{text}");
        let parsed = crate::ir::parse::parse_graph(&text).expect("parses");
        parsed.verify().expect("verifies");
        assert_eq!(crate::ir::print::print_graph(&parsed, None), text);
    }
}

#[test]
fn a_sequence_that_cannot_ride_along_with_the_carry_gets_its_own_backward_scan() {
    use crate::ir::Scan;
    // The step input `[1, 2]` differs from the carry `[batch, 3]` before the last axis,
    // so its gradient cannot be concatenated to the carries' cotangent.
    let mut f = Fixture::new(3);
    let h0 = f.input("h0", &[B, d(3)], Draw::Uniform(-0.5, 0.5));
    let xs = f.input("xs", &[d(4), d(1), d(2)], Draw::Uniform(-1.0, 1.0));
    let wh = f.param("wh", &[d(3), d(3)], Draw::Uniform(-0.6, 0.6));
    let wx = f.param("wx", &[d(2), d(3)], Draw::Uniform(-0.6, 0.6));
    let b = f.param("b", &[d(3)], Draw::Uniform(-0.3, 0.3));
    let scan = Scan {
        body: elman_body_with_input_rows(d(1)),
        sequences: 1,
        reverse: false,
        keep_all: true,
    };
    let r = f.op(Op::Scan(Box::new(scan)), &[h0, xs, wh, wx, b]);
    let loss = f.probe_loss(r);
    f.check("scan with a broadcast input", loss, &[h0, xs, wh, wx, b]);
    let mut graph = f.graph.clone();
    gradients(&mut graph, loss, &[xs]).expect("gradients");
    let text = crate::ir::print::print_graph(&graph, None);
    assert_eq!(text.matches("graph cell_vjp").count(), 2, "{text}");
}

/// A recurrent step with its input projected outside: `tanh(p Whᵀ + xp[t])` (or
/// `p Wh`), `p` the carry or its first three columns.
fn projected_body(transposed: bool, sliced: bool) -> Graph {
    let mut b = Graph::new("cell");
    let s = Span::default();
    let width = if sliced { 5 } else { 3 };
    let leaf = |b: &mut Graph, name: &str, dims: Vec<Dim>| {
        b.add_leaf(Op::Input { name: name.into() }, TensorType::f32(dims), s)
    };
    let h = leaf(&mut b, "h", vec![B, d(width)]);
    let xp = leaf(&mut b, "xp", vec![B, d(width)]);
    let wh_dims = if transposed {
        vec![d(width), d(3)]
    } else {
        vec![d(3), d(width)]
    };
    let wh = leaf(&mut b, "wh", wh_dims);
    let p = if sliced {
        let slice = Op::Slice {
            axis: 1,
            start: 0,
            len: 3,
        };
        b.add(slice, &[h], s).unwrap()
    } else {
        h
    };
    let w = if transposed {
        b.add(Op::Transpose { perm: vec![1, 0] }, &[wh], s).unwrap()
    } else {
        wh
    };
    let z = b.add(Op::MatMul, &[p, w], s).unwrap();
    let z = b.add(Op::Binary(BinaryOp::Add), &[z, xp], s).unwrap();
    let next = b.add(Op::Unary(UnaryOp::Tanh), &[z], s).unwrap();
    b.outputs.push(("next".into(), next));
    b
}

#[test]
fn a_recurrent_weight_next_to_a_sequence_gets_a_summed_product_not_a_scan() {
    use crate::ir::Scan;
    for (transposed, sliced, reverse) in [
        (true, false, false),
        (false, true, false),
        (true, true, true),
    ] {
        let width = if sliced { 5 } else { 3 };
        let mut f = Fixture::new(5);
        let h0 = f.input("h0", &[B, d(width)], Draw::Uniform(-0.5, 0.5));
        let xp = f.input("xp", &[d(4), B, d(width)], Draw::Uniform(-1.0, 1.0));
        let wh_dims = if transposed {
            [d(width), d(3)]
        } else {
            [d(3), d(width)]
        };
        let wh = f.param("wh", &wh_dims, Draw::Uniform(-0.6, 0.6));
        let scan = Scan {
            body: projected_body(transposed, sliced),
            sequences: 1,
            reverse,
            keep_all: true,
        };
        let r = f.op(Op::Scan(Box::new(scan)), &[h0, xp, wh]);
        let loss = f.probe_loss(r);
        let case = format!("transposed {transposed}, sliced {sliced}, reverse {reverse}");
        f.check(&case, loss, &[h0, xp, wh]);
        // One backward scan: the carries', with the sequence's gradient alongside; none
        // for the weight.
        let mut graph = f.graph.clone();
        gradients(&mut graph, loss, &[wh]).expect("gradients");
        let text = crate::ir::print::print_graph(&graph, None);
        assert_eq!(text.matches("graph cell_vjp").count(), 1, "{case}\n{text}");
    }
}
