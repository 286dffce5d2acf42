//! Small hand-built kernels shared by the emitters' tests (CPU and GPU), so both
//! backends are tested on exactly the same kernels.

use crate::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ReduceOp, ScalarType, Store, UnaryOp,
};

pub(crate) fn buffer(name: &str, dtype: ScalarType, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        access,
    }
}

pub(crate) fn f32_buffer(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    buffer(name, ScalarType::F32, shape, access)
}

/// A step's product with its input's projection as a term, `y = h w + x v` over 8
/// columns (depths 4 and 3), as the kernel text prints it.
pub(crate) const STEP_WITH_TERM: &str = "kernel step contract batch [] m batch n 8 k 4 terms [3] (h: f32[batch, 4] r, w: f32[4, 8] r, y: f32[batch, 8] w, x: f32[batch, 3] r, v: f32[3, 8] r) {
  a = h[0 + row * 4 + col * 1]
  b = w[0 + row * 8 + col * 1]
  a1 = x[0 + row * 3 + col * 1]
  b1 = v[0 + row * 8 + col * 1]
  acc = sum_k a[m, k] * b[k, n] + sum_k a1[m, k] * b1[k, n]
  y[row-major] = acc
}
";

pub(crate) fn row_major(shape: &[Dim]) -> Index {
    Index::row_major(&(0..shape.len()).map(Index::Var).collect::<Vec<_>>(), shape)
}

/// `out[i, j] = x[i, j] + bias[j]` over `[batch, 3]`.
pub(crate) fn bias_add() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(3)];
    Kernel {
        name: "bias_add".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("bias", &[Dim::Fixed(3)], Access::Read),
            f32_buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 2,
                index: row_major(&shape),
                value: Expr::binary(
                    BinaryOp::Add,
                    Expr::load(0, row_major(&shape)),
                    Expr::load(1, Index::Var(1)),
                ),
            }],
        },
    }
}

/// `out = relu(x @ w + bias)` with `x: [batch, 4]`, `w: [4, 2]`.
pub(crate) fn dense_relu() -> Kernel {
    Kernel {
        name: "dense_relu".into(),
        buffers: vec![
            f32_buffer("x", &[Dim::Batch, Dim::Fixed(4)], Access::Read),
            f32_buffer("w", &[Dim::Fixed(4), Dim::Fixed(2)], Access::Read),
            f32_buffer("bias", &[Dim::Fixed(2)], Access::Read),
            f32_buffer("out", &[Dim::Batch, Dim::Fixed(2)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Batch,
            n: Dim::Fixed(2),
            k: Dim::Fixed(4),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(4),
                col_stride: Index::Const(1),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(2),
                col_stride: Index::Const(1),
                window: None,
            },
            out: 3,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, Index::Var(1))),
            ),
            terms: Vec::new(),
        }),
    }
}

/// `out[i, j] = uniform(seed 42, flat index, step[0])` over `[batch, 5]`.
pub(crate) fn uniform_map() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(5)];
    Kernel {
        name: "uniform_map".into(),
        buffers: vec![
            f32_buffer("step", &[], Access::Read),
            f32_buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 1,
                index: row_major(&shape),
                value: Expr::Uniform {
                    seed: 42,
                    index: row_major(&shape),
                    step: Box::new(Expr::load(0, Index::Const(0))),
                },
            }],
        },
    }
}

/// `op_k x[row, k]` over a row of `x: [batch, 10]`, binding `k` as variable `scope`.
fn row_reduce(op: ReduceOp, row: usize, scope: usize, x: impl Fn(Index) -> Expr) -> Expr {
    Expr::Reduce {
        op,
        extent: vec![Dim::Fixed(10)],
        value: Box::new(x(Index::Var(row)
            .mul(Index::Const(10))
            .add(Index::Var(scope)))),
    }
}

/// A row softmax over `x: [batch, 10]` as one map: `out[i, j] = exp(x[i, j] - m) / s`
/// with the row max `m` and the row sum `s` of `exp(x[i, k] - m)` nested reductions (`m`
/// nested again inside `s`).
pub(crate) fn nested_softmax() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(10)];
    let x = |ix: Index| Expr::load(0, ix);
    let shifted_exp = |at: Index, scope: usize| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(BinaryOp::Sub, x(at), row_reduce(ReduceOp::Max, 0, scope, x)),
        )
    };
    let sum = Expr::Reduce {
        op: ReduceOp::Sum,
        extent: vec![Dim::Fixed(10)],
        value: Box::new(shifted_exp(
            Index::Var(0).mul(Index::Const(10)).add(Index::Var(2)),
            3,
        )),
    };
    Kernel {
        name: "nested_softmax".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 1,
                index: row_major(&shape),
                value: Expr::binary(BinaryOp::Div, shifted_exp(row_major(&shape), 2), sum),
            }],
        },
    }
}

/// `out = sum_{i, j} (x[i, j] - max_k x[i, k]) / batch` over `x: [batch, 10]`: a
/// reduction over the batch (a workgroup tree on the GPU) whose value holds a nested one.
pub(crate) fn centered_total() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(10)];
    let x = |ix: Index| Expr::load(0, ix);
    Kernel {
        name: "centered_total".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("out", &[], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![],
            reduce: shape.to_vec(),
            op: ReduceOp::Sum,
            value: Expr::binary(
                BinaryOp::Sub,
                x(row_major(&shape)),
                row_reduce(ReduceOp::Max, 0, 2, x),
            ),
            out: Store {
                buf: 1,
                index: Index::Const(0),
                value: Expr::binary(BinaryOp::Div, Expr::Acc, Expr::IndexValue(Index::Batch)),
            },
        },
    }
}
