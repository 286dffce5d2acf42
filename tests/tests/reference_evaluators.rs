//! The two f64 reference evaluators, the graph IR's interpreter and the kernel IR's
//! evaluator, compute the same value for every scalar op on a sweep of inputs, the
//! awkward ones included (signed zeros, infinities, NaN, the tails where `exp` overflows).

use strata_compiler::ir::Op;
use strata_compiler::ir::interpret::{Tensor, apply_op};
use strata_kernels::eval::eval_kernel;
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Dim, Expr, Index, Kernel, KernelBody, ReduceOp, ScalarType,
    Store, UnaryOp,
};

/// Values where implementations of the ops tend to part ways, and a dense grid between.
fn sweep() -> Vec<f64> {
    let mut xs = vec![
        f64::NEG_INFINITY,
        -1000.0,
        -745.0,
        -740.0,
        -720.0,
        -709.5,
        -100.0,
        -40.0,
        -1.0,
        -1e-300,
        -0.0,
        0.0,
        1e-300,
        1.0,
        40.0,
        709.5,
        720.0,
        1000.0,
        f64::INFINITY,
        f64::NAN,
    ];
    xs.extend((-800..=800).map(|i| f64::from(i) * 0.999));
    xs
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `out[i] = value(x[i], y[i])` over `n` points, run by the kernel evaluator.
fn kernel_map(value: Expr, x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len();
    let buffer = |name: &str, access| BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape: vec![Dim::Fixed(n as u64)],
        access,
    };
    let kernel = Kernel {
        name: "k".into(),
        buffers: vec![
            buffer("x", Access::Read),
            buffer("y", Access::Read),
            buffer("out", Access::Write),
        ],
        body: KernelBody::Map {
            space: vec![Dim::Fixed(n as u64)],
            stores: vec![Store {
                buf: 2,
                index: Index::Var(0),
                value,
            }],
        },
    };
    let mut buffers = vec![x.to_vec(), y.to_vec(), vec![0.0; n]];
    eval_kernel(&kernel, &mut buffers, 1).expect("the kernel evaluates");
    buffers.pop().expect("three buffers")
}

fn load(buf: usize) -> Expr {
    Expr::load(buf, Index::Var(0))
}

fn interpreted(op: &Op, operands: &[&[f64]]) -> Vec<f64> {
    let tensors: Vec<Tensor> = operands
        .iter()
        .map(|x| Tensor::new(vec![x.len()], x.to_vec()).expect("sizes match"))
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    apply_op(op, &refs).expect("the op evaluates").data
}

#[test]
fn unary_ops_agree_on_a_sweep() {
    let x = sweep();
    for op in UnaryOp::ALL {
        let graph = interpreted(&Op::Unary(op), &[&x]);
        let kernel = kernel_map(Expr::unary(op, load(0)), &x, &x);
        for ((x, g), k) in x.iter().zip(&graph).zip(&kernel) {
            assert!(
                same(*g, *k),
                "{}({x:e}): interpreter {g:e}, kernel evaluator {k:e}",
                op.name()
            );
        }
    }
}

#[test]
fn binary_ops_agree_on_every_pair_of_a_sweep() {
    let values: Vec<f64> = sweep()
        .into_iter()
        .step_by(37)
        .chain([-0.0, 0.0, f64::NAN, -2.0, 0.5, 3.0])
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = values
        .iter()
        .flat_map(|&a| values.iter().map(move |&b| (a, b)))
        .unzip();
    for op in BinaryOp::ALL {
        let graph = interpreted(&Op::Binary(op), &[&x, &y]);
        let kernel = kernel_map(Expr::binary(op, load(0), load(1)), &x, &y);
        for (((x, y), g), k) in x.iter().zip(&y).zip(&graph).zip(&kernel) {
            assert!(
                same(*g, *k),
                "{}({x:e}, {y:e}): interpreter {g:e}, kernel evaluator {k:e}",
                op.name()
            );
        }
    }
}

#[test]
fn reductions_agree_whatever_the_order_of_signed_zeros_and_nan() {
    let rows: [&[f64]; 6] = [
        &[-0.0, 0.0],
        &[0.0, -0.0],
        &[1.0, f64::NAN, 2.0],
        &[f64::NAN, f64::NEG_INFINITY],
        &[f64::INFINITY, f64::NEG_INFINITY],
        &[1e308, 1e308, -1e308],
    ];
    for op in ReduceOp::ALL {
        for row in rows {
            let graph = interpreted(
                &Op::Reduce {
                    op,
                    axes: vec![0],
                    keep_dims: false,
                },
                &[row],
            );
            let n = row.len() as u64;
            let kernel = Kernel {
                name: "k".into(),
                buffers: vec![
                    BufferDecl {
                        name: "x".into(),
                        dtype: ScalarType::F32,
                        shape: vec![Dim::Fixed(n)],
                        access: Access::Read,
                    },
                    BufferDecl {
                        name: "out".into(),
                        dtype: ScalarType::F32,
                        shape: vec![],
                        access: Access::Write,
                    },
                ],
                body: KernelBody::Reduce {
                    space: vec![],
                    reduce: vec![Dim::Fixed(n)],
                    op,
                    value: load(0),
                    out: Store {
                        buf: 1,
                        index: Index::Const(0),
                        value: Expr::Acc,
                    },
                },
            };
            let mut buffers = vec![row.to_vec(), vec![0.0]];
            eval_kernel(&kernel, &mut buffers, 1).expect("the kernel evaluates");
            let (g, k) = (graph[0], buffers[1][0]);
            assert!(
                same(g, k),
                "reduce_{}({row:?}): interpreter {g:e}, kernel evaluator {k:e}",
                op.name()
            );
        }
    }
}
