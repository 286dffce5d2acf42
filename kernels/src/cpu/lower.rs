//! The walk from one [`Kernel`] to the body of its CLIF function: loop nests, index
//! arithmetic and scalar expressions (the conventions are in the parent module's docs).
//!
//! Loop-invariant subexpressions ([`crate::hoist`]) are computed at the start of the
//! outermost loop body they depend on: the kernel's own invariants at the start of each
//! of its loops, a nested reduction's before its loops and at the start of each of them.

mod stages;
mod vector;

use super::lanes::Lanes;
use super::strength::{self, Counter, Step};
use super::{math, random};
use crate::hoist::{self, Invariant};
use crate::ir::{
    Access, BinaryOp, Contraction, Dim, Expr, Index, Kernel, KernelBody, KernelError, ReduceOp,
    ScalarType, ScatterAdd, Store, UnaryOp,
};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, Function, InstBuilder, MemFlagsData, Value, types};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use std::collections::HashMap;

type LowerResult<T> = Result<T, KernelError>;

/// Fills `func` (whose signature is already the kernel signature) with `kernel`'s code.
pub(super) fn lower_kernel(
    kernel: &Kernel,
    func: &mut Function,
    frontend: TargetFrontendConfig,
    features: super::Features,
) -> LowerResult<()> {
    // Divisions folded by range first: the counters and the memo see the folded indices.
    let simplified = strength::simplify_kernel(kernel);
    let kernel = &simplified;
    let mut ctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut ctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let &[bufs, batch, start, end] = b.block_params(entry) else {
        return Err(KernelError {
            kernel: kernel.name.clone(),
            message: "kernel signature must have 4 parameters (emitter bug)".into(),
        });
    };
    // Base pointers of the slots the kernel touches, loaded once.
    let mut bases = vec![None; kernel.buffers.len()];
    for slot in used_slots(kernel) {
        let offset = i32::try_from(slot * 8).map_err(|_| KernelError {
            kernel: kernel.name.clone(),
            message: "too many buffers".into(),
        })?;
        bases[slot] = Some(b.ins().load(types::I64, MemFlagsData::new(), bufs, offset));
    }
    let readable = kernel
        .buffers
        .iter()
        .map(|d| d.access == Access::Read)
        .collect();
    let mut lowering = Lowering {
        kernel,
        b,
        bases,
        batch,
        vars: Vec::new(),
        memo: Memo::default(),
        invariants: Vec::new(),
        readable,
        divisions: kernel_divisions(kernel),
        vector: vector::plan(kernel),
        fused: features.fma,
        staged: Vec::new(),
    };
    lowering.invariants = kernel_invariants(kernel, &|slot| lowering.readable[slot]);
    lowering.body(start, end)?;
    lowering.b.ins().return_(&[]);
    lowering.b.seal_all_blocks();
    lowering.b.finalize(frontend);
    Ok(())
}

/// Buffer slots that the kernel loads from or stores to, in order.
fn used_slots(kernel: &Kernel) -> Vec<usize> {
    let mut used = vec![false; kernel.buffers.len()];
    let mut mark = |slot: usize, _: Option<&Index>| {
        if let Some(u) = used.get_mut(slot) {
            *u = true;
        }
    };
    match &kernel.body {
        KernelBody::Map { stores, .. } => {
            for s in stores {
                mark(s.buf, Some(&s.index));
                s.value.visit_loads(&mut mark);
            }
        }
        KernelBody::Reduce { value, out, .. } => {
            value.visit_loads(&mut mark);
            mark(out.buf, Some(&out.index));
            out.value.visit_loads(&mut mark);
        }
        KernelBody::Contract(c) => {
            mark(c.out, None);
            c.epilogue.visit_loads(&mut mark);
        }
        KernelBody::ScatterAdd(s) => {
            mark(s.out, None);
            mark(s.ids, Some(&s.id_index));
            s.value.visit_loads(&mut mark);
        }
        // Emitted one function per part (`Kernel::part`): never lowered whole.
        KernelBody::Parts(_) => {}
    }
    (0..used.len()).filter(|&s| used[s]).collect()
}

/// Every division in the kernel's indices, for the loops' counters.
fn kernel_divisions(kernel: &Kernel) -> Vec<Index> {
    match &kernel.body {
        KernelBody::Map { stores, .. } => {
            let values: Vec<&Expr> = stores.iter().map(|s| &s.value).collect();
            let indices: Vec<&Index> = stores.iter().map(|s| &s.index).collect();
            strength::divisions_in(&values, &indices)
        }
        KernelBody::Reduce { value, out, .. } => {
            strength::divisions_in(&[value, &out.value], &[&out.index])
        }
        KernelBody::Contract(c) => strength::divisions_in(&[&c.epilogue], &[]),
        // Its loops are not the plain nest the counters follow (see `scatter_add`).
        KernelBody::ScatterAdd(_) | KernelBody::Parts(_) => Vec::new(),
    }
}

/// The invariants of the kernel's own expressions that its loops can hoist.
fn kernel_invariants(kernel: &Kernel, readable: &impl Fn(usize) -> bool) -> Vec<Invariant> {
    let mut out = Vec::new();
    let mut collect = |e: &Expr, extents: &[Dim], depth: usize| {
        hoist::collect(e, extents, depth, readable, &mut out)
    };
    match &kernel.body {
        KernelBody::Map { space, stores } => {
            for s in stores {
                collect(&s.value, space, space.len());
            }
        }
        KernelBody::Reduce {
            space,
            reduce,
            value,
            out,
            ..
        } => {
            let all = [space.as_slice(), reduce].concat();
            collect(value, &all, all.len());
            collect(&out.value, space, space.len());
        }
        KernelBody::Contract(c) => {
            let space = c.space();
            collect(&c.epilogue, &space, space.len());
        }
        // Its loops are not the plain nest the invariants' levels follow.
        KernelBody::ScatterAdd(_) => {}
        // Emitted one function per part (`Kernel::part`): never lowered whole.
        KernelBody::Parts(_) => {}
    }
    out
}

/// Values already computed, shared by identical index expressions, loads and invariant
/// subexpressions. Only values that dominate the current insertion point are in it: it is
/// saved/restored around every loop body and around the arms of a branching `Select`.
#[derive(Clone, Default)]
struct Memo {
    indices: HashMap<Index, Value>,
    /// Element addresses, by buffer slot and index.
    addresses: HashMap<(usize, Index), Value>,
    loads: HashMap<(usize, Index), Value>,
    /// Hoisted invariants, by canonical form (few, so a list).
    invariants: Vec<(Expr, Value)>,
}

impl Memo {
    fn invariant(&self, canonical: &Expr) -> Option<Value> {
        self.invariants
            .iter()
            .find(|(e, _)| e == canonical)
            .map(|(_, v)| *v)
    }
}

struct Lowering<'k, 'f> {
    kernel: &'k Kernel,
    b: FunctionBuilder<'f>,
    /// Base pointer of each used buffer slot.
    bases: Vec<Option<Value>>,
    batch: Value,
    /// The loop variables in scope, outermost first.
    vars: Vec<Value>,
    memo: Memo,
    /// The kernel's own invariants, computed by its loops.
    invariants: Vec<Invariant>,
    /// Per buffer slot: whether the kernel only reads it (its loads may be hoisted).
    readable: Vec<bool>,
    /// The divisions in the indices of the loops being lowered (the kernel's, or a
    /// reduction's value inside its own loops), for the loops' counters.
    divisions: Vec<Index>,
    /// How the kernel's innermost loop runs four points at a time, if it can
    /// ([`vector`]); `None` inside a fold's loops.
    vector: Option<vector::Plan>,
    /// Whether multiply-adds are fused ([`Lanes::fused`]).
    fused: bool,
    /// In a staged map's point loop: each stage's value at the point (`stages`).
    staged: Vec<(Expr, Value)>,
}

/// Whether a fold's loops may be unrolled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unroll {
    Never,
    /// When the fold has at most [`MAX_UNROLLED_POINTS`] points, all of fixed extents.
    Small,
}

/// The most points of a nested reduction emitted without a loop: a 3 x 3 window.
const MAX_UNROLLED_POINTS: u64 = 9;

/// A [`Counter`] in the loop being lowered: its quotient and remainder as variables.
struct LiveCounter {
    counter: Counter,
    quotient: Variable,
    remainder: Variable,
}

/// A loop body: called with the lowering positioned inside the loop.
type Body<'a, 'k, 'f> = dyn FnMut(&mut Lowering<'k, 'f>) -> LowerResult<()> + 'a;

impl<'k, 'f> Lowering<'k, 'f> {
    fn error(&self, message: impl Into<String>) -> KernelError {
        KernelError {
            kernel: self.kernel.name.clone(),
            message: message.into(),
        }
    }

    fn body(&mut self, start: Value, end: Value) -> LowerResult<()> {
        let kernel = self.kernel;
        match &kernel.body {
            KernelBody::Map { space, stores } => match super::rows_of(&kernel.body) {
                super::Rows::Chunks => {
                    self.chunk_rows(space, start, end, &mut |l| l.map_point(stores))
                }
                super::Rows::Leading => {
                    let rows = super::row_dims(space);
                    self.rows(space, rows, start, end, &mut |l| l.map_point(stores))
                }
            },
            KernelBody::Reduce {
                space,
                reduce,
                op,
                value,
                out,
            } => {
                let mut point = |l: &mut Self| l.reduce_point(reduce, *op, value, out);
                match super::rows_of(&kernel.body) {
                    super::Rows::Chunks => self.chunked_outputs(space, start, end, &mut point),
                    super::Rows::Leading => {
                        self.rows(space, super::row_dims(space), start, end, &mut point)
                    }
                }
            }
            KernelBody::Contract(c) => {
                let space = c.space();
                let vars: Vec<Index> = (0..space.len()).map(Index::Var).collect();
                let out_index = Index::row_major(&vars, &space);
                self.rows(&space, 1, start, end, &mut |l| {
                    l.epilogue_point(c, &out_index)
                })
            }
            KernelBody::ScatterAdd(s) => self.scatter_add(s, start, end),
            KernelBody::Parts(_) => Err(self.error("parts are emitted one function each")),
        }
    }

    /// The loop nest over `space`, its rows (points of its first `row_dims` dimensions,
    /// one or two) restricted to `start..end`.
    fn rows(
        &mut self,
        space: &[Dim],
        row_dims: usize,
        start: Value,
        end: Value,
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let (lo, invariants) = self.row_start(start)?;
        match space.split_first() {
            // Rank 0: one point, in row 0.
            None => {
                let one = self.b.ins().iconst(types::I64, 1);
                let hi = self.b.ins().smin(end, one);
                self.counted_loop(lo, hi, 0, &mut |l| {
                    l.hoist(&invariants)?;
                    body(l)
                })
            }
            Some((outer, [])) if self.vector.is_some() => {
                let extent = self.extent(*outer);
                let hi = self.b.ins().smin(end, extent);
                self.vector_loop(lo, hi, &invariants, body)
            }
            Some((outer, [Dim::Fixed(n), inner @ ..])) if row_dims == 2 => {
                // The `i1` of the pairs `(i0, i1)` among the rows.
                self.rows_per_index(
                    *outer,
                    *n as i64,
                    lo,
                    end,
                    &invariants,
                    &mut |l, from, to| {
                        l.counted_loop(from, to, 1, &mut |l| {
                            l.hoist(&invariants)?;
                            l.nest(inner, &invariants, body)
                        })
                    },
                )
            }
            Some((outer, inner)) => {
                let extent = self.extent(*outer);
                let hi = self.b.ins().smin(end, extent);
                self.counted_loop(lo, hi, 1, &mut |l| {
                    l.hoist(&invariants)?;
                    l.nest(inner, &invariants, body)
                })
            }
        }
    }

    /// The loop nest over a map's `[m, n]` space whose rows are chunks of
    /// [`super::ROW_CHUNK`] points ([`super::Rows::Chunks`]), rows `start..end`: the `i0`
    /// they touch, and in each the points of its chunks among them.
    fn chunk_rows(
        &mut self,
        space: &[Dim],
        start: Value,
        end: Value,
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let [outer, Dim::Fixed(n)] = *space else {
            return Err(self.error("chunked rows of a space not [m, n] (emitter bug)"));
        };
        let chunk = super::ROW_CHUNK as i64;
        let (lo, invariants) = self.row_start(start)?;
        self.rows_per_index(
            outer,
            n as i64 / chunk,
            lo,
            end,
            &invariants,
            &mut |l, from, to| l.chunk_points((from, to), &invariants, body),
        )
    }

    /// The innermost loop over the points of chunks `rows.0..rows.1` of a row (the next
    /// loop variable): in vectors when the kernel's plan runs along it, else one point at
    /// a time.
    fn chunk_points(
        &mut self,
        (from, to): (Value, Value),
        invariants: &[Invariant],
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let chunk = super::ROW_CHUNK as i64;
        let from = self.b.ins().imul_imm_s(from, chunk);
        let to = self.b.ins().imul_imm_s(to, chunk);
        match self
            .vector
            .as_ref()
            .is_some_and(|p| p.var == self.vars.len())
        {
            true => self.vector_loop(from, to, invariants, body),
            false => self.counted_loop(from, to, 1, &mut |l| {
                l.hoist(invariants)?;
                body(l)
            }),
        }
    }

    /// The rows of a reduction over `[n]` or `[1, .., 1, m, n]` whose rows are chunks of
    /// its outputs ([`super::Rows::Chunks`]), `start..end`: the unit dimensions' variables
    /// are constants, then the rows are those of a chunked map over `[m, n]`.
    fn chunked_outputs(
        &mut self,
        space: &[Dim],
        start: Value,
        end: Value,
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        if let [Dim::Fixed(n)] = *space {
            let (lo, invariants) = self.row_start(start)?;
            let rows = self
                .b
                .ins()
                .iconst(types::I64, (n / super::ROW_CHUNK) as i64);
            let hi = self.b.ins().smin(end, rows);
            return self.chunk_points((lo, hi), &invariants, body);
        }
        let ones = space.len().saturating_sub(2);
        let invariants = self.invariants.clone();
        let rows = &space[ones..];
        self.unrolled_nest(&space[..ones], &invariants, &mut |l| {
            l.chunk_rows(rows, start, end, body)
        })
    }

    /// `start` clamped to 0, and the kernel's invariants, those that depend on no loop
    /// variable and read no memory computed now: safe to compute even if the rows are
    /// empty, once, before them.
    fn row_start(&mut self, start: Value) -> LowerResult<(Value, Vec<Invariant>)> {
        let zero = self.b.ins().iconst(types::I64, 0);
        let lo = self.b.ins().smax(start, zero);
        let invariants = self.invariants.clone();
        let constants: Vec<Invariant> = invariants
            .iter()
            .filter(|i| i.level == 0 && !has_load(&i.expr))
            .cloned()
            .collect();
        self.hoist(&constants)?;
        Ok((lo, invariants))
    }

    /// Rows `lo..end` of a space with `per` rows per index of its `outer` dimension: a
    /// loop over the `i0` they touch, calling `inner(from, to)` in each with the range of
    /// its own rows among them (`0..per` but at the ends).
    fn rows_per_index(
        &mut self,
        outer: Dim,
        per: i64,
        lo: Value,
        end: Value,
        invariants: &[Invariant],
        inner: &mut dyn FnMut(&mut Lowering<'k, 'f>, Value, Value) -> LowerResult<()>,
    ) -> LowerResult<()> {
        let rows = self.extent(outer);
        let rows = self.b.ins().imul_imm_s(rows, per);
        let hi = self.b.ins().smin(end, rows);
        let first = self.b.ins().sdiv_imm_s(lo, per);
        let past = self.b.ins().iadd_imm_s(hi, per - 1);
        let last = self.b.ins().sdiv_imm_s(past, per);
        self.counted_loop(first, last, 1, &mut |l| {
            l.hoist(invariants)?;
            let i0 = *l.vars.last().expect("the loop binds i0");
            let base = l.b.ins().imul_imm_s(i0, per);
            let zero = l.b.ins().iconst(types::I64, 0);
            let from = l.b.ins().isub(lo, base);
            let from = l.b.ins().smax(from, zero);
            let to = l.b.ins().isub(hi, base);
            let extent = l.b.ins().iconst(types::I64, per);
            let to = l.b.ins().smin(to, extent);
            inner(l, from, to)
        })
    }

    /// Loops over every point of `dims`, pushing one loop variable per dimension and
    /// computing the `invariants` of each loop's level at the start of its body.
    fn nest(
        &mut self,
        dims: &[Dim],
        invariants: &[Invariant],
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        match dims.split_first() {
            None => body(self),
            Some((d, _))
                if self
                    .vector
                    .as_ref()
                    .is_some_and(|p| p.var == self.vars.len()) =>
            {
                let lo = self.b.ins().iconst(types::I64, 0);
                let hi = self.extent(*d);
                // The dimensions after `d` are the plan's unrolled ones.
                self.vector_loop(lo, hi, invariants, body)
            }
            Some((d, rest)) => {
                let lo = self.b.ins().iconst(types::I64, 0);
                let hi = self.extent(*d);
                self.counted_loop(lo, hi, 1, &mut |l| {
                    l.hoist(invariants)?;
                    l.nest(rest, invariants, body)
                })
            }
        }
    }

    /// [`Lowering::nest`] without loops, for dimensions of fixed extents: the body once
    /// per point, each variable a constant (a pooling window's few taps: no loop tests,
    /// and the taps' indices fold).
    fn unrolled_nest(
        &mut self,
        dims: &[Dim],
        invariants: &[Invariant],
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let Some((d, rest)) = dims.split_first() else {
            return body(self);
        };
        let Dim::Fixed(n) = *d else {
            return Err(self.error("unrolled a loop over the batch (emitter bug)"));
        };
        for i in 0..n {
            let v = self.b.ins().iconst(types::I64, i as i64);
            self.vars.push(v);
            // As around a loop body: what depends on this point's variable stays here.
            let saved = self.memo.clone();
            self.hoist(invariants)?;
            self.unrolled_nest(rest, invariants, body)?;
            self.memo = saved;
            self.vars.pop();
        }
        Ok(())
    }

    /// Computes the `invariants` that the loop variables bound so far determine and that
    /// are not computed yet, and records them in the memo.
    fn hoist(&mut self, invariants: &[Invariant]) -> LowerResult<()> {
        let depth = self.vars.len();
        for inv in invariants.iter().filter(|i| i.level <= depth) {
            if self.memo.invariant(&inv.expr).is_none() {
                // Recorded by `expr` unless it depends on the innermost bound variable.
                let v = self.expr(&inv.at_depth(depth), None)?;
                if self.memo.invariant(&inv.expr).is_none() {
                    self.memo.invariants.push((inv.expr.clone(), v));
                }
            }
        }
        Ok(())
    }

    /// `for i in (lo..hi).step_by(step) { body }`, leaving the builder in the loop's exit
    /// block; `i` is the next loop variable unless `step` is 0 (a loop of at most one
    /// iteration that binds no variable). The caller makes sure that `hi - lo` is a multiple
    /// of `step`.
    ///
    /// The loop is rotated: one test before it, then one at the bottom of each iteration,
    /// so an iteration takes a single branch. What the body computes does not dominate the
    /// exit, so the memo is restored after it.
    fn counted_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: &mut Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let is_var = step != 0;
        let inside = self.b.create_block();
        let i = self.b.append_block_param(inside, types::I64);
        let exit = self.b.create_block();
        let counters = if is_var {
            self.start_counters(lo)?
        } else {
            Vec::new()
        };
        if step > 1 && !counters.is_empty() {
            return Err(self.error("index counters in a loop of stride > 1 (emitter bug)"));
        }
        let any = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        self.b
            .ins()
            .brif(any, inside, &[BlockArg::Value(lo)], exit, &[]);
        self.b.switch_to_block(inside);
        if is_var {
            self.vars.push(i);
        }
        let saved = self.memo.clone();
        for c in &counters {
            let q = self.b.use_var(c.quotient);
            let r = self.b.use_var(c.remainder);
            self.memo.indices.insert(c.counter.quotient(), q);
            self.memo.indices.insert(c.counter.remainder(), r);
        }
        body(self)?;
        self.advance_counters(&counters);
        self.memo = saved;
        if is_var {
            self.vars.pop();
        }
        let next = self.b.ins().iadd_imm_s(i, step.max(1));
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b
            .ins()
            .brif(more, inside, &[BlockArg::Value(next)], exit, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// The counters of the loop about to bind the next variable (see [`strength`]),
    /// started at its first value `lo`: one division each, here, instead of one per
    /// iteration.
    fn start_counters(&mut self, lo: Value) -> LowerResult<Vec<LiveCounter>> {
        let var = self.vars.len();
        let plan = strength::plan_counters(&self.divisions, var);
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        // The operands at `lo`, computed as if the variable were bound to it; nothing of
        // that computation may be mistaken for a value inside the loop.
        let saved = self.memo.clone();
        self.vars.push(lo);
        let mut live = Vec::with_capacity(plan.len());
        for counter in plan {
            let a = self.index(&counter.operand)?;
            let q = self.floor_div(a, counter.divisor)?;
            let qd = self.b.ins().imul_imm_s(q, counter.divisor);
            let r = self.b.ins().isub(a, qd);
            let quotient = self.b.declare_var(types::I64);
            let remainder = self.b.declare_var(types::I64);
            self.b.def_var(quotient, q);
            self.b.def_var(remainder, r);
            live.push(LiveCounter {
                counter,
                quotient,
                remainder,
            });
        }
        self.vars.pop();
        self.memo = saved;
        Ok(live)
    }

    /// Steps every counter to the next iteration (at the end of the loop body), in plan
    /// order so that a step may read the change of an earlier counter.
    fn advance_counters(&mut self, counters: &[LiveCounter]) {
        // Per counter: how its quotient and remainder changed.
        let mut changes: Vec<[Value; 2]> = Vec::with_capacity(counters.len());
        for c in counters {
            let d = c.counter.divisor;
            let q = self.b.use_var(c.quotient);
            let r = self.b.use_var(c.remainder);
            let (q1, r1, may_wrap) = match &c.counter.step {
                Step::Const(s) => {
                    let q1 = self.b.ins().iadd_imm_s(q, s / d);
                    let r1 = self.b.ins().iadd_imm_s(r, s % d);
                    (q1, r1, s % d != 0)
                }
                Step::Bounded { constant, terms } => {
                    let mut step = self.b.ins().iconst(types::I64, *constant);
                    for t in terms {
                        let change = changes[t.counter][t.part as usize];
                        let scaled = self.b.ins().imul_imm_s(change, t.coef);
                        step = self.b.ins().iadd(step, scaled);
                    }
                    (q, self.b.ins().iadd(r, step), true)
                }
            };
            // The remainder grew by less than `d`: at most one carry.
            let (q_step, r_step) = if may_wrap {
                let wrap = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, r1, d);
                let r_wrapped = self.b.ins().iadd_imm_s(r1, -d);
                let q_carried = self.b.ins().iadd_imm_s(q1, 1);
                (
                    self.b.ins().select(wrap, q_carried, q1),
                    self.b.ins().select(wrap, r_wrapped, r1),
                )
            } else {
                (q1, r1)
            };
            let q_change = self.b.ins().isub(q_step, q);
            let r_change = self.b.ins().isub(r_step, r);
            changes.push([q_change, r_change]);
            self.b.def_var(c.quotient, q_step);
            self.b.def_var(c.remainder, r_step);
        }
    }

    fn extent(&mut self, d: Dim) -> Value {
        match d {
            Dim::Fixed(n) => self.b.ins().iconst(types::I64, n as i64),
            Dim::Batch => self.batch,
        }
    }

    fn map_point(&mut self, stores: &[Store]) -> LowerResult<()> {
        let values = stores
            .iter()
            .map(|s| self.expr(&s.value, None))
            .collect::<LowerResult<Vec<_>>>()?;
        for (s, v) in stores.iter().zip(values) {
            self.store(s.buf, &s.index, v)?;
        }
        Ok(())
    }

    fn reduce_point(
        &mut self,
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
        out: &Store,
    ) -> LowerResult<()> {
        let invariants = self.invariants.clone();
        let a = self.fold(reduce, op, value, &invariants, Unroll::Never)?;
        let v = self.expr(&out.value, Some(a))?;
        self.store(out.buf, &out.index, v)
    }

    /// `value` folded with `op` over every point of `dims` (new loop variables after the
    /// bound ones), computing `invariants` at the start of each loop. Sums accumulate in
    /// `f64`: cheap here, and the order of a long sum matters less.
    fn fold(
        &mut self,
        dims: &[Dim],
        op: ReduceOp,
        value: &Expr,
        invariants: &[Invariant],
        unroll: Unroll,
    ) -> LowerResult<Value> {
        let acc_type = match op {
            ReduceOp::Sum => types::F64,
            ReduceOp::Max | ReduceOp::Min => types::F32,
        };
        let acc = self.b.declare_var(acc_type);
        let init = match op {
            ReduceOp::Sum => self.b.ins().f64const(0.0),
            ReduceOp::Max => self.b.ins().f32const(f32::NEG_INFINITY),
            ReduceOp::Min => self.b.ins().f32const(f32::INFINITY),
        };
        self.b.def_var(acc, init);
        let points = dims.iter().try_fold(1u64, |n, d| match d {
            Dim::Fixed(e) => n.checked_mul(*e),
            Dim::Batch => None,
        });
        let unrolled = unroll == Unroll::Small && points.is_some_and(|n| n <= MAX_UNROLLED_POINTS);
        let mut point = |l: &mut Self| {
            let v = l.expr(value, None)?;
            let a = l.b.use_var(acc);
            let folded = match op {
                ReduceOp::Sum => {
                    let v = l.b.ins().fpromote(types::F64, v);
                    l.b.ins().fadd(a, v)
                }
                ReduceOp::Max => l.b.ins().fmax(a, v),
                ReduceOp::Min => l.b.ins().fmin(a, v),
            };
            l.b.def_var(acc, folded);
            Ok(())
        };
        let lanes = !unrolled && vector::fold_has_lanes(self.kernel, dims, value, self.vars.len());
        self.in_fold(value, |l| {
            if unrolled {
                l.unrolled_nest(dims, invariants, &mut point)
            } else if lanes {
                l.lane_fold(dims, op, value, invariants, acc, &mut point)
            } else {
                l.nest(dims, invariants, &mut point)
            }
        })?;
        let a = self.b.use_var(acc);
        Ok(if acc_type == types::F64 {
            self.b.ins().fdemote(types::F32, a)
        } else {
            a
        })
    }

    /// Runs `loops`, the loops of a fold of `value`: inside them the variables from here
    /// on are the fold's own (its divisions are the ones the loops' counters step), and
    /// they run one point at a time.
    fn in_fold(
        &mut self,
        value: &Expr,
        loops: impl FnOnce(&mut Self) -> LowerResult<()>,
    ) -> LowerResult<()> {
        self.in_folds(&[value], loops)
    }

    /// [`Lowering::in_fold`] for loops that fold several values together.
    fn in_folds(
        &mut self,
        values: &[&Expr],
        loops: impl FnOnce(&mut Self) -> LowerResult<()>,
    ) -> LowerResult<()> {
        let outer_divisions =
            std::mem::replace(&mut self.divisions, strength::divisions_in(values, &[]));
        let outer_vector = self.vector.take();
        let folded = loops(self);
        self.divisions = outer_divisions;
        self.vector = outer_vector;
        folded
    }

    /// A nested reduction at the current point: its invariants of the bound variables
    /// first, then its loops.
    fn nested_reduce(&mut self, op: ReduceOp, extent: &[Dim], value: &Expr) -> LowerResult<Value> {
        let readable = &self.readable;
        let invariants =
            hoist::nested_invariants(value, self.vars.len(), extent, &|slot| readable[slot]);
        self.hoist(&invariants)?;
        self.fold(extent, op, value, &invariants, Unroll::Small)
    }

    /// A scatter-add over the table's columns `start..end` (clamped to its columns): zero
    /// them in every row, then for every point in order add its values to the row of its
    /// id, if that id is a row. The point's loops bind the variables `0..over.len()`, the
    /// column loop innermost binds the last.
    fn scatter_add(&mut self, s: &ScatterAdd, start: Value, end: Value) -> LowerResult<()> {
        let (rows, cols) = self
            .kernel
            .table_extent(s.out)
            .ok_or_else(|| self.error("a scatter-add's output is not a table"))?;
        let zero = self.b.ins().iconst(types::I64, 0);
        let lo = self.b.ins().smax(start, zero);
        let cols_v = self.b.ins().iconst(types::I64, cols as i64);
        let hi = self.b.ins().smin(end, cols_v);
        let base = self.bases[s.out].ok_or_else(|| self.error("table slot not bound"))?;
        // The address of column `c` of row `row` (an i64 value) of the table.
        let at = |l: &mut Self, row: Value, c: Value| {
            let flat = l.b.ins().imul_imm_s(row, cols as i64);
            let flat = l.b.ins().iadd(flat, c);
            let offset = l.b.ins().ishl_imm_u(flat, 2);
            l.b.ins().iadd(base, offset)
        };
        let rows_v = self.b.ins().iconst(types::I64, rows as i64);
        let zero_row = self.b.ins().iconst(types::I64, 0);
        // No expression is evaluated in these loops: their variables are only addresses.
        self.counted_loop(zero_row, rows_v, 1, &mut |l| {
            let row = *l.vars.last().ok_or_else(|| l.error("row loop unbound"))?;
            l.counted_loop(lo, hi, 1, &mut |l| {
                let c = *l
                    .vars
                    .last()
                    .ok_or_else(|| l.error("column loop unbound"))?;
                let addr = at(l, row, c);
                let z = l.f32const(0.0);
                l.b.ins().store(MemFlagsData::new(), z, addr, 0);
                Ok(())
            })
        })?;
        let value = &s.value;
        let id_index = &s.id_index;
        self.nest(&s.over, &[], &mut |l| {
            let id = l.id(s.ids, id_index)?;
            let inside = l.row_inside(id, rows);
            let add = l.b.create_block();
            let done = l.b.create_block();
            l.b.ins().brif(inside, add, &[], done, &[]);
            l.b.switch_to_block(add);
            let saved = l.memo.clone();
            l.counted_loop(lo, hi, 1, &mut |l| {
                let c = *l
                    .vars
                    .last()
                    .ok_or_else(|| l.error("column loop unbound"))?;
                let v = l.expr(value, None)?;
                let addr = at(l, id, c);
                let old = l.b.ins().load(types::F32, MemFlagsData::new(), addr, 0);
                let sum = l.b.ins().fadd(old, v);
                l.b.ins().store(MemFlagsData::new(), sum, addr, 0);
                Ok(())
            })?;
            l.memo = saved;
            l.b.ins().jump(done, &[]);
            l.b.switch_to_block(done);
            Ok(())
        })
    }

    /// Element `index` of the `i32` buffer `ids`, as an `i64` id.
    fn id(&mut self, ids: usize, index: &Index) -> LowerResult<Value> {
        let addr = self.address(ids, index)?;
        let id = self.b.ins().load(types::I32, MemFlagsData::new(), addr, 0);
        Ok(self.b.ins().sextend(types::I64, id))
    }

    /// Whether the `i64` id lies in `0..rows` (one unsigned comparison).
    fn row_inside(&mut self, id: Value, rows: u64) -> Value {
        self.b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, id, rows as i64)
    }

    /// A gather: the table's element at row `ids[id_index]`, column `col`, or `0.0` when
    /// the id is not a row. The row is clamped to 0 first, so the load is always inside
    /// the table and no branch is needed.
    fn gather(
        &mut self,
        table: usize,
        ids: usize,
        id_index: &Index,
        col: &Index,
    ) -> LowerResult<Value> {
        let (rows, cols) = self
            .kernel
            .table_extent(table)
            .ok_or_else(|| self.error("a gather's table is not a table"))?;
        let id = self.id(ids, id_index)?;
        let inside = self.row_inside(id, rows);
        let zero = self.b.ins().iconst(types::I64, 0);
        let row = self.b.ins().select(inside, id, zero);
        let c = self.index(col)?;
        let flat = self.b.ins().imul_imm_s(row, cols as i64);
        let flat = self.b.ins().iadd(flat, c);
        let offset = self.b.ins().ishl_imm_u(flat, 2);
        let base = self.bases[table].ok_or_else(|| self.error("table slot not bound"))?;
        let addr = self.b.ins().iadd(base, offset);
        let v = self.b.ins().load(types::F32, MemFlagsData::new(), addr, 0);
        let z = self.f32const(0.0);
        Ok(self.b.ins().select(inside, v, z))
    }

    fn epilogue_point(&mut self, c: &Contraction, out_index: &Index) -> LowerResult<()> {
        let acc = self.load(c.out, out_index)?;
        let v = self.expr(&c.epilogue, Some(acc))?;
        self.store(c.out, out_index, v)
    }

    /// The address of element `index` of buffer `buf`.
    fn address(&mut self, buf: usize, index: &Index) -> LowerResult<Value> {
        let key = (buf, index.clone());
        if let Some(v) = self.memo.addresses.get(&key) {
            return Ok(*v);
        }
        let base = self
            .bases
            .get(buf)
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("buffer slot {buf} not bound (emitter bug)")))?;
        let i = self.index(index)?;
        let offset = self.b.ins().ishl_imm_u(i, 2);
        let address = self.b.ins().iadd(base, offset);
        self.memo.addresses.insert(key, address);
        Ok(address)
    }

    fn load(&mut self, buf: usize, index: &Index) -> LowerResult<Value> {
        let key = (buf, index.clone());
        if let Some(v) = self.memo.loads.get(&key) {
            return Ok(*v);
        }
        let addr = self.address(buf, index)?;
        let v = match self.kernel.buffers[buf].dtype {
            ScalarType::F32 => self.b.ins().load(types::F32, MemFlagsData::new(), addr, 0),
            ScalarType::I32 => {
                let i = self.b.ins().load(types::I32, MemFlagsData::new(), addr, 0);
                self.b.ins().fcvt_from_sint(types::F32, i)
            }
        };
        self.memo.loads.insert(key, v);
        Ok(v)
    }

    fn store(&mut self, buf: usize, index: &Index, value: Value) -> LowerResult<()> {
        let addr = self.address(buf, index)?;
        let value = match self.kernel.buffers[buf].dtype {
            ScalarType::F32 => value,
            ScalarType::I32 => self.b.ins().fcvt_to_sint_sat(types::I32, value),
        };
        self.b.ins().store(MemFlagsData::new(), value, addr, 0);
        // Nothing loads after a point's stores today; drop the cached value anyway so that
        // no later load could see a stale one.
        self.memo.loads.remove(&(buf, index.clone()));
        Ok(())
    }

    /// An index expression as an `i64` value.
    fn index(&mut self, ix: &Index) -> LowerResult<Value> {
        if let Some(v) = self.memo.indices.get(ix) {
            return Ok(*v);
        }
        let v = match ix {
            Index::Var(v) => *self
                .vars
                .get(*v)
                .ok_or_else(|| self.error(format!("loop variable {v} out of scope")))?,
            Index::Const(c) => self.b.ins().iconst(types::I64, *c),
            Index::Batch => self.batch,
            Index::Add(a, b) => {
                let a = self.index(a)?;
                let b = self.index(b)?;
                self.b.ins().iadd(a, b)
            }
            Index::Mul(a, b) => {
                let a = self.index(a)?;
                let b = self.index(b)?;
                self.b.ins().imul(a, b)
            }
            Index::Div(a, d) => {
                let a = self.index(a)?;
                self.floor_div(a, *d)?
            }
            Index::Rem(a, d) => {
                let a = self.index(a)?;
                self.euclid_rem(a, *d)?
            }
        };
        self.memo.indices.insert(ix.clone(), v);
        Ok(v)
    }

    /// `a.div_euclid(d)` for a positive constant `d`: a shift for powers of two, else a
    /// truncating division corrected towards negative infinity.
    fn floor_div(&mut self, a: Value, d: i64) -> LowerResult<Value> {
        if d <= 0 {
            return Err(self.error(format!("index divided by non-positive constant {d}")));
        }
        if d.count_ones() == 1 {
            return Ok(self.b.ins().sshr_imm_u(a, i64::from(d.trailing_zeros())));
        }
        let dv = self.b.ins().iconst(types::I64, d);
        let q = self.b.ins().sdiv(a, dv);
        let qd = self.b.ins().imul(q, dv);
        let r = self.b.ins().isub(a, qd);
        let negative = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        let q1 = self.b.ins().iadd_imm_s(q, -1);
        Ok(self.b.ins().select(negative, q1, q))
    }

    /// `a.rem_euclid(d)` for a positive constant `d`.
    fn euclid_rem(&mut self, a: Value, d: i64) -> LowerResult<Value> {
        if d <= 0 {
            return Err(self.error(format!("index divided by non-positive constant {d}")));
        }
        if d.count_ones() == 1 {
            return Ok(self.b.ins().band_imm_u(a, d - 1));
        }
        let dv = self.b.ins().iconst(types::I64, d);
        let r = self.b.ins().srem(a, dv);
        let negative = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        let r1 = self.b.ins().iadd(r, dv);
        Ok(self.b.ins().select(negative, r1, r))
    }

    /// One value at a time, multiply-adds fused as the target allows.
    fn scalar(&self) -> Lanes {
        Lanes::SCALAR.fused(self.fused)
    }

    /// Four values at a time, multiply-adds fused as the target allows.
    fn x4(&self) -> Lanes {
        Lanes::X4.fused(self.fused)
    }

    fn f32const(&mut self, x: f32) -> Value {
        self.b.ins().f32const(x)
    }

    /// A scalar expression as an `f32` value; `acc` is the value of [`Expr::Acc`]. An
    /// invariant already computed is reused, and one computed here is recorded.
    fn expr(&mut self, e: &Expr, acc: Option<Value>) -> LowerResult<Value> {
        let invariant = self.invariant_of(e);
        if let Some(inv) = &invariant
            && let Some(v) = self.memo.invariant(&inv.expr)
        {
            return Ok(v);
        }
        let v = self.compute(e, acc)?;
        if let Some(inv) = invariant {
            self.memo.invariants.push((inv.expr, v));
        }
        Ok(v)
    }

    /// `e` as an invariant of the bound variables, if it is one worth recording (loads
    /// and indices have memos of their own).
    /// A nested reduction that depends on the innermost bound variable is recorded too, for
    /// the rest of the point: the same row sum used twice is folded once.
    fn invariant_of(&self, e: &Expr) -> Option<Invariant> {
        let readable = |slot: usize| self.readable[slot];
        match e {
            Expr::Load { .. } | Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => None,
            _ => Invariant::of(e, self.vars.len(), &readable)
                .or_else(|| Invariant::at_point(e, self.vars.len(), &readable)),
        }
    }

    fn compute(&mut self, e: &Expr, acc: Option<Value>) -> LowerResult<Value> {
        Ok(match e {
            Expr::Load { buf, index } => self.load(*buf, index)?,
            Expr::Gather {
                table,
                ids,
                id_index,
                col,
            } => self.gather(*table, *ids, id_index, col)?,
            Expr::Const(c) => self.f32const(*c as f32),
            Expr::Acc => acc.ok_or_else(|| self.error("`acc` outside an epilogue"))?,
            Expr::IndexValue(ix) => {
                let i = self.index(ix)?;
                self.b.ins().fcvt_from_sint(types::F32, i)
            }
            Expr::Uniform { seed, index, step } => {
                let i = self.index(index)?;
                let step = self.expr(step, acc)?;
                random::uniform(&mut self.b, *seed, i, step)
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x, acc)?;
                self.unary(self.scalar(), *op, x)
            }
            Expr::Binary(BinaryOp::Pow, a, b) => {
                let a = self.expr(a, acc)?;
                match **b {
                    Expr::Const(c) => self.pow_const(self.scalar(), a, c),
                    _ => {
                        let b = self.expr(b, acc)?;
                        let l = self.scalar();
                        math::pow(&mut self.b, l, a, b)
                    }
                }
            }
            Expr::Binary(op, a, b) => {
                let a = self.expr(a, acc)?;
                let b = self.expr(b, acc)?;
                self.binary(self.scalar(), *op, a, b)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let cond = self.expr(cond, acc)?;
                let zero = self.f32const(0.0);
                // `NotEqual` is true for NaN too, as `cond != 0.0` is.
                let taken = self.b.ins().fcmp(FloatCC::NotEqual, cond, zero);
                if has_load(then) || has_load(otherwise) {
                    self.branch(taken, then, otherwise, acc)?
                } else {
                    let t = self.expr(then, acc)?;
                    let o = self.expr(otherwise, acc)?;
                    self.b.ins().select(taken, t, o)
                }
            }
            Expr::Reduce { op, extent, value } => self.nested_reduce(*op, extent, value)?,
        })
    }

    /// `if taken { then } else { otherwise }` with real control flow, so that only the
    /// taken arm's loads execute.
    fn branch(
        &mut self,
        taken: Value,
        then: &Expr,
        otherwise: &Expr,
        acc: Option<Value>,
    ) -> LowerResult<Value> {
        let then_block = self.b.create_block();
        let else_block = self.b.create_block();
        let merge = self.b.create_block();
        let result = self.b.append_block_param(merge, types::F32);
        self.b.ins().brif(taken, then_block, &[], else_block, &[]);
        let saved = self.memo.clone();
        for (block, arm) in [(then_block, then), (else_block, otherwise)] {
            self.b.switch_to_block(block);
            let v = self.expr(arm, acc)?;
            self.b.ins().jump(merge, &[BlockArg::Value(v)]);
            self.memo = saved.clone();
        }
        self.b.switch_to_block(merge);
        Ok(result)
    }

    fn unary(&mut self, l: Lanes, op: UnaryOp, x: Value) -> Value {
        match op {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Abs => self.b.ins().fabs(x),
            UnaryOp::Exp => math::exp(&mut self.b, l, x),
            UnaryOp::Log => math::log(&mut self.b, l, x),
            UnaryOp::Sqrt => self.b.ins().sqrt(x),
            UnaryOp::Recip => {
                let one = l.f(&mut self.b, 1.0);
                self.b.ins().fdiv(one, x)
            }
            UnaryOp::Tanh => math::tanh(&mut self.b, l, x),
            UnaryOp::Erf => math::erf(&mut self.b, l, x),
            UnaryOp::Sigmoid => math::sigmoid(&mut self.b, l, x),
            UnaryOp::Relu => {
                let zero = l.f(&mut self.b, 0.0);
                self.b.ins().fmax(x, zero)
            }
        }
    }

    fn binary(&mut self, l: Lanes, op: BinaryOp, a: Value, b: Value) -> Value {
        let cc = match op {
            BinaryOp::Add => return self.b.ins().fadd(a, b),
            BinaryOp::Sub => return self.b.ins().fsub(a, b),
            BinaryOp::Mul => return self.b.ins().fmul(a, b),
            BinaryOp::Div => return self.b.ins().fdiv(a, b),
            BinaryOp::Max => return self.b.ins().fmax(a, b),
            BinaryOp::Min => return self.b.ins().fmin(a, b),
            BinaryOp::Pow => return math::pow(&mut self.b, l, a, b),
            BinaryOp::Lt => FloatCC::LessThan,
            BinaryOp::Le => FloatCC::LessThanOrEqual,
            BinaryOp::Gt => FloatCC::GreaterThan,
            BinaryOp::Ge => FloatCC::GreaterThanOrEqual,
            BinaryOp::Eq => FloatCC::Equal,
        };
        let holds = self.b.ins().fcmp(cc, a, b);
        let one = l.f(&mut self.b, 1.0);
        let zero = l.f(&mut self.b, 0.0);
        l.select(&mut self.b, holds, one, zero)
    }

    /// `a ** c` for a constant exponent: multiplications and square roots for the common
    /// exponents (exact to an ulp or two, unlike `exp(c * log a)`), else [`math::pow`].
    ///
    /// `x ** 0.5` becomes `sqrt(x)`, which differs from C's `powf` only at `-0` (`-0`
    /// instead of `+0`) and `-inf` (NaN instead of `+inf`).
    fn pow_const(&mut self, l: Lanes, a: Value, c: f64) -> Value {
        let one = |s: &mut Self| l.f(&mut s.b, 1.0);
        match c {
            0.0 => one(self),
            1.0 => a,
            2.0 => self.b.ins().fmul(a, a),
            3.0 => {
                let sq = self.b.ins().fmul(a, a);
                self.b.ins().fmul(sq, a)
            }
            4.0 => {
                let sq = self.b.ins().fmul(a, a);
                self.b.ins().fmul(sq, sq)
            }
            -1.0 => {
                let o = one(self);
                self.b.ins().fdiv(o, a)
            }
            -2.0 => {
                let sq = self.b.ins().fmul(a, a);
                let o = one(self);
                self.b.ins().fdiv(o, sq)
            }
            0.5 => self.b.ins().sqrt(a),
            -0.5 => {
                let s = self.b.ins().sqrt(a);
                let o = one(self);
                self.b.ins().fdiv(o, s)
            }
            _ => {
                let cv = l.f(&mut self.b, c as f32);
                math::pow(&mut self.b, l, a, cv)
            }
        }
    }
}

/// Whether evaluating `e` reads memory.
fn has_load(e: &Expr) -> bool {
    let mut any = false;
    e.visit_loads(&mut |_, _| any = true);
    any
}
