//! Index arithmetic without a division per point: what im2col, col2im, pooling windows
//! and transposes of flattened axes need (`p / OW`, `(q / kw) % kh`, `(y + pad) % H`).
//!
//! Two rewrites, both exact for every value of the loop variables:
//!
//! - **Range folding** ([`simplify_kernel`]): a loop variable lies in `0..extent`, so an
//!   index built from them has a known range. A division whose operand stays within one
//!   multiple of the divisor is a constant (`i2 / 25` for `i2 < 25` is 0), and the
//!   remainder is the operand minus that multiple; dividing by 1 is the operand itself.
//! - **Quotient/remainder counters** ([`plan_counters`]): when a division's operand moves
//!   by a step the loop can predict (`a` for `a * i + b`, or 0 or 1 for the quotient of an
//!   inner counter), the loop over `i` keeps `q = x / d` and `r = x % d` as loop-carried
//!   values: one division when the loop starts, then per iteration `r += step % d`,
//!   `q += step / d`, and one compare-and-subtract when `r` reaches `d`. This is the
//!   classic strength reduction of induction variables (Cocke & Kennedy 1977; the
//!   "div/mod elimination" of Halide and TVM's index simplifiers does the same by
//!   splitting loops). `(q / kw) % kh` becomes two counters, the second stepping by the
//!   first's carry.
//!
//! Divisions by powers of two stay shifts and masks (one instruction) unless a counter
//! needs their step. Anything else (a step that may be negative, or large and not
//! constant, or a product of two variables) keeps its division.

use crate::ir::{Dim, Expr, Index, Kernel, KernelBody};

/// The inclusive range of a loop variable, or `None` for the batch (unbounded).
type VarRange = Option<(i64, i64)>;

/// `kernel` with its indices range-folded (see the module docs).
pub(super) fn simplify_kernel(kernel: &Kernel) -> Kernel {
    let mut kernel = kernel.clone();
    let ranges = |dims: &[Dim]| -> Vec<VarRange> { dims.iter().map(|d| dim_range(*d)).collect() };
    match &mut kernel.body {
        KernelBody::Map { space, stores } => {
            let mut vars = ranges(space);
            for s in stores {
                s.index = simplify(&s.index, &vars);
                simplify_expr(&mut s.value, &mut vars);
            }
        }
        KernelBody::Reduce {
            space,
            reduce,
            value,
            out,
            ..
        } => {
            let mut vars = ranges(space);
            out.index = simplify(&out.index, &vars);
            simplify_expr(&mut out.value, &mut vars);
            vars.extend(ranges(reduce));
            simplify_expr(value, &mut vars);
        }
        KernelBody::Contract(c) => {
            let mut vars = ranges(&c.space());
            simplify_expr(&mut c.epilogue, &mut vars);
        }
        KernelBody::ScatterAdd(s) => {
            let cols = kernel_cols(&kernel.buffers, s.out);
            let mut vars = ranges(&s.value_space(cols));
            s.id_index = simplify(&s.id_index, &vars);
            simplify_expr(&mut s.value, &mut vars);
        }
        // Emitted one function per part: each part is simplified on its own.
        KernelBody::Parts(_) => {}
    }
    kernel
}

/// The columns of a scatter-add's table (validation made it a fixed `[rows, cols]`).
fn kernel_cols(buffers: &[crate::ir::BufferDecl], slot: usize) -> u64 {
    match buffers.get(slot).map(|b| &b.shape[..]) {
        Some([_, Dim::Fixed(cols)]) => *cols,
        _ => 0,
    }
}

fn dim_range(d: Dim) -> VarRange {
    match d {
        // An empty extent runs no point: any range will do.
        Dim::Fixed(n) => Some((0, (n as i64 - 1).max(0))),
        Dim::Batch => None,
    }
}

fn simplify_expr(e: &mut Expr, vars: &mut Vec<VarRange>) {
    match e {
        Expr::Load { index, .. } | Expr::IndexValue(index) => *index = simplify(index, vars),
        Expr::Gather { id_index, col, .. } => {
            *id_index = simplify(id_index, vars);
            *col = simplify(col, vars);
        }
        Expr::Uniform { index, step, .. } => {
            *index = simplify(index, vars);
            simplify_expr(step, vars);
        }
        Expr::Const(_) | Expr::Acc => {}
        Expr::Unary(_, x) => simplify_expr(x, vars),
        Expr::Binary(_, a, b) => {
            simplify_expr(a, vars);
            simplify_expr(b, vars);
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            simplify_expr(cond, vars);
            simplify_expr(then, vars);
            simplify_expr(otherwise, vars);
        }
        Expr::Reduce { extent, value, .. } => {
            let scope = vars.len();
            vars.extend(extent.iter().map(|d| dim_range(*d)));
            simplify_expr(value, vars);
            vars.truncate(scope);
        }
    }
}

/// `ix` with every division whose operand's range lies within one multiple of the
/// divisor folded, and divisions by 1 removed.
pub(super) fn simplify(ix: &Index, vars: &[VarRange]) -> Index {
    match ix {
        Index::Var(_) | Index::Const(_) | Index::Batch => ix.clone(),
        Index::Add(a, b) => simplify(a, vars).add(simplify(b, vars)),
        Index::Mul(a, b) => simplify(a, vars).mul(simplify(b, vars)),
        Index::Div(a, d) | Index::Rem(a, d) => {
            let a = simplify(a, vars);
            let is_div = matches!(ix, Index::Div(..));
            if *d == 1 {
                return if is_div { a } else { Index::Const(0) };
            }
            let period = range(&a, vars)
                .map(|(lo, hi)| (lo.div_euclid(*d), hi.div_euclid(*d)))
                .filter(|(q_lo, q_hi)| q_lo == q_hi && *d > 0);
            match (period, is_div) {
                (Some((q, _)), true) => Index::Const(q),
                (Some((q, _)), false) => a.add(Index::Const(-q * d)),
                (None, true) => Index::Div(Box::new(a), *d),
                (None, false) => Index::Rem(Box::new(a), *d),
            }
        }
    }
}

/// The inclusive range of `ix` over the variables' ranges; `None` if unbounded or if the
/// bounds overflow.
fn range(ix: &Index, vars: &[VarRange]) -> Option<(i64, i64)> {
    match ix {
        Index::Var(v) => vars.get(*v).copied().flatten(),
        Index::Const(c) => Some((*c, *c)),
        Index::Batch => None,
        Index::Add(a, b) => {
            let ((a0, a1), (b0, b1)) = (range(a, vars)?, range(b, vars)?);
            Some((a0.checked_add(b0)?, a1.checked_add(b1)?))
        }
        Index::Mul(a, b) => {
            let ((a0, a1), (b0, b1)) = (range(a, vars)?, range(b, vars)?);
            let corners = [
                a0.checked_mul(b0)?,
                a0.checked_mul(b1)?,
                a1.checked_mul(b0)?,
                a1.checked_mul(b1)?,
            ];
            Some((*corners.iter().min()?, *corners.iter().max()?))
        }
        Index::Div(a, d) if *d > 0 => {
            let (lo, hi) = range(a, vars)?;
            Some((lo.div_euclid(*d), hi.div_euclid(*d)))
        }
        Index::Rem(_, d) if *d > 0 => Some((0, d - 1)),
        Index::Div(..) | Index::Rem(..) => None,
    }
}

/// Every distinct division or remainder inside `e`'s indices (nested reductions
/// included), inner ones before the divisions that contain them.
pub(super) fn divisions_in(exprs: &[&Expr], indices: &[&Index]) -> Vec<Index> {
    let mut out = Vec::new();
    let mut indices: Vec<&Index> = indices.to_vec();
    Expr::indices_of(exprs.to_vec(), &mut indices);
    for ix in indices {
        collect_divisions(ix, &mut out);
    }
    out
}

fn collect_divisions(ix: &Index, out: &mut Vec<Index>) {
    match ix {
        Index::Var(_) | Index::Const(_) | Index::Batch => {}
        Index::Add(a, b) | Index::Mul(a, b) => {
            collect_divisions(a, out);
            collect_divisions(b, out);
        }
        Index::Div(a, _) | Index::Rem(a, _) => {
            collect_divisions(a, out);
            if !out.contains(ix) {
                out.push(ix.clone());
            }
        }
    }
}

/// One quotient/remainder pair a loop keeps: `q = operand / divisor`,
/// `r = operand % divisor` (floor semantics), stepped once per iteration.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Counter {
    pub operand: Index,
    pub divisor: i64,
    pub step: Step,
}

impl Counter {
    /// The index expressions whose value this counter holds.
    pub fn quotient(&self) -> Index {
        Index::Div(Box::new(self.operand.clone()), self.divisor)
    }

    pub fn remainder(&self) -> Index {
        Index::Rem(Box::new(self.operand.clone()), self.divisor)
    }

    /// The range of the quotient's and the remainder's change per iteration.
    fn deltas(&self) -> [(i64, i64); 2] {
        let d = self.divisor;
        match self.step {
            Step::Const(c) if c % d == 0 => [(c / d, c / d), (0, 0)],
            Step::Const(c) => [(c / d, c / d + 1), (-(d - 1), d - 1)],
            Step::Bounded { .. } => [(0, 1), (-(d - 1), d - 1)],
        }
    }
}

/// How a counter's operand changes from one iteration to the next.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Step {
    /// By this constant, never negative.
    Const(i64),
    /// By `constant + sum(coef * change of counter's part)`, always in `0..divisor`:
    /// the operand contains earlier counters of the same loop.
    Bounded { constant: i64, terms: Vec<StepTerm> },
}

/// `coef` times the change of one part of an earlier counter (by position in the plan).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct StepTerm {
    pub coef: i64,
    pub counter: usize,
    pub part: Part,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Quotient,
    Remainder,
}

/// The most counters one loop keeps: each is two loop-carried registers.
const MAX_COUNTERS: usize = 12;

/// The counters the loop over variable `var` keeps for `divisions` (as from
/// [`divisions_in`]), dependencies first: one per division whose operand depends on `var`
/// and no deeper variable, by a divisor that is not a power of two, and whose step the
/// loop can predict; plus the counters those steps read.
pub(super) fn plan_counters(divisions: &[Index], var: usize) -> Vec<Counter> {
    let mut plan = Vec::new();
    for ix in divisions {
        let (Index::Div(a, d) | Index::Rem(a, d)) = ix else {
            continue;
        };
        if *d <= 1 || d.count_ones() == 1 || max_var(a) != Some(var) {
            continue;
        }
        let mut trial = plan.clone();
        if add_counter(a, *d, var, &mut trial) && trial.len() <= MAX_COUNTERS {
            plan = trial;
        }
    }
    plan
}

/// Adds the counter of `operand / d` (and those its step needs) to `plan`; false if its
/// step cannot be predicted.
fn add_counter(operand: &Index, d: i64, var: usize, plan: &mut Vec<Counter>) -> bool {
    if plan.iter().any(|c| c.divisor == d && c.operand == *operand) {
        return true;
    }
    let Some(delta) = linear_step(operand, var) else {
        return false;
    };
    let mut terms = Vec::new();
    let (mut lo, mut hi) = (delta.constant, delta.constant);
    for (coef, node) in delta.terms {
        let (Index::Div(a, nd) | Index::Rem(a, nd)) = &node else {
            return false;
        };
        if *nd <= 0 || !add_counter(a, *nd, var, plan) {
            return false;
        }
        let Some(counter) = plan
            .iter()
            .position(|c| c.divisor == *nd && c.operand == **a)
        else {
            return false;
        };
        let part = if matches!(node, Index::Div(..)) {
            Part::Quotient
        } else {
            Part::Remainder
        };
        let (t_lo, t_hi) = plan[counter].deltas()[part as usize];
        let (t_lo, t_hi) = if coef >= 0 {
            (coef * t_lo, coef * t_hi)
        } else {
            (coef * t_hi, coef * t_lo)
        };
        lo += t_lo;
        hi += t_hi;
        if t_lo != 0 || t_hi != 0 {
            terms.push(StepTerm {
                coef,
                counter,
                part,
            });
        }
    }
    let step = if terms.is_empty() && lo >= 0 {
        Step::Const(lo)
    } else if lo >= 0 && hi < d {
        Step::Bounded {
            constant: delta.constant,
            terms,
        }
    } else {
        return false;
    };
    plan.push(Counter {
        operand: operand.clone(),
        divisor: d,
        step,
    });
    true
}

/// How an index changes when `var` goes up by one, the deeper variables absent:
/// `constant + sum(coef * change of node)`, each node a division depending on `var`.
struct LinearStep {
    constant: i64,
    terms: Vec<(i64, Index)>,
}

fn linear_step(ix: &Index, var: usize) -> Option<LinearStep> {
    let unchanged = || LinearStep {
        constant: 0,
        terms: Vec::new(),
    };
    if max_var(ix).is_none_or(|v| v < var) {
        return Some(unchanged());
    }
    match ix {
        Index::Var(_) => Some(LinearStep {
            constant: 1,
            terms: Vec::new(),
        }),
        Index::Const(_) | Index::Batch => Some(unchanged()),
        Index::Add(a, b) => {
            let (a, b) = (linear_step(a, var)?, linear_step(b, var)?);
            Some(LinearStep {
                constant: a.constant.checked_add(b.constant)?,
                terms: [a.terms, b.terms].concat(),
            })
        }
        Index::Mul(a, b) => {
            let (c, x) = match (&**a, &**b) {
                (Index::Const(c), x) | (x, Index::Const(c)) => (*c, x),
                _ => return None,
            };
            let x = linear_step(x, var)?;
            Some(LinearStep {
                constant: x.constant.checked_mul(c)?,
                terms: x
                    .terms
                    .into_iter()
                    .map(|(coef, n)| Some((coef.checked_mul(c)?, n)))
                    .collect::<Option<_>>()?,
            })
        }
        Index::Div(..) | Index::Rem(..) => Some(LinearStep {
            constant: 0,
            terms: vec![(1, ix.clone())],
        }),
    }
}

/// The deepest loop variable `ix` depends on.
fn max_var(ix: &Index) -> Option<usize> {
    match ix {
        Index::Var(v) => Some(*v),
        Index::Const(_) | Index::Batch => None,
        Index::Add(a, b) | Index::Mul(a, b) => max_var(a).max(max_var(b)),
        Index::Div(a, _) | Index::Rem(a, _) => max_var(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(v: usize) -> Index {
        Index::Var(v)
    }

    fn div(a: Index, d: i64) -> Index {
        Index::Div(Box::new(a), d)
    }

    fn rem(a: Index, d: i64) -> Index {
        Index::Rem(Box::new(a), d)
    }

    #[test]
    fn folds_a_division_whose_operand_stays_within_one_multiple() {
        let vars = [Some((0, 24)), Some((0, 575))];
        assert_eq!(simplify(&div(var(0), 25), &vars), Index::Const(0));
        assert_eq!(simplify(&rem(var(0), 25), &vars), var(0));
        // 30..=54 spans two multiples of 25: the division stays.
        let shifted = var(0).add(Index::Const(30));
        assert_eq!(simplify(&div(shifted.clone(), 25), &vars), div(shifted, 25));
        let shifted = var(0).add(Index::Const(25));
        assert_eq!(simplify(&div(shifted.clone(), 25), &vars), Index::Const(1));
        assert_eq!(
            simplify(&rem(shifted, 25), &vars),
            var(0).add(Index::Const(25)).add(Index::Const(-25))
        );
        assert_eq!(simplify(&div(var(1), 1), &vars), var(1));
        assert_eq!(simplify(&rem(var(1), 1), &vars), Index::Const(0));
        // The batch is unbounded.
        assert_eq!(
            simplify(&div(Index::Batch, 25), &vars),
            div(Index::Batch, 25)
        );
    }

    #[test]
    fn im2col_columns_become_two_chained_counters() {
        // q / 25, (q / 5) % 5, q % 5 over the innermost variable 2.
        let q = var(2);
        let divisions = vec![div(q.clone(), 25), rem(div(q.clone(), 5), 5), rem(q, 5)];
        let plan = plan_counters(&divisions, 2);
        let of = |operand: Index, d: i64| {
            plan.iter()
                .position(|c| c.operand == operand && c.divisor == d)
        };
        let (by25, by5, inner) = (of(var(2), 25), of(var(2), 5), of(div(var(2), 5), 5));
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert_eq!(plan[by25.unwrap()].step, Step::Const(1));
        assert_eq!(plan[by5.unwrap()].step, Step::Const(1));
        // The second counter steps by the first's quotient, 0 or 1.
        assert!(by5 < inner);
        assert_eq!(
            plan[inner.unwrap()].step,
            Step::Bounded {
                constant: 0,
                terms: vec![StepTerm {
                    coef: 1,
                    counter: by5.unwrap(),
                    part: Part::Quotient
                }]
            }
        );
        // Nothing depends on variable 1 alone.
        assert!(plan_counters(&divisions, 1).is_empty());
    }

    #[test]
    fn keeps_divisions_whose_step_is_unknown_or_negative() {
        let batch_stride = div(var(1).mul(Index::Batch), 3);
        let negative = div(Index::Const(100).add(var(1).mul(Index::Const(-2))), 3);
        let by_two = div(var(1), 4);
        // A remainder's change may be negative: a division of it cannot be counted.
        let of_remainder = div(rem(var(1), 7), 3);
        let plan = plan_counters(&[batch_stride, negative, by_two, of_remainder], 1);
        assert_eq!(plan, []);
    }

    #[test]
    fn a_large_constant_step_carries_its_quotient() {
        let plan = plan_counters(&[div(var(0).mul(Index::Const(24)), 5)], 0);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].step, Step::Const(24));
        assert_eq!(plan[0].deltas(), [(4, 5), (-4, 4)]);
    }
}
