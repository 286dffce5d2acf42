//! Loop-invariant subexpressions, which both emitters compute once, outside the loops
//! they do not depend on, instead of once per point.
//!
//! A subexpression at a position with `scope` loop variables in scope depends on some of
//! them; its *level* is one more than the largest variable it depends on (0 for none).
//! Nothing it reads changes inside the loops of variables `level..`, so an emitter with
//! only variables `0..level` bound may compute it before entering them. A nested
//! [`Expr::Reduce`] over a row inside a map over `[batch, classes]` is then computed once
//! per row, not once per element: O(classes) per row rather than O(classes²).
//!
//! One subexpression may appear at positions with different numbers of variables in
//! scope (a row max inside a map, and again inside the row sum nested in that map), and
//! its own nested reductions number their variables from its position's scope. Its
//! canonical form ([`Invariant::expr`]) numbers them from its level instead, so both
//! occurrences are one [`Invariant`]; an emitter computing it with `depth` variables
//! bound renumbers them from `depth` ([`Invariant::at_depth`]).
//!
//! # What is never hoisted
//! - Constants (nothing to save) and anything reading `acc`, which exists only at the
//!   point.
//! - Loads from a buffer the kernel writes: a store at one point could change what a
//!   later point reads, so such loads stay where the evaluator ([`crate::eval`]) does them.
//! - Anything in the arm of a `Select`: an arm may guard a load that is out of range
//!   where it is not taken.
//! - Anything out of a loop that may run no iteration (an extent of 0, or the batch: a
//!   kernel may be launched with none): the hoisted code would read memory that the
//!   loop never reads.

use crate::ir::{Dim, Expr, Index};

/// A subexpression that some loops do not change, in canonical form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Invariant {
    /// The subexpression with its nested reductions' variables numbered from `level`.
    pub expr: Expr,
    /// One more than the largest enclosing variable it depends on.
    pub level: usize,
}

impl Invariant {
    /// `e`, at a position with `scope` variables in scope, as an invariant: `None` when it
    /// depends on the innermost variable in scope or may not be hoisted (see the module
    /// docs). `readable(slot)` says whether loads from `slot` may be hoisted.
    pub fn of(e: &Expr, scope: usize, readable: &impl Fn(usize) -> bool) -> Option<Invariant> {
        let level = level(e, scope);
        if level >= scope || matches!(e, Expr::Const(_)) || !hoistable(e, readable) {
            return None;
        }
        Some(Invariant {
            expr: renumbered(e, &|v| if v >= scope { v - scope + level } else { v }),
            level,
        })
    }

    /// A nested reduction at a position with `scope` variables in scope, in canonical form
    /// even when it depends on the innermost of them: no loop can hoist it, but a second
    /// occurrence at the same point (a row sum used twice) is the same value. `None` when
    /// it may not be hoisted at all (see the module docs).
    pub fn at_point(
        e: &Expr,
        scope: usize,
        readable: &impl Fn(usize) -> bool,
    ) -> Option<Invariant> {
        if !matches!(e, Expr::Reduce { .. }) || !hoistable(e, readable) {
            return None;
        }
        let level = level(e, scope).min(scope);
        Some(Invariant {
            expr: renumbered(e, &|v| if v >= scope { v - scope + level } else { v }),
            level,
        })
    }

    /// The expression to compute with variables `0..depth` bound (`depth >= level`).
    pub fn at_depth(&self, depth: usize) -> Expr {
        let level = self.level;
        renumbered(&self.expr, &|v| {
            if v >= level { v - level + depth } else { v }
        })
    }
}

/// Appends to `out` every invariant subexpression of `e` of level at most `max_level`,
/// each once, inner ones before the expressions that contain them (so computing them in
/// order finds each one's parts already computed). `e` is at a position whose variables
/// in scope run over `extents`.
pub(crate) fn collect(
    e: &Expr,
    extents: &[Dim],
    max_level: usize,
    readable: &impl Fn(usize) -> bool,
    out: &mut Vec<Invariant>,
) {
    let inner = |x: &Expr, out: &mut Vec<Invariant>| collect(x, extents, max_level, readable, out);
    match e {
        Expr::Load { .. }
        | Expr::Gather { .. }
        | Expr::Const(_)
        | Expr::Acc
        | Expr::IndexValue(_) => {}
        Expr::Unary(_, x) | Expr::Uniform { step: x, .. } => inner(x, out),
        Expr::Binary(_, a, b) => {
            inner(a, out);
            inner(b, out);
        }
        Expr::Select { cond, .. } => inner(cond, out),
        Expr::Reduce { extent, value, .. } => {
            let nested = [extents, extent].concat();
            collect(value, &nested, max_level, readable, out);
        }
    }
    if let Some(inv) = Invariant::of(e, extents.len(), readable)
        && inv.level <= max_level
        && extents[inv.level..].iter().all(|d| never_empty(*d))
        && !out.contains(&inv)
    {
        out.push(inv);
    }
}

/// The invariants of the value of a nested reduction over `extent` at a position with
/// `depth` variables bound: those of level up to `depth` to compute before its loops, the
/// others at the start of the loop of their level's variable. The enclosing loops are
/// already running, so only the nested ones count as loops that may not run.
pub(crate) fn nested_invariants(
    value: &Expr,
    depth: usize,
    extent: &[Dim],
    readable: &impl Fn(usize) -> bool,
) -> Vec<Invariant> {
    let extents = [vec![Dim::Fixed(1); depth], extent.to_vec()].concat();
    let mut out = Vec::new();
    collect(value, &extents, extents.len(), readable, &mut out);
    out
}

/// Whether a loop over `d` always runs at least once.
fn never_empty(d: Dim) -> bool {
    matches!(d, Dim::Fixed(n) if n > 0)
}

/// Whether `e` reads neither `acc` nor a buffer that `readable` refuses.
fn hoistable(e: &Expr, readable: &impl Fn(usize) -> bool) -> bool {
    let mut ok = true;
    e.visit_loads(&mut |slot, _| ok &= readable(slot));
    ok && !reads_acc(e)
}

fn reads_acc(e: &Expr) -> bool {
    match e {
        Expr::Acc => true,
        Expr::Load { .. } | Expr::Gather { .. } | Expr::Const(_) | Expr::IndexValue(_) => false,
        Expr::Unary(_, x) | Expr::Uniform { step: x, .. } | Expr::Reduce { value: x, .. } => {
            reads_acc(x)
        }
        Expr::Binary(_, a, b) => reads_acc(a) || reads_acc(b),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => reads_acc(cond) || reads_acc(then) || reads_acc(otherwise),
    }
}

/// One more than the largest variable below `scope` that `e` uses (0 for none); the
/// variables from `scope` on are those of `e`'s own nested reductions.
fn level(e: &Expr, scope: usize) -> usize {
    let mut level = 0;
    visit_indices(e, &mut |ix| level = level.max(index_level(ix, scope)));
    level
}

fn index_level(ix: &Index, scope: usize) -> usize {
    match ix {
        Index::Var(v) if *v < scope => v + 1,
        Index::Var(_) | Index::Const(_) | Index::Batch => 0,
        Index::Add(a, b) | Index::Mul(a, b) => index_level(a, scope).max(index_level(b, scope)),
        Index::Div(a, _) | Index::Rem(a, _) => index_level(a, scope),
    }
}

/// Calls `f` on every index in `e`: addresses and indices used as values alike.
fn visit_indices(e: &Expr, f: &mut impl FnMut(&Index)) {
    match e {
        Expr::Load { index, .. } | Expr::IndexValue(index) => f(index),
        Expr::Gather { id_index, col, .. } => {
            f(id_index);
            f(col);
        }
        Expr::Const(_) | Expr::Acc => {}
        Expr::Uniform { index, step, .. } => {
            f(index);
            visit_indices(step, f);
        }
        Expr::Unary(_, x) | Expr::Reduce { value: x, .. } => visit_indices(x, f),
        Expr::Binary(_, a, b) => {
            visit_indices(a, f);
            visit_indices(b, f);
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            visit_indices(cond, f);
            visit_indices(then, f);
            visit_indices(otherwise, f);
        }
    }
}

/// `e` with every variable `v` renamed `rename(v)`.
fn renumbered(e: &Expr, rename: &impl Fn(usize) -> usize) -> Expr {
    e.map_indices(&|ix| renumbered_index(ix, rename))
}

fn renumbered_index(ix: &Index, rename: &impl Fn(usize) -> usize) -> Index {
    ix.map_vars(&|v| Index::Var(rename(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, ReduceOp, UnaryOp};

    fn row_max(row: Index, bound: usize) -> Expr {
        Expr::Reduce {
            op: ReduceOp::Max,
            extent: vec![Dim::Fixed(10)],
            value: Box::new(Expr::load(
                0,
                row.mul(Index::Const(10)).add(Index::Var(bound)),
            )),
        }
    }

    #[test]
    fn a_row_reduction_inside_a_map_is_invariant_below_the_row_loop() {
        // In a map over [batch, 10] (2 variables), max_j x[i0, j] binds j as i2.
        let inv = Invariant::of(&row_max(Index::Var(0), 2), 2, &|_| true).unwrap();
        assert_eq!(inv.level, 1);
        assert_eq!(inv.expr, row_max(Index::Var(0), 1));
        assert_eq!(inv.at_depth(2), row_max(Index::Var(0), 2));
    }

    #[test]
    fn one_invariant_at_positions_of_different_scopes_has_one_canonical_form() {
        // The row max in the map (scope 2) and inside the row sum nested in it (scope 3).
        let a = Invariant::of(&row_max(Index::Var(0), 2), 2, &|_| true).unwrap();
        let b = Invariant::of(&row_max(Index::Var(0), 3), 3, &|_| true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn collects_inner_invariants_first_and_each_once() {
        // sum_j exp(x[i0, j] - max_k x[i0, k]) / max_k x[i0, k] at scope 2.
        let sum = Expr::Reduce {
            op: ReduceOp::Sum,
            extent: vec![Dim::Fixed(10)],
            value: Box::new(Expr::unary(
                UnaryOp::Exp,
                Expr::binary(
                    BinaryOp::Sub,
                    Expr::load(0, Index::Var(0).mul(Index::Const(10)).add(Index::Var(2))),
                    row_max(Index::Var(0), 3),
                ),
            )),
        };
        let e = Expr::binary(BinaryOp::Div, sum, row_max(Index::Var(0), 2));
        let mut out = Vec::new();
        collect(&e, &[Dim::Fixed(4), Dim::Fixed(10)], 2, &|_| true, &mut out);
        let levels: Vec<usize> = out.iter().map(|i| i.level).collect();
        assert_eq!(levels, [1, 1, 1], "{out:?}");
        assert_eq!(out[0].expr, row_max(Index::Var(0), 1));
        assert!(matches!(
            out[1].expr,
            Expr::Reduce {
                op: ReduceOp::Sum,
                ..
            }
        ));
    }

    #[test]
    fn does_not_hoist_loads_of_written_buffers_acc_or_select_arms() {
        let load = Expr::load(1, Index::Var(0));
        assert!(Invariant::of(&load, 2, &|slot| slot != 1).is_none());
        let with_acc = Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(0, Index::Var(0)));
        assert!(Invariant::of(&with_acc, 2, &|_| true).is_none());
        let guarded = Expr::Select {
            cond: Box::new(Expr::IndexValue(Index::Var(1))),
            then: Box::new(Expr::load(0, Index::Var(0))),
            otherwise: Box::new(Expr::Const(0.0)),
        };
        let mut out = Vec::new();
        collect(
            &guarded,
            &[Dim::Fixed(4), Dim::Fixed(10)],
            2,
            &|_| true,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn does_not_hoist_out_of_a_loop_that_may_not_run() {
        // x[i0] in a map over [4, batch]: the batch may be 0.
        let load = Expr::load(0, Index::Var(0));
        let mut out = Vec::new();
        collect(&load, &[Dim::Fixed(4), Dim::Batch], 2, &|_| true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        collect(&load, &[Dim::Batch, Dim::Fixed(4)], 2, &|_| true, &mut out);
        assert_eq!(out.len(), 1);
    }
}
