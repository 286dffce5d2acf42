//! Snapshots of the WGSL of tiny kernels, naga validation of every strategy and operator,
//! and the emitter's refusals.

use super::{Strategy, emit_kernel, emit_wgsl, split_modules, strategy, workgroups};
use crate::ir::{
    Access, BinaryOp, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand, ReduceOp,
    ScalarType, Store, UnaryOp,
};
use crate::test_fixtures::{
    bias_add, buffer, centered_total, dense_relu, f32_buffer, nested_softmax, row_major,
    uniform_map,
};

/// `out[i] = op_j x[i, j]` over `[4, cols]`.
fn row_reduce(name: &str, cols: u64, op: ReduceOp) -> Kernel {
    let shape = [Dim::Fixed(4), Dim::Fixed(cols)];
    Kernel {
        name: name.into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            f32_buffer("out", &[Dim::Fixed(4)], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![Dim::Fixed(4)],
            reduce: vec![Dim::Fixed(cols)],
            op,
            value: Expr::load(0, row_major(&shape)),
            out: Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::binary(BinaryOp::Mul, Expr::Acc, Expr::Const(0.5)),
            },
        },
    }
}

/// A batched contraction `out[b] = a[b] x w[b]ᵀ` with a batch of `batch` matrices.
fn batched_transposed() -> Kernel {
    let (m, n, k) = (5i64, 3i64, 7i64);
    Kernel {
        name: "batched_bt".into(),
        buffers: vec![
            f32_buffer(
                "a",
                &[Dim::Batch, Dim::Fixed(m as u64), Dim::Fixed(k as u64)],
                Access::Read,
            ),
            f32_buffer(
                "w",
                &[Dim::Batch, Dim::Fixed(n as u64), Dim::Fixed(k as u64)],
                Access::Read,
            ),
            f32_buffer(
                "out",
                &[Dim::Batch, Dim::Fixed(m as u64), Dim::Fixed(n as u64)],
                Access::Write,
            ),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![Dim::Batch],
            summed: vec![],
            m: Dim::Fixed(m as u64),
            n: Dim::Fixed(n as u64),
            k: Dim::Fixed(k as u64),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Var(0).mul(Index::Const(m * k)),
                row_stride: Index::Const(k),
                col_stride: Index::Const(1),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Var(0).mul(Index::Const(n * k)),
                row_stride: Index::Const(1),
                col_stride: Index::Const(k),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

/// A weight gradient summed over the batch: `out = sum_b a[b]ᵀ x g[b]` with `a` of
/// `[batch, t, d]` and `g` of `[batch, t, o]`.
fn summed_over_batch() -> Kernel {
    let (t, d, o) = (4i64, 5i64, 3i64);
    let fixed = |n: i64| Dim::Fixed(n as u64);
    Kernel {
        name: "summed_at_g".into(),
        buffers: vec![
            f32_buffer("a", &[Dim::Batch, fixed(t), fixed(d)], Access::Read),
            f32_buffer("g", &[Dim::Batch, fixed(t), fixed(o)], Access::Read),
            f32_buffer("out", &[fixed(d), fixed(o)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![Dim::Batch],
            m: fixed(d),
            n: fixed(o),
            k: fixed(t),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Var(0).mul(Index::Const(t * d)),
                row_stride: Index::Const(1),
                col_stride: Index::Const(d),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Var(0).mul(Index::Const(t * o)),
                row_stride: Index::Const(o),
                col_stride: Index::Const(1),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

/// A map that uses every operator, an `i32` buffer, a guarded select, non-finite
/// constants and both kinds of index division.
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
    let extremes = Expr::binary(
        BinaryOp::Max,
        Expr::Const(f64::NEG_INFINITY),
        Expr::binary(BinaryOp::Pow, x(), Expr::Const(1.5)),
    );
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
                    value: Expr::binary(
                        BinaryOp::Add,
                        Expr::binary(BinaryOp::Add, value, guarded),
                        extremes,
                    ),
                },
                Store {
                    buf: 3,
                    index: Index::Div(Box::new(Index::Var(0).add(Index::Const(2))), 2),
                    value: Expr::binary(BinaryOp::Pow, x(), Expr::Const(2.0)),
                },
            ],
        },
    }
}

#[test]
fn uniform_map_wgsl() {
    insta::assert_snapshot!(emit_kernel(&uniform_map()).unwrap());
}

#[test]
fn uniform_scales_by_exactly_two_to_the_minus_24() {
    let literal = "5.9604645e-8";
    assert!(
        emit_kernel(&uniform_map())
            .unwrap()
            .contains(&format!(") * {literal};"))
    );
    assert_eq!(literal.parse::<f32>(), Ok(2f32.powi(-24)));
}

/// The WGSL `mul_hi_lo` helper's limb arithmetic, transcribed to Rust with `u32`
/// wrapping operations, against the 64-bit product (the GPU tests compare whole draws).
#[test]
fn sixteen_bit_limbs_give_the_high_word_of_the_product() {
    fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
        let (a0, a1, b0, b1) = (a & 0xffff, a >> 16, b & 0xffff, b >> 16);
        let (cross0, cross1) = (a0 * b1, a1 * b0);
        let mid = ((a0 * b0) >> 16) + (cross0 & 0xffff) + (cross1 & 0xffff);
        let hi = a1 * b1 + (cross0 >> 16) + (cross1 >> 16) + (mid >> 16);
        (hi, a.wrapping_mul(b))
    }
    let mut x = 0x9e37_79b9u32;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        for (a, b) in [
            (x, crate::rng::PHILOX_M0),
            (crate::rng::PHILOX_M1, x),
            (x, u32::MAX),
            (u32::MAX, u32::MAX),
        ] {
            let p = u64::from(a) * u64::from(b);
            assert_eq!(
                mul_hi_lo(a, b),
                ((p >> 32) as u32, p as u32),
                "{a:#x} * {b:#x}"
            );
        }
    }
}

#[test]
fn bias_add_map_wgsl() {
    insta::assert_snapshot!(emit_kernel(&bias_add()).unwrap());
}

#[test]
fn short_row_sum_loops_in_one_invocation() {
    let kernel = row_reduce("row_sum", 8, ReduceOp::Sum);
    assert_eq!(strategy(&kernel), Strategy::ReduceLoop);
    insta::assert_snapshot!(emit_kernel(&kernel).unwrap());
}

#[test]
fn long_row_max_reduces_in_a_workgroup_tree() {
    let kernel = row_reduce("row_max", 300, ReduceOp::Max);
    assert_eq!(strategy(&kernel), Strategy::ReduceTree);
    assert_eq!(workgroups(&kernel, 1), Some(4));
    insta::assert_snapshot!(emit_kernel(&kernel).unwrap());
}

#[test]
fn contraction_tiles_and_fuses_its_epilogue() {
    insta::assert_snapshot!(emit_kernel(&dense_relu()).unwrap());
}

/// A map, a short and a long reduction and a contraction as the parts of one kernel.
fn four_parts() -> Kernel {
    Kernel::join(
        "four_parts",
        &[
            bias_add(),
            row_reduce("row_sum", 8, ReduceOp::Sum),
            row_reduce("row_max", 300, ReduceOp::Max),
            dense_relu(),
        ],
    )
}

#[test]
fn parts_share_one_dispatch_on_consecutive_workgroups() {
    let kernel = four_parts();
    assert_eq!(strategy(&kernel), Strategy::Parts);
    // Each part's own count, laid end to end: 1 + 1 + 4 + 3 at batch 33.
    assert_eq!(workgroups(&kernel, 33), Some(1 + 1 + 4 + 3));
    let text = emit_kernel(&kernel).unwrap_or_else(|e| panic!("{e}"));
    for strategy_name in [
        "part 0: map",
        "part 1: reduction, one invocation",
        "part 2: reduction, one workgroup",
        "part 3: contraction",
    ] {
        assert!(text.contains(strategy_name), "{strategy_name}:\n{text}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn nested_reductions_loop_inside_the_invocation() {
    // The row max is computed once and found again inside the row sum's loop.
    let text = emit_kernel(&nested_softmax()).unwrap();
    assert_eq!(
        text.matches("max_nan(").count(),
        2,
        "the helper and one fold: {text}"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn a_tree_reduction_hoists_its_nested_reduction_only_per_point() {
    // The row max depends on the reduced row, so it stays inside the strided loop.
    let text = emit_kernel(&centered_total()).unwrap();
    assert_eq!(strategy(&centered_total()), Strategy::ReduceTree);
    super::validate_wgsl("centered_total", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn every_strategy_and_operator_validates() {
    let kernels = [
        bias_add(),
        row_reduce("row_sum", 8, ReduceOp::Sum),
        row_reduce("row_min", 1000, ReduceOp::Min),
        dense_relu(),
        batched_transposed(),
        summed_over_batch(),
        every_operator(),
        uniform_map(),
        nested_softmax(),
        centered_total(),
    ];
    let text = emit_wgsl(&kernels).unwrap_or_else(|e| panic!("{e}"));
    let modules = split_modules(&text);
    let names: Vec<&str> = modules.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "bias_add",
            "row_sum",
            "row_min",
            "dense_relu",
            "batched_bt",
            "summed_at_g",
            "every_operator",
            "uniform_map",
            "nested_softmax",
            "centered_total"
        ]
    );
    for ((_, module), kernel) in modules.iter().zip(&kernels) {
        assert_eq!(*module, emit_kernel(kernel).unwrap());
    }
}

#[test]
fn a_batched_contraction_launches_a_workgroup_per_tile_and_matrix() {
    // 5x3 output fits one 16x16 tile; one per batch point.
    assert_eq!(workgroups(&batched_transposed(), 33), Some(33));
    assert_eq!(workgroups(&dense_relu(), 33), Some(3));
    assert_eq!(workgroups(&bias_add(), 100), Some(2));
}

#[test]
fn refuses_an_index_divided_by_zero() {
    let mut kernel = bias_add();
    if let KernelBody::Map { stores, .. } = &mut kernel.body {
        stores[0].value = Expr::load(1, Index::Rem(Box::new(Index::Var(1)), 0));
    }
    let e = emit_kernel(&kernel).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `bias_add`: index divided by non-positive constant 0"
    );
}

#[test]
fn refuses_an_index_constant_beyond_i32() {
    let mut kernel = bias_add();
    if let KernelBody::Map { stores, .. } = &mut kernel.body {
        stores[0].value = Expr::load(1, Index::Const(1 << 40));
    }
    let e = emit_kernel(&kernel).unwrap_err();
    assert!(e.message.contains("does not fit in i32"), "{e}");
}

#[test]
fn refuses_an_integer_contraction_operand() {
    let mut kernel = dense_relu();
    kernel.buffers[1].dtype = ScalarType::I32;
    let e = emit_kernel(&kernel).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `dense_relu`: contraction operand `w` is not f32"
    );
}

#[test]
fn naga_errors_name_the_kernel() {
    let e = super::validate_wgsl("broken", "fn main( {").unwrap_err();
    assert_eq!(e.kernel, "broken");
    assert!(e.message.contains("does not parse"), "{e}");
}
