//! What a kernel's point costs, in element operations: the measure a launch splits its
//! work by and compares with the work that pays for another thread.
//!
//! A point of a map that only copies costs one or two operations; a point of an LSTM cell
//! (three sigmoids, two tanh) costs a hundred. Counting points alone kept a batch-32 cell
//! (4,096 points, ~50 us) on one thread. The weights are the relative costs of the
//! inline functions the CPU emitter writes ([`crate::cpu`]): an `exp` is a range
//! reduction and a degree-6 polynomial, about sixteen multiplies and adds.

use crate::ir::{Contraction, Dim, Expr, Index, KernelBody};
use crate::scalar_op::{BinaryOp, UnaryOp};

/// Multiply-adds of a contraction's product per element operation. A large product runs
/// at about an eighth of an element operation per multiply-add (`gemm` does sixteen lanes
/// where the emitted code does four), but a product of one or a few rows is a
/// matrix-vector product bound by memory (W3's recurrent step, 1 x 512 x 128: ~4x
/// slower per multiply-add), and a weight gradient summed over time reads transposed,
/// strided operands: counted at an eighth, those stayed on one thread or split badly
/// (W3's batch-1 inference 0.40 ms against 0.27 at a half; its training step's weight
/// gradients 2.7 ms against 1.7).
const PRODUCT_MACS_PER_OP: u64 = 2;

/// What a load costs whose element moves by a cache line or more from one iteration of
/// the innermost loop to the next (a bias gradient summed over `[T, batch]` of a
/// `[T, batch, 4d]` tensor, a transpose): each one a line from beyond L1, where a
/// contiguous load shares its line with fifteen others. Measured on W3's bias gradient
/// (819k such loads in ~0.5 ms): about four element operations each.
const STRIDED_LOAD: u64 = 4;

/// Elements of `f32` in a 64-byte cache line.
const LINE: u64 = 16;

/// The element operations of one evaluation of `e` (at least one).
pub fn expr_cost(e: &Expr, batch: u64) -> u64 {
    expr_cost_along(e, batch, None)
}

/// [`expr_cost`], with loads that stride by a cache line or more along loop variable
/// `inner` (the innermost loop's) costing [`STRIDED_LOAD`].
fn expr_cost_along(e: &Expr, batch: u64, inner: Option<usize>) -> u64 {
    let cost_of = |e: &Expr| expr_cost_along(e, batch, inner);
    let cost = match e {
        Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => 0,
        Expr::Load { index, .. } => match inner {
            Some(v) if stride(index, v, batch).unsigned_abs() >= LINE => STRIDED_LOAD,
            _ => 1,
        },
        Expr::Gather { .. } => 2,
        Expr::Uniform { step, .. } => 8 + cost_of(step),
        Expr::Unary(op, x) => unary_cost(*op) + cost_of(x),
        Expr::Binary(op, a, b) => binary_cost(*op) + cost_of(a) + cost_of(b),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => 1 + cost_of(cond) + cost_of(then) + cost_of(otherwise),
        // Folded per point (the emitter hoists a fold that does not vary along the
        // innermost dimension, so this overstates a softmax's: such a map is costly
        // either way).
        Expr::Reduce { extent, value, .. } => {
            points(extent, batch).saturating_mul(1 + cost_of(value))
        }
    };
    cost.max(1)
}

/// How far `index` moves when loop variable `v` goes from 0 to 1, the others at 0 (0
/// when `index` uses more variables than any kernel nests).
fn stride(index: &Index, v: usize, batch: u64) -> i64 {
    let mut vars = [0i64; 32];
    if v >= vars.len() || index.max_var().is_some_and(|m| m >= vars.len()) {
        return 0;
    }
    let batch = batch as i64;
    let at_zero = index.eval(&vars, batch);
    vars[v] = 1;
    index.eval(&vars, batch).wrapping_sub(at_zero)
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

/// The work of a contraction's epilogue alone: a point's store and expression, at every
/// point of its output.
pub fn epilogue_cost(c: &Contraction, batch: u64) -> u64 {
    points(&c.space(), batch).saturating_mul(1 + expr_cost(&c.epilogue, batch))
}

/// The element operations of one body (not of [`KernelBody::Parts`]: sum its parts') at
/// `batch`. `table_cols` is a scatter-add's table width.
pub fn body_cost(body: &KernelBody, batch: u64, table_cols: u64) -> u64 {
    match body {
        KernelBody::Map { space, stores } => {
            let inner = space.len().checked_sub(1);
            let per_point = stores.iter().fold(0u64, |acc, s| {
                acc.saturating_add(1 + expr_cost_along(&s.value, batch, inner))
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
            // The folded dimensions are the innermost loops.
            let inner = (space.len() + reduce.len()).checked_sub(1);
            let folded =
                points(reduce, batch).saturating_mul(1 + expr_cost_along(value, batch, inner));
            points(space, batch).saturating_mul(folded.saturating_add(expr_cost(&out.value, batch)))
        }
        KernelBody::Contract(c) => {
            // Each output sums `k` products per summed index (a weight gradient over time).
            // Each term adds its own depth.
            let depth = c.terms.iter().fold(c.k.resolve(batch).max(1), |d, t| {
                d.saturating_add(t.k.resolve(batch))
            });
            let macs = points(&c.space(), batch)
                .saturating_mul(depth)
                .saturating_mul(points(&c.summed, batch));
            (macs / PRODUCT_MACS_PER_OP).saturating_add(epilogue_cost(c, batch))
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
    use crate::ir::{MatrixOperand, Store};

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
    fn a_fold_striding_across_lines_costs_more_than_one_along_a_row() {
        let sum_of = |index: Index| KernelBody::Reduce {
            space: vec![Dim::Fixed(512)],
            reduce: vec![Dim::Fixed(50), Dim::Batch],
            op: crate::scalar_op::ReduceOp::Sum,
            value: Expr::load(0, index),
            out: Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::Acc,
            },
        };
        // A bias gradient: element (t, b, j) of [50, batch, 768], summed over t and b.
        let strided = Index::row_major(
            &[Index::Var(1), Index::Var(2), Index::Var(0)],
            &[Dim::Fixed(50), Dim::Batch, Dim::Fixed(768)],
        );
        // The same sum over [512, 50, batch], the folded dimensions innermost.
        let along_row = Index::row_major(
            &[Index::Var(0), Index::Var(1), Index::Var(2)],
            &[Dim::Fixed(512), Dim::Fixed(50), Dim::Batch],
        );
        assert_eq!(
            body_cost(&sum_of(along_row), 32, 0),
            512 * (50 * 32 * 2 + 1)
        );
        assert_eq!(
            body_cost(&sum_of(strided), 32, 0),
            512 * (50 * 32 * (1 + STRIDED_LOAD) + 1)
        );
    }

    #[test]
    fn a_product_summed_over_time_costs_every_step() {
        let product = |summed: Vec<Dim>| {
            KernelBody::Contract(Contraction {
                batch: vec![],
                summed,
                m: Dim::Fixed(512),
                n: Dim::Fixed(128),
                k: Dim::Batch,
                a: MatrixOperand::strided(0, Index::Const(0), Index::Const(1), Index::Const(512)),
                b: MatrixOperand::strided(1, Index::Const(0), Index::Const(128), Index::Const(1)),
                out: 2,
                epilogue: Expr::Acc,
                terms: Vec::new(),
            })
        };
        // W3's recurrent weight gradient: 50 steps of a `512 x 128` product `batch` deep.
        // Counted as one step, the launch gave its bias gradient's sum most of the work
        // and one thread five of the product's eight row blocks.
        let one_step = body_cost(&product(vec![]), 32, 0);
        let over_time = body_cost(&product(vec![Dim::Fixed(50)]), 32, 0);
        let epilogue = 512 * 128 * 2;
        assert_eq!(one_step, 512 * 128 * 32 / PRODUCT_MACS_PER_OP + epilogue);
        assert_eq!(
            over_time,
            50 * 512 * 128 * 32 / PRODUCT_MACS_PER_OP + epilogue
        );
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
