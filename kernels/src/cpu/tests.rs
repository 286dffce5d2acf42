//! Snapshots of the CLIF of tiny kernels, its round trip through the reader, and the
//! emitter's refusals.

use super::emit_clif;
use crate::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ReduceOp, ScalarType, Store, UnaryOp,
};

fn buffer(name: &str, dtype: ScalarType, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        access,
    }
}

fn f32_buffer(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    buffer(name, ScalarType::F32, shape, access)
}

fn row_major(shape: &[Dim]) -> Index {
    Index::row_major(&(0..shape.len()).map(Index::Var).collect::<Vec<_>>(), shape)
}

/// `out[i, j] = x[i, j] + bias[j]` over `[batch, 3]`.
fn bias_add() -> Kernel {
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

/// `out[i] = sum_j x[i, j]` over `[4, 8]`.
fn row_sum() -> Kernel {
    Kernel {
        name: "row_sum".into(),
        buffers: vec![
            f32_buffer("x", &[Dim::Fixed(4), Dim::Fixed(8)], Access::Read),
            f32_buffer("out", &[Dim::Fixed(4)], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![Dim::Fixed(4)],
            reduce: vec![Dim::Fixed(8)],
            op: ReduceOp::Sum,
            value: Expr::load(0, row_major(&[Dim::Fixed(4), Dim::Fixed(8)])),
            out: Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::Acc,
            },
        },
    }
}

/// `out = relu(x @ w + bias)` with `x: [batch, 4]`, `w: [4, 2]`.
fn dense_relu() -> Kernel {
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
            m: Dim::Batch,
            n: Dim::Fixed(2),
            k: Dim::Fixed(4),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(4),
                col_stride: Index::Const(1),
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(2),
                col_stride: Index::Const(1),
            },
            out: 3,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, Index::Var(1))),
            ),
        }),
    }
}

/// A map that uses every operator, an `i32` buffer and a guarded (branching) select.
fn every_operator() -> Kernel {
    let x = || Expr::load(0, Index::Var(0));
    let idx = || Expr::load(1, Index::Var(0));
    let mut value = x();
    for op in [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
    ] {
        value = Expr::binary(BinaryOp::Add, value, Expr::unary(op, x()));
    }
    for op in [
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Eq,
    ] {
        value = Expr::binary(op, value, idx());
    }
    let guarded = Expr::Select {
        cond: Box::new(Expr::binary(
            BinaryOp::Lt,
            Expr::IndexValue(Index::Var(0)),
            Expr::Const(2.0),
        )),
        then: Box::new(Expr::load(0, Index::Div(Box::new(Index::Var(0)), 3))),
        otherwise: Box::new(Expr::load(0, Index::Rem(Box::new(Index::Var(0)), 4))),
    };
    Kernel {
        name: "every_operator".into(),
        buffers: vec![
            f32_buffer("x", &[Dim::Fixed(5)], Access::Read),
            buffer("idx", ScalarType::I32, &[Dim::Fixed(5)], Access::Read),
            f32_buffer("out", &[Dim::Fixed(5)], Access::Write),
            buffer("count", ScalarType::I32, &[Dim::Fixed(5)], Access::Write),
        ],
        body: KernelBody::Map {
            space: vec![Dim::Fixed(5)],
            stores: vec![
                Store {
                    buf: 2,
                    index: Index::Var(0),
                    value: Expr::binary(BinaryOp::Add, value, guarded),
                },
                Store {
                    buf: 3,
                    index: Index::Var(0),
                    value: Expr::binary(BinaryOp::Pow, x(), Expr::Const(2.0)),
                },
            ],
        },
    }
}

/// `out[i, j] = uniform(seed 42, flat index, step[0])` over `[batch, 5]`.
fn uniform_map() -> Kernel {
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

#[test]
fn uniform_is_ten_philox_rounds_of_i32_multiplies() {
    let text = emit_clif(&[uniform_map()]).unwrap();
    // Two products a round, each an `imul` (low word) and an `umulhi` (high word).
    assert_eq!(text.matches("= umulhi ").count(), 20, "{text}");
    assert_eq!(text.matches("= imul v").count(), 20, "{text}");
    assert!(text.contains("fcvt_to_uint_sat.i32"), "{text}");
    // The last round's key words are constants, since the seed is (CLIF prints an i32
    // constant signed).
    let [k0, k1] = crate::rng::round_keys(crate::rng::key_from_seed(42))[9];
    for k in [k0, k1] {
        let constant = format!("iconst.i32 {}", k as i32);
        assert!(text.contains(&constant), "{constant} in {text}");
    }
}

#[test]
fn bias_add_map_clif() {
    insta::assert_snapshot!(emit_clif(&[bias_add()]).unwrap());
}

#[test]
fn row_sum_reduce_clif() {
    insta::assert_snapshot!(emit_clif(&[row_sum()]).unwrap());
}

#[test]
fn contraction_emits_only_its_epilogue() {
    insta::assert_snapshot!(emit_clif(&[dense_relu()]).unwrap());
}

#[test]
fn clif_text_round_trips_through_the_reader() {
    let kernels = [
        bias_add(),
        row_sum(),
        dense_relu(),
        every_operator(),
        uniform_map(),
    ];
    let text = emit_clif(&kernels).unwrap();
    let funcs = cranelift_reader::parse_functions(&text).unwrap();
    let names: Vec<String> = funcs.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "%bias_add",
            "%row_sum",
            "%dense_relu",
            "%every_operator",
            "%uniform_map"
        ]
    );
    let reprinted: String = funcs.iter().map(|f| format!("{}\n", f.display())).collect();
    assert_eq!(reprinted, text);
}

#[test]
fn refuses_an_index_divided_by_zero() {
    let mut kernel = bias_add();
    if let KernelBody::Map { stores, .. } = &mut kernel.body {
        stores[0].value = Expr::load(1, Index::Rem(Box::new(Index::Var(1)), 0));
    }
    let e = emit_clif(&[kernel]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `bias_add`: index divided by non-positive constant 0"
    );
}

#[test]
fn refuses_an_integer_contraction_operand() {
    let mut kernel = dense_relu();
    kernel.buffers[1].dtype = ScalarType::I32;
    let e = emit_clif(&[kernel]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `dense_relu`: contraction operand `w` is not f32"
    );
}

#[test]
fn returns_validation_errors() {
    let mut kernel = row_sum();
    kernel.name = "row sum".into();
    let e = emit_clif(&[kernel]).unwrap_err();
    assert!(e.message.contains("is not an identifier"), "{e}");
}
