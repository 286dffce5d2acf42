//! The innermost loop of a map (or of a contraction's epilogue) four points at a time,
//! in `f32x4`, with a scalar loop for the last `extent % 4` points.
//!
//! A kernel qualifies when, along its innermost loop variable `v`:
//! - every store is contiguous (its index is `... + v`), to a buffer no other store
//!   writes;
//! - every load is contiguous, strided by a small constant (a pooling window's
//!   elements: read lane by lane, or as two loads and a shuffle at a step of 2) or does
//!   not depend on `v` (then it is loaded once and broadcast), and a buffer the kernel
//!   writes is read only at the index it is written
//!   (so reading four old values before writing four new ones is what the scalar loop
//!   does point by point);
//! - everything else that depends on `v` has a vector form: arithmetic, comparisons,
//!   `select` without loads in its arms, and the inline `exp`/`log`/`tanh`/`sigmoid`/`pow`
//!   ([`super::math`] with [`Lanes::X4`], the same instructions lane by lane, so a lane
//!   computes the bits the scalar loop would). Random numbers, index values and nested
//!   reductions that depend on `v` keep the kernel scalar; those that do not are computed
//!   once per row as before and broadcast.
//!
//! When a map's innermost dimensions are shorter than a vector (a max pool's backward over
//! `[.., 12, 2]`, a window dimension of 1) and hold at most eight points together, the
//! lanes run along the dimension before them instead, each point of the short ones
//! unrolled inside a vector point; a store then steps by their size and is written lane
//! by lane. A nested reduction that varies along the lanes (the count of a window's
//! maxima) is folded lane by lane too.
//!
//! A reduction whose output is contiguous along the innermost variable of its space (a
//! sum over the batch of `g[b, j]`, a bias gradient) runs four outputs at once the same
//! way: each lane folds its own output over the reduced dimensions in the scalar loop's
//! order (sums in `f64`, two `f64x2` accumulators), so a lane's result has the scalar
//! loop's bits too.
//!
//! Loads and stores carry no alignment claim (`movups`): rows start anywhere.

use super::{LowerResult, Lowering};
use crate::cpu::lanes::Lanes;
use crate::cpu::strength;
use crate::hoist::Invariant;
use crate::ir::{
    BinaryOp, Dim, Expr, Index, Kernel, KernelBody, ReduceOp, ScalarType, Store, UnaryOp,
};
use crate::residue::{index_residues, residues_apart};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_frontend::Variable;
use std::collections::HashMap;

/// The largest step between the elements a load reads for consecutive points that still
/// runs in vectors (a pooling window's stride, a strided convolution's).
const MAX_STRIDE: i64 = 16;

/// How many vectors of a reduction's outputs one pass over its reduced points folds
/// ([`Lowering::folded_vectors`]): a cache line of contiguous outputs.
const FOLDED_VECTORS: usize = 4;

/// `e` with loop variable `var` replaced by `var + by` (nested reductions' own variables
/// come after it and are left as they are).
fn shifted_expr(e: &Expr, var: usize, by: i64) -> Expr {
    e.map_indices(&|ix| shifted_index(ix, var, by))
}

/// `ix` with loop variable `var` replaced by `var + by`.
fn shifted_index(ix: &Index, var: usize, by: i64) -> Index {
    ix.map_vars(&|v| match v == var {
        true => Index::Var(v).add(Index::Const(by)),
        false => Index::Var(v),
    })
}

/// How a kernel's innermost loop runs in vectors.
#[derive(Clone)]
pub(super) struct Plan {
    /// The innermost loop variable of the kernel's space.
    pub(super) var: usize,
    /// The stores of a point (a contraction's epilogue or a reduction: one, to its
    /// output).
    stores: Vec<Store>,
    /// What `Acc` is.
    acc: Acc,
    /// The space's dimensions after `var` (a map's last few, all of fixed extent, each
    /// point of them unrolled inside a vector point): empty when `var` is the innermost.
    unrolled: Vec<Dim>,
    /// A chunked map's transcendentals computed by a loop of their own before the
    /// points (`super::stages`).
    stages: Option<super::stages::Stages>,
    /// A reduction whose lanes' dimension may hold [`FOLDED_VECTORS`] vectors: it folds
    /// that many at a time first ([`Lowering::folded_vectors`]).
    folds_wide: bool,
}

/// The most points of a map's innermost dimensions that a vector point unrolls when the
/// lanes run along the dimension before them (a pooling window's `[.., 12, 2]`).
const MAX_UNROLLED_POINTS: u64 = 8;

#[derive(Clone)]
enum Acc {
    /// Not bound (a map).
    None,
    /// A contraction's output at the point (the product, before the epilogue).
    Output(Store),
    /// A reduction's value folded over its dimensions.
    Fold {
        reduce: Vec<Dim>,
        op: ReduceOp,
        value: Expr,
    },
}

/// The plan for `kernel`'s innermost loop, if it qualifies (see the module docs).
pub(super) fn plan(kernel: &Kernel) -> Option<Plan> {
    let (space, stores, acc) = match &kernel.body {
        KernelBody::Map { space, stores } => (space.clone(), stores.clone(), Acc::None),
        KernelBody::Contract(c) => {
            let space = c.space();
            let vars: Vec<Index> = (0..space.len()).map(Index::Var).collect();
            let store = Store {
                buf: c.out,
                index: Index::row_major(&vars, &space),
                value: c.epilogue.clone(),
            };
            (space, vec![store.clone()], Acc::Output(store))
        }
        KernelBody::Reduce {
            space,
            reduce,
            op,
            value,
            out,
        } => (
            space.clone(),
            vec![out.clone()],
            Acc::Fold {
                reduce: reduce.clone(),
                op: *op,
                value: value.clone(),
            },
        ),
        KernelBody::Parts(_) | KernelBody::ScatterAdd(_) => return None,
    };
    // A contraction's epilogue has one row dimension; a map's or reduction's maybe two.
    let rows = match acc {
        Acc::Output(_) => 1,
        _ => super::super::row_dims(&space),
    };
    let (v, unrolled) = lanes_dimension(&space, rows, matches!(acc, Acc::None))?;
    let check = Check {
        kernel,
        point: Index::row_major(
            &(0..space.len()).map(Index::Var).collect::<Vec<_>>(),
            &space,
        ),
        space: &space,
        v,
        stores: &stores,
    };
    for (i, s) in stores.iter().enumerate() {
        // Contiguous, or (lanes along a dimension before unrolled ones) strided.
        let step = s.index.coefficient(v);
        let laid_out = match step {
            Some(1) => true,
            Some(c) => !unrolled.is_empty() && (2..=MAX_STRIDE).contains(&c),
            None => false,
        };
        // Stores into one buffer (a concatenation's blocks) must write disjoint elements,
        // so that writing four points of one, then of the other, is the scalar order's
        // result.
        let alone = stores
            .iter()
            .skip(i + 1)
            .all(|t| t.buf != s.buf || check.apart(s, t));
        if !laid_out || !alone {
            return None;
        }
        check.expr(&s.value, !matches!(acc, Acc::None))?;
    }
    if let Acc::Fold { value, .. } = &acc {
        check.expr(value, false)?;
    }
    // A chunked map's function runs at most a row of `n` points a loop (its rows may be
    // every chunk of an `i0`): a stage buffer of `n` points.
    let stages = match (&acc, unrolled.is_empty(), space.as_slice()) {
        (Acc::None, true, [_, Dim::Fixed(n)])
            if crate::cpu::rows_of(&kernel.body) == crate::cpu::Rows::Chunks
                && *n <= super::stages::MOST_POINTS =>
        {
            let values: Vec<&Expr> = stores.iter().map(|s| &s.value).collect();
            let exprs = super::stages::stages_of(&values, &|e| varies_along(e, v));
            Some(super::stages::Stages { exprs, points: *n }).filter(|s| !s.exprs.is_empty())
        }
        _ => None,
    };
    let folds_wide = matches!(acc, Acc::Fold { .. })
        && !matches!(space[v], Dim::Fixed(n) if n < (Lanes::WIDTH as u64) * FOLDED_VECTORS as u64);
    Some(Plan {
        var: v,
        stores,
        acc,
        unrolled,
        stages,
        folds_wide,
    })
}

/// The dimension of `space` the lanes run along, and the extents after it: the innermost
/// if it holds at least a vector's points; for a map (`unroll`), else the innermost that
/// does when the dimensions after it (not the `rows` dimensions) hold at most
/// [`MAX_UNROLLED_POINTS`] points together. None: nothing to gain.
fn lanes_dimension(space: &[Dim], rows: usize, unroll: bool) -> Option<(usize, Vec<Dim>)> {
    let wide = |d: &Dim| !matches!(d, Dim::Fixed(n) if *n < Lanes::WIDTH as u64);
    let last = space.len().checked_sub(1)?;
    if wide(&space[last]) {
        return Some((last, Vec::new()));
    }
    if !unroll {
        return None;
    }
    let mut points = 1u64;
    for v in (rows..last).rev() {
        let Dim::Fixed(n) = space[v + 1] else {
            return None;
        };
        points = points.checked_mul(n)?;
        if points > MAX_UNROLLED_POINTS {
            return None;
        }
        // Every dimension after `v` is fixed: each was checked as `points` grew.
        if wide(&space[v]) {
            return Some((v, space[v + 1..].to_vec()));
        }
    }
    None
}

/// Whether a fold of `value` over `dims` (inside `kernel`, with `bound` loop variables
/// bound outside it) runs its last dimension four points at a time: a row of at least
/// eight points, along which `value` varies and has a vector form, reading no buffer the
/// kernel writes and dividing no index.
pub(super) fn fold_has_lanes(kernel: &Kernel, dims: &[Dim], value: &Expr, bound: usize) -> bool {
    let Some(Dim::Fixed(n)) = dims.last() else {
        return false;
    };
    if *n < 2 * Lanes::WIDTH as u64 {
        return false;
    }
    let written = kernel.body.written_slots();
    let mut reads_written = false;
    value.visit_loads(&mut |buf, _| reads_written |= written.contains(&buf));
    let divides = !strength::divisions_in(&[value], &[]).is_empty();
    let check = Check {
        kernel,
        space: &[],
        point: Index::Const(0),
        v: bound + dims.len() - 1,
        stores: &[],
    };
    !reads_written && !divides && check.expr(value, false) == Some(true)
}

/// Whether an index inside `value` depends on loop variable `v` (or is not affine in
/// it): a nested reduction of it differs from one point of the lanes to the next.
fn varies_along(value: &Expr, v: usize) -> bool {
    let mut indices = Vec::new();
    Expr::indices_of(vec![value], &mut indices);
    indices.iter().any(|ix| ix.coefficient(v) != Some(0))
}

/// Whether the expressions of a kernel have a vector form along `v`.
struct Check<'a> {
    kernel: &'a Kernel,
    space: &'a [Dim],
    /// The row-major index of the point in the space.
    point: Index,
    v: usize,
    stores: &'a [Store],
}

impl Check<'_> {
    /// `Some(varies)` when `e` can be computed for four points at once (`varies`: whether
    /// it depends on `v`), `None` when it cannot. `acc` says whether `Acc` is bound (it
    /// varies).
    fn expr(&self, e: &Expr, acc: bool) -> Option<bool> {
        Some(match e {
            Expr::Load { buf, index } => self.load(*buf, index)?,
            // A masked load of a data-dependent row: scalar code only.
            Expr::Gather { .. } => return None,
            Expr::Const(_) => false,
            Expr::Acc => {
                if !acc {
                    return None;
                }
                true
            }
            Expr::IndexValue(ix) => {
                if ix.coefficient(self.v)? != 0 {
                    return None;
                }
                false
            }
            Expr::Uniform { index, step, .. } => {
                if index.coefficient(self.v)? != 0 || self.expr(step, acc)? {
                    return None;
                }
                false
            }
            Expr::Unary(_, x) => self.expr(x, acc)?,
            Expr::Binary(_, a, b) => {
                let a = self.expr(a, acc)?;
                let b = self.expr(b, acc)?;
                a || b
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let varies = self.expr(cond, acc)? | self.expr(then, acc)?;
                let varies = varies | self.expr(otherwise, acc)?;
                // The scalar code branches around the arms' loads (they may be out of
                // range when not taken); lanes compute both arms, so only loads that are
                // in range at every point may be in them.
                if varies && !(self.in_range(then) && self.in_range(otherwise)) {
                    return None;
                }
                varies
            }
            Expr::Reduce { value, .. } => {
                // Computed once per row and broadcast if it does not depend on `v`; else
                // folded lane by lane (a max pool's count of maxima per window).
                let mut writes = false;
                value.visit_loads(&mut |buf, _| writes |= self.written(buf));
                if writes {
                    return None;
                }
                if !varies_along(value, self.v) {
                    return Some(false);
                }
                self.expr(value, false)?
            }
        })
    }

    fn load(&self, buf: usize, index: &Index) -> Option<bool> {
        let c = index.coefficient(self.v)?;
        if self.written(buf) {
            // Only the old value at the point itself.
            let same = self
                .stores
                .iter()
                .any(|s| s.buf == buf && s.index == *index);
            return (c == 1 && same).then_some(true);
        }
        match c {
            0 => Some(false),
            1..=MAX_STRIDE => Some(true),
            _ => None,
        }
    }

    /// Whether every load in `e` is in range at every point of the space: it reads the
    /// point itself, in a buffer of the space's size (a mask or a gradient of the same
    /// shape as the output, the common arms of a `select`).
    fn in_range(&self, e: &Expr) -> bool {
        let mut all = true;
        e.visit_loads(&mut |buf, index| {
            all &= index == Some(&self.point)
                && same_size(&self.kernel.buffers[buf].shape, self.space);
        });
        all
    }

    /// Whether two stores into one buffer provably write disjoint elements.
    fn apart(&self, a: &Store, b: &Store) -> bool {
        let shape = &self.kernel.buffers[a.buf].shape;
        residues_apart(
            &index_residues(self.space, &a.index, shape),
            &index_residues(self.space, &b.index, shape),
        )
    }

    fn written(&self, buf: usize) -> bool {
        self.stores.iter().any(|s| s.buf == buf)
    }
}

/// Whether two shapes have the same number of elements at every batch size.
fn same_size(a: &[Dim], b: &[Dim]) -> bool {
    let size = |shape: &[Dim]| {
        shape
            .iter()
            .fold((1u64, 0usize), |(fixed, batch), d| match d {
                Dim::Fixed(n) => (fixed.saturating_mul(*n), batch),
                Dim::Batch => (fixed, batch + 1),
            })
    };
    size(a) == size(b)
}

/// Broadcasts of scalar values, vector loads and element-wise results within one vector
/// point (or one point of a vector fold's loops).
struct PointCache {
    /// The variable whose four consecutive values the lanes hold.
    var: usize,
    splats: HashMap<Value, Value>,
    loads: HashMap<(usize, Index), Value>,
    /// An op on the same values gives the same value: a subexpression several stores
    /// share (an LSTM's `c` in the stores of `[o tanh(c), c]`) is computed once.
    ops: HashMap<PureOp, Value>,
}

/// An element-wise op and its operands, as [`PointCache::ops`] keys them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PureOp {
    Unary(UnaryOp, Value),
    Binary(BinaryOp, Value, Value),
}

impl PointCache {
    fn new(var: usize) -> PointCache {
        PointCache {
            var,
            splats: HashMap::new(),
            loads: HashMap::new(),
            ops: HashMap::new(),
        }
    }
}

impl<'k, 'f> Lowering<'k, 'f> {
    /// The innermost loop over `lo..hi` (the next loop variable): four points at a time,
    /// then the rest one at a time with the scalar `body`.
    /// A map with stages runs them in a loop of their own first (`super::stages`).
    pub(super) fn vector_loop(
        &mut self,
        lo: Value,
        hi: Value,
        invariants: &[Invariant],
        body: &mut super::Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let n = self.b.ins().isub(hi, lo);
        let zero = self.b.ins().iconst(types::I64, 0);
        let n = self.b.ins().smax(n, zero);
        let whole = self.b.ins().band_imm_s(n, -Lanes::WIDTH);
        let vector_hi = self.b.ins().iadd(lo, whole);
        let depth = self.vars.len();
        // The invariants of the outer loops only: what depends on this loop's variable
        // is computed four points at a time.
        let outer: Vec<Invariant> = invariants
            .iter()
            .filter(|i| i.level <= depth)
            .cloned()
            .collect();
        let unrolled = self
            .vector
            .as_ref()
            .map(|p| p.unrolled.clone())
            .unwrap_or_default();
        let folds = self.vector.as_ref().is_some_and(|p| p.folds_wide);
        match self.vector.as_ref().and_then(|p| p.stages.clone()) {
            Some(stages) => self.staged_vector_loops(lo, vector_hi, &stages, &outer)?,
            None if folds => {
                // Several vectors of outputs a pass over the reduced points first.
                let wide = Lanes::WIDTH * FOLDED_VECTORS as i64;
                let whole = self.b.ins().band_imm_s(n, -wide);
                let wide_hi = self.b.ins().iadd(lo, whole);
                self.counted_loop(lo, wide_hi, wide, &mut |l| {
                    l.hoist(&outer)?;
                    l.folded_vectors(FOLDED_VECTORS)
                })?;
                self.counted_loop(wide_hi, vector_hi, Lanes::WIDTH, &mut |l| {
                    l.hoist(&outer)?;
                    l.vector_point()
                })?
            }
            None => self.counted_loop(lo, vector_hi, Lanes::WIDTH, &mut |l| {
                l.hoist(&outer)?;
                l.unrolled_nest(&unrolled, &outer, &mut |l| l.vector_point())
            })?,
        }
        self.counted_loop(vector_hi, hi, 1, &mut |l| {
            l.hoist(invariants)?;
            l.nest(&unrolled, invariants, body)
        })
    }

    /// `e` for the four points of the innermost variable's current value, as an `f32x4`
    /// (broadcast when it is the same for all four).
    pub(super) fn vector_value(&mut self, e: &Expr) -> LowerResult<Value> {
        let var = self
            .vector
            .as_ref()
            .map(|p| p.var)
            .ok_or_else(|| self.error("vector value without a plan (emitter bug)"))?;
        let mut cache = PointCache::new(var);
        let v = self.vector_expr(e, None, &mut cache)?;
        self.broadcast(v, e, &mut cache)
    }

    /// Four points of the plan's stores, the innermost variable bound to the first.
    pub(super) fn vector_point(&mut self) -> LowerResult<()> {
        let plan = self
            .vector
            .clone()
            .ok_or_else(|| self.error("vector point without a plan (emitter bug)"))?;
        let mut cache = PointCache::new(plan.var);
        let acc = match &plan.acc {
            Acc::None => None,
            Acc::Output(out) => Some(self.vector_load(out.buf, &out.index, &mut cache)?),
            Acc::Fold { reduce, op, value } => {
                Some(self.vector_fold(plan.var, reduce, *op, value)?)
            }
        };
        self.vector_stores(&plan.stores, plan.var, acc, &mut cache)
    }

    /// Four points of `stores` (the lanes' variable `var`), `acc` their `Acc`: every value
    /// first, then the stores.
    fn vector_stores(
        &mut self,
        stores: &[Store],
        var: usize,
        acc: Option<Value>,
        cache: &mut PointCache,
    ) -> LowerResult<()> {
        let mut values = Vec::with_capacity(stores.len());
        for s in stores {
            let v = self.vector_expr(&s.value, acc, cache)?;
            values.push(self.broadcast(v, &s.value, cache)?);
        }
        for (s, value) in stores.iter().zip(values) {
            let addr = self.address(s.buf, &s.index)?;
            let value = match self.kernel.buffers[s.buf].dtype {
                ScalarType::F32 => value,
                ScalarType::I32 => self.b.ins().fcvt_to_sint_sat(types::I32X4, value),
            };
            match s.index.coefficient(var) {
                Some(1) => {
                    self.b.ins().store(MemFlagsData::new(), value, addr, 0);
                }
                // Strided (the plan allows at most MAX_STRIDE): lane by lane.
                step => {
                    let step = step.ok_or_else(|| self.error("a store that is not strided"))?;
                    for k in 0..Lanes::WIDTH {
                        let lane = self.b.ins().extractlane(value, k as u8);
                        let offset = (k * step * 4) as i32;
                        self.b.ins().store(MemFlagsData::new(), lane, addr, offset);
                    }
                }
            }
        }
        Ok(())
    }

    /// `groups` vectors of a reduction's outputs (the lanes' variable bound to the first
    /// of `4 * groups` consecutive points), folded in one pass over the reduced points:
    /// each vector's loads and accumulators are its own, so every lane adds what it adds
    /// in [`Lowering::vector_point`], in the same order (the same bits), but the passes
    /// read each cache line of a contiguous row once instead of once per vector, and the
    /// vectors' chains of additions overlap instead of each waiting on its own latency.
    fn folded_vectors(&mut self, groups: usize) -> LowerResult<()> {
        let plan = self
            .vector
            .clone()
            .ok_or_else(|| self.error("folded vectors without a plan (emitter bug)"))?;
        let Acc::Fold { reduce, op, value } = &plan.acc else {
            return Err(self.error("folded vectors of a kernel that is no reduction (emitter bug)"));
        };
        let shift = |g: usize| Lanes::WIDTH * g as i64;
        let values: Vec<Expr> = (0..groups)
            .map(|g| shifted_expr(value, plan.var, shift(g)))
            .collect();
        let accs = self.vector_folds(plan.var, reduce, *op, &values)?;
        for (g, acc) in accs.into_iter().enumerate() {
            let stores: Vec<Store> = plan
                .stores
                .iter()
                .map(|s| Store {
                    buf: s.buf,
                    index: shifted_index(&s.index, plan.var, shift(g)),
                    value: shifted_expr(&s.value, plan.var, shift(g)),
                })
                .collect();
            let mut cache = PointCache::new(plan.var);
            self.vector_stores(&stores, plan.var, Some(acc), &mut cache)?;
        }
        Ok(())
    }

    /// `e` for the four points as an `f32x4`, or `None` when it is the same for all four
    /// (then [`Lowering::broadcast`] computes it once, as a scalar).
    fn vector_expr(
        &mut self,
        e: &Expr,
        acc: Option<Value>,
        cache: &mut PointCache,
    ) -> LowerResult<Option<Value>> {
        let l = self.x4();
        if let Some((_, v)) = self.staged.iter().find(|(staged, _)| staged == e) {
            return Ok(Some(*v));
        }
        Ok(match e {
            Expr::Load { buf, index } => {
                if index.coefficient(cache.var) == Some(0) {
                    None
                } else {
                    Some(self.vector_load(*buf, index, cache)?)
                }
            }
            Expr::Acc => acc,
            Expr::Reduce { op, extent, value } => match varies_along(value, cache.var) {
                true => Some(self.vector_fold(cache.var, extent, *op, value)?),
                false => None,
            },
            // The plan refuses gathers: never reached with one.
            Expr::Const(_) | Expr::IndexValue(_) | Expr::Uniform { .. } | Expr::Gather { .. } => {
                None
            }
            Expr::Unary(op, x) => match self.vector_expr(x, acc, cache)? {
                Some(x) => Some(
                    *cache
                        .ops
                        .entry(PureOp::Unary(*op, x))
                        .or_insert_with(|| self.unary(l, *op, x)),
                ),
                None => None,
            },
            Expr::Binary(op, a, b) => {
                let va = self.vector_expr(a, acc, cache)?;
                let vb = self.vector_expr(b, acc, cache)?;
                if va.is_none() && vb.is_none() {
                    return Ok(None);
                }
                let va = self.broadcast(va, a, cache)?;
                match (op, &**b) {
                    (BinaryOp::Pow, Expr::Const(c)) => Some(self.pow_const(l, va, *c)),
                    _ => {
                        let vb = self.broadcast(vb, b, cache)?;
                        Some(
                            *cache
                                .ops
                                .entry(PureOp::Binary(*op, va, vb))
                                .or_insert_with(|| self.binary(l, *op, va, vb)),
                        )
                    }
                }
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let vc = self.vector_expr(cond, acc, cache)?;
                let vt = self.vector_expr(then, acc, cache)?;
                let vo = self.vector_expr(otherwise, acc, cache)?;
                if vc.is_none() && vt.is_none() && vo.is_none() {
                    return Ok(None);
                }
                let vc = self.broadcast(vc, cond, cache)?;
                let vt = self.broadcast(vt, then, cache)?;
                let vo = self.broadcast(vo, otherwise, cache)?;
                let zero = l.f(&mut self.b, 0.0);
                // `NotEqual` is true for NaN too, as `cond != 0.0` is.
                let taken = self.b.ins().fcmp(FloatCC::NotEqual, vc, zero);
                Some(l.select(&mut self.b, taken, vt, vo))
            }
        })
    }

    /// `value` folded with `op` over `reduce` (new loop variables, one point at a time) for
    /// the four outputs at once, as `f32x4`: lane by lane what [`Lowering::fold`] computes.
    fn vector_fold(
        &mut self,
        var: usize,
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
    ) -> LowerResult<Value> {
        let folded = self.vector_folds(var, reduce, op, std::slice::from_ref(value))?;
        Ok(folded[0])
    }

    /// [`Lowering::vector_fold`] of several values in the same loops, each into
    /// accumulators of its own.
    fn vector_folds(
        &mut self,
        var: usize,
        reduce: &[Dim],
        op: ReduceOp,
        values: &[Expr],
    ) -> LowerResult<Vec<Value>> {
        let accs: Vec<Vec<Variable>> = values.iter().map(|_| self.lane_accumulators(op)).collect();
        let refs: Vec<&Expr> = values.iter().collect();
        self.in_folds(&refs, |l| {
            l.nest(reduce, &[], &mut |l| {
                for (value, accs) in values.iter().zip(&accs) {
                    l.fold_lanes(var, op, value, accs)?;
                }
                Ok(())
            })
        })?;
        let mut folded = Vec::with_capacity(accs.len());
        for accs in &accs {
            folded.push(match op {
                ReduceOp::Sum => {
                    let low = self.b.use_var(accs[0]);
                    let high = self.b.use_var(accs[1]);
                    let low = self.b.ins().fvdemote(low);
                    let high = self.b.ins().fvdemote(high);
                    // The two low halves side by side.
                    self.shuffle(low, high, [0, 1, 4, 5])
                }
                ReduceOp::Max | ReduceOp::Min => self.b.use_var(accs[0]),
            });
        }
        Ok(folded)
    }

    /// A fold's accumulators of four lanes, at the fold's identity: sums in two `f64x2`
    /// halves, max and min in one `f32x4`.
    fn lane_accumulators(&mut self, op: ReduceOp) -> Vec<Variable> {
        let accs: Vec<(Variable, Value)> = match op {
            ReduceOp::Sum => {
                let zero = self.b.ins().f64const(0.0);
                let zero = self.b.ins().splat(types::F64X2, zero);
                (0..2)
                    .map(|_| (self.b.declare_var(types::F64X2), zero))
                    .collect()
            }
            ReduceOp::Max | ReduceOp::Min => {
                let x = if op == ReduceOp::Max {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                };
                let init = Lanes::X4.f(&mut self.b, x);
                vec![(self.b.declare_var(types::F32X4), init)]
            }
        };
        for (acc, init) in &accs {
            self.b.def_var(*acc, *init);
        }
        accs.into_iter().map(|(a, _)| a).collect()
    }

    /// Folds `value` at the four points of the lanes (`var` their variable) into `accs`
    /// ([`Lowering::lane_accumulators`]), each lane into its own accumulator lane.
    fn fold_lanes(
        &mut self,
        var: usize,
        op: ReduceOp,
        value: &Expr,
        accs: &[Variable],
    ) -> LowerResult<()> {
        let mut cache = PointCache::new(var);
        let v = self.vector_expr(value, None, &mut cache)?;
        let v = self.broadcast(v, value, &mut cache)?;
        match op {
            ReduceOp::Sum => {
                let [low, high] = self.promote(v);
                for (acc, part) in accs.iter().zip([low, high]) {
                    let a = self.b.use_var(*acc);
                    let sum = self.b.ins().fadd(a, part);
                    self.b.def_var(*acc, sum);
                }
            }
            ReduceOp::Max | ReduceOp::Min => {
                let a = self.b.use_var(accs[0]);
                let folded = if op == ReduceOp::Max {
                    self.b.ins().fmax(a, v)
                } else {
                    self.b.ins().fmin(a, v)
                };
                self.b.def_var(accs[0], folded);
            }
        }
        Ok(())
    }

    /// A fold over a row (`dims`' last extent, `var` its variable once bound) four points
    /// at a time in lanes, then the rest one at a time with `point` into the scalar
    /// accumulator `acc`; the lanes are added to (or compared with) `acc` at the end.
    /// For a fold that [`fold_has_lanes`]. Sums (in `f64`) are added in another order
    /// than one point at a time: four partial sums, then those.
    pub(super) fn lane_fold(
        &mut self,
        dims: &[Dim],
        op: ReduceOp,
        value: &Expr,
        invariants: &[Invariant],
        acc: Variable,
        point: &mut super::Body<'_, 'k, 'f>,
    ) -> LowerResult<()> {
        let Some((row, outer)) = dims.split_last() else {
            return Err(self.error("a fold in lanes without dimensions (emitter bug)"));
        };
        let accs = self.lane_accumulators(op);
        self.nest(outer, invariants, &mut |l| {
            let lo = l.b.ins().iconst(types::I64, 0);
            let hi = l.extent(*row);
            let whole = l.b.ins().band_imm_s(hi, -Lanes::WIDTH);
            let var = l.vars.len();
            let outer: Vec<Invariant> = invariants
                .iter()
                .filter(|i| i.level <= var)
                .cloned()
                .collect();
            l.counted_loop(lo, whole, Lanes::WIDTH, &mut |l| {
                l.hoist(&outer)?;
                l.fold_lanes(var, op, value, &accs)
            })?;
            l.counted_loop(whole, hi, 1, &mut |l| {
                l.hoist(invariants)?;
                point(l)
            })
        })?;
        // Two f64 lanes in each of a sum's halves, four f32 lanes of a max or min.
        let count = match op {
            ReduceOp::Sum => 2,
            ReduceOp::Max | ReduceOp::Min => 4,
        };
        let mut folded = self.b.use_var(acc);
        for &lanes in &accs {
            let v = self.b.use_var(lanes);
            for k in 0..count {
                let x = self.b.ins().extractlane(v, k);
                folded = match op {
                    ReduceOp::Sum => self.b.ins().fadd(folded, x),
                    ReduceOp::Max => self.b.ins().fmax(folded, x),
                    ReduceOp::Min => self.b.ins().fmin(folded, x),
                };
            }
        }
        self.b.def_var(acc, folded);
        Ok(())
    }

    /// An `f32x4` as two `f64x2`: lanes 0-1 and lanes 2-3.
    fn promote(&mut self, v: Value) -> [Value; 2] {
        let low = self.b.ins().fvpromote_low(v);
        let upper = self.shuffle(v, v, [2, 3, 2, 3]);
        let high = self.b.ins().fvpromote_low(upper);
        [low, high]
    }

    /// The `f32x4` whose lane `i` is lane `lanes[i]` of `a` (0-3) or `b` (4-7).
    fn shuffle(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        // Cranelift shuffles bytes of `i8x16` values.
        let bytes: Vec<u8> = lanes
            .iter()
            .flat_map(|&lane| (0..4).map(move |k| lane * 4 + k))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let as_bytes = |l: &mut Self, v: Value| l.b.ins().bitcast(types::I8X16, little, v);
        let (a, b) = (as_bytes(self, a), as_bytes(self, b));
        let shuffled = self.b.ins().shuffle(a, b, mask);
        let f32x4: Type = types::F32X4;
        self.b.ins().bitcast(f32x4, little, shuffled)
    }

    /// `v` itself, or `e` computed once as a scalar and put in every lane.
    fn broadcast(
        &mut self,
        v: Option<Value>,
        e: &Expr,
        cache: &mut PointCache,
    ) -> LowerResult<Value> {
        if let Some(v) = v {
            return Ok(v);
        }
        let s = self.expr(e, None)?;
        if let Some(v) = cache.splats.get(&s) {
            return Ok(*v);
        }
        let v = Lanes::X4.splat_float(&mut self.b, s);
        cache.splats.insert(s, v);
        Ok(v)
    }

    /// The elements of `buf` at `index` for the four points (`index` is the first
    /// point's; consecutive points' elements are `c` apart, `c` its coefficient in the
    /// lanes' variable), as `f32x4`. Only those elements are read: at a step of 2, two
    /// overlapping loads of four (elements 0-3 and 3-6) and a shuffle; at larger steps,
    /// one load per lane.
    fn vector_load(
        &mut self,
        buf: usize,
        index: &Index,
        cache: &mut PointCache,
    ) -> LowerResult<Value> {
        let key = (buf, index.clone());
        if let Some(v) = cache.loads.get(&key) {
            return Ok(*v);
        }
        let step = index
            .coefficient(cache.var)
            .filter(|c| (1..=MAX_STRIDE).contains(c))
            .ok_or_else(|| self.error("a vector load that is not strided (emitter bug)"))?;
        let addr = self.address(buf, index)?;
        let dtype = self.kernel.buffers[buf].dtype;
        let flags = MemFlagsData::new();
        let load_x4 = |l: &mut Self, offset: i32| match dtype {
            ScalarType::F32 => l.b.ins().load(types::F32X4, flags, addr, offset),
            ScalarType::I32 => {
                let i = l.b.ins().load(types::I32X4, flags, addr, offset);
                l.b.ins().fcvt_from_sint(types::F32X4, i)
            }
        };
        // Every offset is at most 3 * MAX_STRIDE elements of 4 bytes.
        let v = match step {
            1 => load_x4(self, 0),
            2 => {
                let low = load_x4(self, 0);
                let high = load_x4(self, 12);
                self.shuffle(low, high, [0, 2, 5, 7])
            }
            _ => {
                let lanes: Vec<Value> = (0..4)
                    .map(|k| {
                        let offset = (k * step * 4) as i32;
                        match dtype {
                            ScalarType::F32 => self.b.ins().load(types::F32, flags, addr, offset),
                            ScalarType::I32 => {
                                let i = self.b.ins().load(types::I32, flags, addr, offset);
                                self.b.ins().fcvt_from_sint(types::F32, i)
                            }
                        }
                    })
                    .collect();
                let mut v = self.b.ins().scalar_to_vector(types::F32X4, lanes[0]);
                for (k, &lane) in lanes.iter().enumerate().skip(1) {
                    v = self.b.ins().insertlane(v, lane, k as u8);
                }
                v
            }
        };
        cache.loads.insert(key, v);
        Ok(v)
    }
}
