//! Snapshots of the CLIF of tiny kernels, its round trip through the reader, and the
//! emitter's refusals.

use super::{Features, emit_clif, emit_clif_for};
use crate::ir::{
    Access, BinaryOp, Dim, Expr, Index, Kernel, KernelBody, ReduceOp, ScalarType, Store, UnaryOp,
};
use crate::test_fixtures::{
    bias_add, buffer, dense_relu, f32_buffer, nested_softmax, row_major, uniform_map,
};

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
        UnaryOp::Erf,
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

/// `out[i, j] = relu(x[i, j] + bias[j])` over `[batch, 6]`: wide enough for vectors.
fn bias_relu_wide() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(6)];
    Kernel {
        name: "bias_relu_wide".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("bias", &[Dim::Fixed(6)], Access::Read),
            f32_buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 2,
                index: row_major(&shape),
                value: Expr::unary(
                    UnaryOp::Relu,
                    Expr::binary(
                        BinaryOp::Add,
                        Expr::load(0, row_major(&shape)),
                        Expr::load(1, Index::Var(1)),
                    ),
                ),
            }],
        },
    }
}

#[test]
fn a_wide_map_runs_four_points_at_a_time_then_the_rest() {
    // The row's first 4 points in one f32x4 iteration (loads, add, max, store), the last
    // 2 in the scalar loop after it.
    insta::assert_snapshot!(emit_clif(&[bias_relu_wide()]).unwrap());
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
fn a_row_invariant_nested_reduction_is_computed_once_per_row() {
    // The row max appears twice (in the map and inside the row sum) and the sum once; each
    // is hoisted to the row loop and computed once there, so the function has one fold of
    // each, and the row loop's body computes both before its inner loop over the row.
    let text = emit_clif(&[nested_softmax()]).unwrap();
    // Each fold runs four points of the row at a time in lanes, then the row's rest one
    // at a time, and combines its lanes once: one combination of four `f32` lanes (the
    // max) and one of two `f64x2` halves (the sum) in the whole function.
    assert_eq!(text.matches(" = extractlane.f32x4 ").count(), 4, "{text}");
    assert_eq!(text.matches(" = extractlane.f64x2 ").count(), 4, "{text}");
    assert!(text.contains("load.f32x4"), "{text}");
    assert_eq!(text.matches(" = fdemote.f32 ").count(), 1, "{text}");
    let first_store = text.find("store ").unwrap();
    assert!(
        text.find(" = fdemote.f32 ").unwrap() < first_store,
        "{text}"
    );
}

#[test]
fn a_nested_reduction_used_twice_at_one_point_is_folded_once() {
    // sum over rows i of (S(i) + log S(i)), S(i) = sum_j x[i, j]: S depends on the row,
    // the innermost bound variable, so no loop can hoist it, but its second use at the
    // same point reuses the first. Two f64 folds in all: the outer sum and S.
    let x = || Expr::load(0, Index::Var(0).mul(Index::Const(10)).add(Index::Var(1)));
    let row_sum = || Expr::Reduce {
        op: ReduceOp::Sum,
        extent: vec![Dim::Fixed(10)],
        value: Box::new(x()),
    };
    let kernel = Kernel {
        name: "twice".into(),
        buffers: vec![
            f32_buffer("x", &[Dim::Fixed(4), Dim::Fixed(10)], Access::Read),
            f32_buffer("out", &[], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![],
            reduce: vec![Dim::Fixed(4)],
            op: ReduceOp::Sum,
            value: Expr::binary(
                BinaryOp::Add,
                row_sum(),
                Expr::unary(UnaryOp::Log, row_sum()),
            ),
            out: Store {
                buf: 1,
                index: Index::Const(0),
                value: Expr::Acc,
            },
        },
    };
    let text = emit_clif(&[kernel]).unwrap();
    assert_eq!(text.matches(" = fdemote.f32 ").count(), 2, "{text}");
}

#[test]
fn clif_text_round_trips_through_the_reader() {
    let kernels = [
        bias_add(),
        bias_relu_wide(),
        row_sum(),
        dense_relu(),
        every_operator(),
        uniform_map(),
        nested_softmax(),
    ];
    let text = emit_clif(&kernels).unwrap();
    let funcs = cranelift_reader::parse_functions(&text).unwrap();
    let names: Vec<String> = funcs.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "%bias_add",
            "%bias_relu_wide",
            "%row_sum",
            "%dense_relu",
            "%every_operator",
            "%uniform_map",
            "%nested_softmax"
        ]
    );
    let reprinted: String = funcs.iter().map(|f| format!("{}\n", f.display())).collect();
    assert_eq!(reprinted, text);
}

#[test]
fn fused_multiply_adds_only_for_a_target_with_fma() {
    let baseline = emit_clif(&[every_operator()]).unwrap();
    assert!(!baseline.contains(" fma "), "{baseline}");
    let fused = emit_clif_for(&[every_operator()], Features { fma: true }).unwrap();
    // `exp`'s rounding and reduction, and every polynomial step of the functions.
    let count = fused.matches(" fma ").count();
    assert!(count >= 20, "{count} fused multiply-adds in:\n{fused}");
    // The rest is the same code, one instruction fewer per fused pair.
    assert!(fused.lines().count() < baseline.lines().count());
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

/// `out[i0, i1] = x[i0, i1]` and `first[i0] = x[i0, i1]` over `[batch, 128]`, or only the
/// former: the second store does not move with `i1`.
fn copy_rows(with_first: bool) -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(128)];
    let mut stores = vec![Store {
        buf: 1,
        index: row_major(&shape),
        value: Expr::load(0, row_major(&shape)),
    }];
    if with_first {
        stores.push(Store {
            buf: 2,
            index: Index::Var(0),
            value: Expr::load(0, row_major(&shape)),
        });
    }
    Kernel {
        name: "copy_rows".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("out", &shape, Access::Write),
            f32_buffer("first", &[Dim::Batch], Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores,
        },
    }
}

#[test]
fn rows_are_chunks_only_where_every_store_moves_with_the_inner_coordinate() {
    use super::{Rows, row_count, rows_of};
    let chunked = copy_rows(false);
    assert_eq!(rows_of(&chunked.body), Rows::Chunks);
    assert_eq!(row_count(&chunked.body, 3), 6);
    // Two chunks of one row would both store `first[i0]`.
    let shared = copy_rows(true);
    assert_eq!(rows_of(&shared.body), Rows::Leading);
    assert_eq!(row_count(&shared.body, 3), 3);
    // Reductions keep their rows.
    assert_eq!(rows_of(&row_sum().body), Rows::Leading);
}
