//! Loop fission of a map's transcendental functions: the activations an LSTM cell's
//! point needs first, computed for a whole chunk of a row before the rest of the point.
//!
//! A vector point of a map like an LSTM cell (`h = σ(o) tanh(σ(f) c + σ(i) tanh(g))`) is
//! one long chain: four activations, then `tanh(c)` of their results, ~320 instructions
//! for four points. Points are independent, but the core runs only what its reorder
//! window holds: about one point's instructions, so the loop is bound by the chain's
//! latency (~150 cycles a point on a 2-core AMD EPYC), not by its instruction count.
//! Cranelift's optimizer places each pure instruction just before its first use, so
//! interleaving two points' instructions in the emitted order does not survive it.
//!
//! So when a map's stores apply a transcendental function to the result of another
//! (a nested chain), the *stages* — every distinct transcendental whose argument holds
//! none — are computed by loops of their own, one a stage, over the points of a row that the function runs
//! (a chunked row's `[m, n]` map, `Rows::Chunks`: at most `n` points, and `n` at most
//! [`MOST_POINTS`]) into a stack buffer, and the point's loop reads them from there: each loop's point is a
//! short chain (one activation; or `c`, `tanh(c)` and `h`), and the window holds
//! several points of it. One loop a stage rather than one for all: a loop then holds one
//! function's constants, not four functions' (more than the sixteen vector registers,
//! so Cranelift reloads them from the stack at every use), and W3's cell took 15.2-15.8
//! against 14.9-15.4 us a step. A lane computes the same operations on the same values
//! as before, so the bits do not change; the stack buffer is the function's own, a few
//! KB, indexed by the point's offset in the chunk.

use super::{LowerResult, Lowering};
use crate::cpu::lanes::Lanes;
use crate::hoist::Invariant;
use crate::ir::{Expr, UnaryOp};
use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};

/// The most stages a map gets.
const MOST_STAGES: usize = 8;

/// The longest row of a staged map (its stack buffer: at most 8 x 1,024 x 4 bytes).
pub(super) const MOST_POINTS: u64 = 1024;

/// A map's stages, and the most points its function's loop runs (the stack buffer holds
/// each stage's value at each of them).
#[derive(Clone)]
pub(super) struct Stages {
    pub(super) exprs: Vec<Expr>,
    pub(super) points: u64,
}

/// Whether `op` is a transcendental function: a polynomial chain of ~20-40 dependent
/// instructions ([`crate::cpu::math`]).
fn transcendental(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Erf | UnaryOp::Sigmoid
    )
}

/// Whether `e` applies a transcendental function anywhere.
fn has_transcendental(e: &Expr) -> bool {
    match e {
        Expr::Unary(op, x) => transcendental(*op) || has_transcendental(x),
        Expr::Binary(_, a, b) => has_transcendental(a) || has_transcendental(b),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => has_transcendental(cond) || has_transcendental(then) || has_transcendental(otherwise),
        Expr::Reduce { value, .. } => has_transcendental(value),
        Expr::Uniform { step, .. } => has_transcendental(step),
        Expr::Load { .. }
        | Expr::Const(_)
        | Expr::Acc
        | Expr::IndexValue(_)
        | Expr::Gather { .. } => false,
    }
}

/// The stages of a map whose points compute `values` (see the module docs): the
/// distinct transcendentals whose argument holds none, reached through arithmetic only
/// (not inside a `select`'s arms, a nested reduction or a random draw), and that vary
/// along the lanes (`varies`); empty unless some transcendental applies to another.
pub(super) fn stages_of(values: &[&Expr], varies: &dyn Fn(&Expr) -> bool) -> Vec<Expr> {
    fn walk(e: &Expr, varies: &dyn Fn(&Expr) -> bool, leaves: &mut Vec<Expr>, nested: &mut bool) {
        match e {
            Expr::Unary(op, x) if transcendental(*op) => {
                if has_transcendental(x) {
                    *nested = true;
                    walk(x, varies, leaves, nested);
                } else if varies(e) && !leaves.contains(e) {
                    leaves.push(e.clone());
                }
            }
            Expr::Unary(_, x) => walk(x, varies, leaves, nested),
            Expr::Binary(_, a, b) => {
                walk(a, varies, leaves, nested);
                walk(b, varies, leaves, nested);
            }
            _ => {}
        }
    }
    let (mut leaves, mut nested) = (Vec::new(), false);
    for v in values {
        walk(v, varies, &mut leaves, &mut nested);
    }
    match nested && !leaves.is_empty() && leaves.len() <= MOST_STAGES {
        true => leaves,
        false => Vec::new(),
    }
}

impl<'k, 'f> Lowering<'k, 'f> {
    /// The vector loop over `lo..vector_hi` (whole vectors, at most `stages.points`
    /// points) in several: each of `stages` for every point into a stack buffer, then the
    /// points, each stage's value read back where the point's expressions reach it.
    pub(super) fn staged_vector_loops(
        &mut self,
        lo: Value,
        vector_hi: Value,
        stages: &Stages,
        outer: &[Invariant],
    ) -> LowerResult<()> {
        let Stages {
            exprs: stages,
            points,
        } = stages;
        // Stage `k` of the loop's point is `k * stage_bytes` after the point's address.
        let stage_bytes = points * 4;
        let size = stage_bytes * stages.len() as u64;
        let (Ok(size), Ok(stage_bytes)) = (u32::try_from(size), i32::try_from(stage_bytes)) else {
            return Err(self.error("a stage buffer beyond 2 GB (emitter bug)"));
        };
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            4,
        ));
        // The address of the loop's point in stage 0.
        let at = |l: &mut Lowering<'k, 'f>| {
            let i = *l.vars.last().expect("the loop binds its variable");
            let offset = l.b.ins().isub(i, lo);
            let offset = l.b.ins().ishl_imm_s(offset, 2);
            let base = l.b.ins().stack_addr(types::I64, slot, 0);
            l.b.ins().iadd(base, offset)
        };
        let offset = |k: usize| k as i32 * stage_bytes;
        for (k, stage) in stages.iter().enumerate() {
            self.counted_loop(lo, vector_hi, Lanes::WIDTH, &mut |l| {
                l.hoist(outer)?;
                let addr = at(l);
                let value = l.vector_value(stage)?;
                l.b.ins().store(MemFlagsData::new(), value, addr, offset(k));
                Ok(())
            })?;
        }
        self.counted_loop(lo, vector_hi, Lanes::WIDTH, &mut |l| {
            l.hoist(outer)?;
            let addr = at(l);
            l.staged = stages
                .iter()
                .enumerate()
                .map(|(k, stage)| {
                    let flags = MemFlagsData::new();
                    let value = l.b.ins().load(types::F32X4, flags, addr, offset(k));
                    (stage.clone(), value)
                })
                .collect();
            let done = l.vector_point();
            l.staged.clear();
            done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, Index};

    fn x(i: i64) -> Expr {
        Expr::load(0, Index::Var(1).add(Index::Const(i)))
    }

    fn act(op: UnaryOp, e: Expr) -> Expr {
        Expr::unary(op, e)
    }

    #[test]
    fn an_lstm_cell_stages_its_four_gates_once_each() {
        let c = Expr::binary(
            BinaryOp::Add,
            Expr::binary(BinaryOp::Mul, act(UnaryOp::Sigmoid, x(128)), x(1000)),
            Expr::binary(
                BinaryOp::Mul,
                act(UnaryOp::Sigmoid, x(0)),
                act(UnaryOp::Tanh, x(256)),
            ),
        );
        let h = Expr::binary(
            BinaryOp::Mul,
            act(UnaryOp::Sigmoid, x(384)),
            act(UnaryOp::Tanh, c.clone()),
        );
        let stages = stages_of(&[&h, &c], &|_| true);
        assert_eq!(
            stages,
            vec![
                act(UnaryOp::Sigmoid, x(384)),
                act(UnaryOp::Sigmoid, x(128)),
                act(UnaryOp::Sigmoid, x(0)),
                act(UnaryOp::Tanh, x(256)),
            ]
        );
        // Only what varies along the lanes is staged.
        let varying = stages_of(&[&h, &c], &|e| *e != act(UnaryOp::Sigmoid, x(0)));
        assert_eq!(varying.len(), 3);
    }

    #[test]
    fn no_stages_without_an_activation_of_an_activation() {
        let flat = Expr::binary(
            BinaryOp::Mul,
            act(UnaryOp::Sigmoid, x(0)),
            act(UnaryOp::Tanh, Expr::binary(BinaryOp::Add, x(1), x(2))),
        );
        assert!(stages_of(&[&flat], &|_| true).is_empty());
        // An activation in a select's arm is not computed unconditionally.
        let guarded = act(
            UnaryOp::Tanh,
            Expr::Select {
                cond: Box::new(x(0)),
                then: Box::new(act(UnaryOp::Exp, x(1))),
                otherwise: Box::new(x(2)),
            },
        );
        assert!(stages_of(&[&guarded], &|_| true).is_empty());
    }
}
