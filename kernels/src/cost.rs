//! What a kernel's point costs, in element operations: the measure a launch splits its
//! work by and compares with the work that pays for another thread.
//!
//! A point of a map that only copies costs one or two operations; a point of an LSTM cell
//! (three sigmoids, two tanh) costs a hundred. Counting points alone kept a batch-32 cell
//! (4,096 points, ~50 us) on one thread. The weights are the relative costs of the
//! inline functions the CPU emitter writes ([`crate::cpu`]): an `exp` is a range
//! reduction and a degree-6 polynomial, about sixteen multiplies and adds.

use crate::ir::{Dim, Expr, KernelBody};
use crate::scalar_op::{BinaryOp, UnaryOp};

/// What one multiply-add of a contraction's product costs: `gemm`'s micro-kernels do
/// sixteen lanes at a time where the emitted code does four, and keep operands in
/// registers, so a product's point is about an eighth of an element operation.
const PRODUCT_MACS_PER_OP: u64 = 8;

/// The element operations of one evaluation of `e` (at least one).
pub fn expr_cost(e: &Expr, batch: u64) -> u64 {
    let cost = match e {
        Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => 0,
        Expr::Load { .. } => 1,
        Expr::Gather { .. } => 2,
        Expr::Uniform { step, .. } => 8 + expr_cost(step, batch),
        Expr::Unary(op, x) => unary_cost(*op) + expr_cost(x, batch),
        Expr::Binary(op, a, b) => binary_cost(*op) + expr_cost(a, batch) + expr_cost(b, batch),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => 1 + expr_cost(cond, batch) + expr_cost(then, batch) + expr_cost(otherwise, batch),
        // Folded per point (the emitter hoists a fold that does not vary along the
        // innermost dimension, so this overstates a softmax's: such a map is costly
        // either way).
        Expr::Reduce { extent, value, .. } => {
            points(extent, batch).saturating_mul(1 + expr_cost(value, batch))
        }
    };
    cost.max(1)
}

fn unary_cost(op: UnaryOp) -> u64 {
    match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => 1,
        UnaryOp::Sqrt | UnaryOp::Recip => 4,
        UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Sigmoid => 16,
        UnaryOp::Erf => 24,
    }
}

fn binary_cost(op: BinaryOp) -> u64 {
    match op {
        BinaryOp::Div => 4,
        BinaryOp::Pow => 32,
        _ => 1,
    }
}

/// The points of `dims` at `batch`.
pub fn points(dims: &[Dim], batch: u64) -> u64 {
    dims.iter()
        .fold(1u64, |acc, d| acc.saturating_mul(d.resolve(batch)))
}

/// The element operations of one body (not of [`KernelBody::Parts`]: sum its parts') at
/// `batch`. `table_cols` is a scatter-add's table width.
pub fn body_cost(body: &KernelBody, batch: u64, table_cols: u64) -> u64 {
    match body {
        KernelBody::Map { space, stores } => {
            let per_point = stores.iter().fold(0u64, |acc, s| {
                acc.saturating_add(1 + expr_cost(&s.value, batch))
            });
            points(space, batch).saturating_mul(per_point)
        }
        KernelBody::Reduce {
            space,
            reduce,
            value,
            out,
            ..
        } => {
            let folded = points(reduce, batch).saturating_mul(1 + expr_cost(value, batch));
            points(space, batch).saturating_mul(folded.saturating_add(expr_cost(&out.value, batch)))
        }
        KernelBody::Contract(c) => {
            let space = c.space();
            let macs = points(&space, batch).saturating_mul(c.k.resolve(batch).max(1));
            let epilogue = points(&space, batch).saturating_mul(1 + expr_cost(&c.epilogue, batch));
            (macs / PRODUCT_MACS_PER_OP).saturating_add(epilogue)
        }
        KernelBody::ScatterAdd(s) => points(&s.over, batch)
            .saturating_mul(table_cols)
            .saturating_mul(2 + expr_cost(&s.value, batch)),
        KernelBody::Parts(parts) => parts.iter().fold(0u64, |acc, p| {
            acc.saturating_add(body_cost(p, batch, table_cols))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Index, Store};

    fn map(value: Expr, rows: u64) -> KernelBody {
        KernelBody::Map {
            space: vec![Dim::Batch, Dim::Fixed(rows)],
            stores: vec![Store {
                buf: 1,
                index: Index::Var(0),
                value,
            }],
        }
    }

    #[test]
    fn a_transcendental_point_costs_more_than_a_copy() {
        let x = || Expr::load(0, Index::Var(0));
        let copy = body_cost(&map(x(), 128), 32, 0);
        let cell = body_cost(
            &map(
                Expr::binary(
                    BinaryOp::Mul,
                    Expr::unary(UnaryOp::Sigmoid, x()),
                    Expr::unary(UnaryOp::Tanh, x()),
                ),
                128,
            ),
            32,
            0,
        );
        assert_eq!(copy, 32 * 128 * 2);
        assert_eq!(cell, 32 * 128 * (1 + 1 + 16 + 1 + 16 + 1));
    }

    #[test]
    fn a_nested_fold_costs_its_points() {
        let fold = Expr::Reduce {
            op: crate::scalar_op::ReduceOp::Sum,
            extent: vec![Dim::Fixed(64)],
            value: Box::new(Expr::load(0, Index::Var(1))),
        };
        assert_eq!(expr_cost(&fold, 1), 64 * 2);
        // At batch 0 nothing is folded, but a point still costs something.
        assert_eq!(expr_cost(&Expr::Const(1.0), 0), 1);
    }
}
