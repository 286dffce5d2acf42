//! Fusion: which graph values get a buffer of their own and which are computed inside
//! the expressions of the kernels that use them.
//!
//! Fusion here is substitution in the kernel IR (as in XLA's loop and input fusion, or
//! tinygrad's lazy elementwise ops): a value placed [`Placement::Inline`] has no kernel;
//! wherever a kernel needs its element at some coordinates, its op is rebuilt there from
//! its operands' elements. So an element-wise or broadcast chain becomes one loop, a
//! reduction's element-wise input becomes its prologue, and the kernels of the values a
//! chain feeds read it without a buffer in between.
//!
//! # The rules, in the order they are applied
//!
//! 1. **Storage is required** (rule `needs-storage`) for graph outputs, matrix-product
//!    operands (the product reads strided memory), operands of a reshape that is not only
//!    adding or removing dimensions of 1 (its coordinates are a flat-index remap), the
//!    operand of a transpose folded into a product's strides, the operands of im2col
//!    and col2im (which read each element once per tap of the window), and a cast to
//!    `i32` (the store truncates). Such a value is a buffer, or a view of one (a
//!    reshape, a folded transpose). An im2col whose columns only products read, as
//!    their right-hand operand through a reshape to `[batch, C kh kw, OH OW]` (a
//!    convolution's forward), is a view too (rule `window`): the products read the
//!    image through a window ([`ImageWindow`](strata_kernels::ir::ImageWindow), an
//!    implicit-GEMM convolution) and the `kh kw` times larger columns are never stored.
//!    A training step's columns, which the weight's gradient reads too, stay a buffer.
//! 2. **Nested reductions** (rule `nested-reduce`: such a reduction starts no epilogue
//!    chain): a reduction whose reduced extent is fixed and at most
//!    [`NESTED_REDUCE_MAX_POINTS`] points, that is neither an output nor an update
//!    and needs no storage, and that is not a sum of a product over its batch axes
//!    (rule 3), is computed inside the expressions of its users, as an
//!    [`Expr::Reduce`](strata_kernels::ir::Expr) (a softmax's row max and row sum inside
//!    the map writing the probabilities). So is a reduction of a constant over any extent
//!    (`sum(1.0)` over the batch is the batch size), as its closed form. The CPU computes
//!    a nested reduction once per row of the loops it depends on (hoisted out of the
//!    inner ones); the GPU once per point that reads it, which the extent limit keeps
//!    cheap. A reduction over the batch or a long row keeps its own kernel.
//! 3. **Summed products** (rule `summed-product`): a sum over batch axes of a
//!    matrix product (`reduce_sum(aᵀ x g, [0])`, the weight gradient of a dense layer over
//!    `[batch, T, d]`, which autodiff writes as a batched product then a sum because
//!    `batch * T` is no dimension of the graph IR) is one contraction summed over those
//!    axes ([`Contraction::summed`](strata_kernels::ir::Contraction)), when the product
//!    has no other user and is neither an output, an update nor needed in storage. The
//!    product is placed in the reduction's kernel (as a link of its epilogue chain): the
//!    `[batch, out, in]` temporary never exists, and the CPU runtime runs the sum as the
//!    depth of one `gemm` call (`k = batch * T`) when the operands are contiguous. The
//!    reduction then starts its epilogue chain as any other (rule `epilogue`). This is
//!    decided here rather than rewritten in the graph because the graph cannot reshape
//!    `[batch, T, d]` to `[batch * T, d]`: a shape holds the batch at most once, as a
//!    factor of itself alone.
//! 4. **Epilogue fusion** (rule `epilogue`): a matrix product or reduction `p` whose
//!    result flows through a chain of element-wise ops over `p`'s own coordinates (each
//!    link the single user of the previous one, of `p`'s shape, neither output nor
//!    update, its other operands not computed from `p`) is one kernel: the chain becomes
//!    the product's or reduction's epilogue with [`Expr::Acc`](strata_kernels::ir::Expr)
//!    for `p`'s element, writing the chain's last value. Bias, activation, residual add
//!    and the backward's masks land here. Other operands of the links are loaded or
//!    inlined; the kernel's output buffer is always a fresh one, never one of them (the
//!    CPU runs the product into the output before the epilogue reads it).
//!
//!    **Terms** (rule `terms`): when a link of an unbatched product's chain adds another
//!    unbatched product `q` of the same shape, directly or through additions each used
//!    once (`(x W_ihᵀ + b_ih) + b_hh`), and every link from the product to it is an
//!    addition, `q` is a term of the product's contraction
//!    ([`Contraction::terms`](strata_kernels::ir::Contraction)): its element joins `acc`,
//!    and the additions' expression leaves it out. A recurrent training step's input
//!    product and recurrent product are one contraction this way.
//! 5. **Inlining** (rule `inline`) of element-wise values (unary, binary, broadcast,
//!    one-hot, gather, slice, stop-gradient, transpose, unit reshape, random-uniform) in
//!    topological order, when
//!    storage is not required and
//!    - the value has one use (one user, or only an update) not counting nested
//!      reductions, or its inlined tree holds no expensive op (`exp`, `log`, `sqrt`,
//!      `tanh`, `sigmoid`, `pow`, `random_uniform`'s ten Philox rounds): the cost guard,
//!      so an expensive producer is evaluated at most once per element and use, plus
//!      once per nested reduction reading it (the price of a kernel and a buffer fewer:
//!      `exp(x - max)` feeds both a softmax's row sum and its division), unless a batch
//!      row holds [`EVALUATED_TWICE_MIN_POINTS`] or more of it: then an expensive value
//!      read by a nested reduction and by another user gets its own buffer, and is
//!      evaluated once per element (an attention softmax's `exp`). Uses that all
//!      reach one concatenation of operands of one shape at the value's own point count
//!      as one: such a concatenation is one map with a store per operand
//!      ([`one_point_concat`]), whose point computes a shared subexpression once (an
//!      LSTM step's `c` in `[o tanh(c), c]`, and the gates its tape records);
//!    - and, if its tree is expensive, no user broadcasts it (which would evaluate it
//!      once per broadcast copy), except along trailing axes over at most
//!      [`NESTED_REDUCE_MAX_POINTS`] points: a per-row value (`log` of a row sum, shape
//!      `[.., 1]`) read across its row, which the CPU computes once per row (hoisted)
//!      and the GPU once per point of the row.
//!
//!    A nested reduction counts as cheap: it evaluates its operand a bounded number of
//!    times per row, whatever reads it; but a tree holding one is not inlined into a
//!    user that broadcasts it as an expensive tree would not be (a max pool's backward
//!    divides each window's gradient by its count of maxima: that quotient gets a buffer
//!    of one value per window instead of a count per element of the window). Everything
//!    else gets its own buffer and kernel.
//!
//!    An inlined tree (and an epilogue chain) is at most [`MAX_FUSED_DEPTH`] ops deep:
//!    a value that would make it deeper gets its own buffer (as does a nested reduction,
//!    then an ordinary reduction). So a long chain of element-wise ops (a model of a
//!    thousand `|> relu`s) becomes several kernels, and every walk of a kernel's
//!    expression trees (printers, the evaluator, both emitters) recurses a bounded
//!    depth.
//! 6. **Optimizer updates** (rule `update-group`): an update's new value is stored straight
//!    into the persistent buffer it replaces, by a map over the parameter's shape. Updates
//!    whose new values read each other's parameters or new values (Adam's `m`, `v` and
//!    weight) share one map with one store each: the map computes every store's value
//!    before writing any, so in-place updates read the old values. A group is launched as
//!    soon as its inputs exist and every other kernel that reads the old values has run.
//!    A new value that reads its own group's parameters other than element for element
//!    (through a transpose, a slice, a broadcast) gets a buffer instead, as does one that
//!    reads another group's parameters, so no store ever races a load of another element.

use crate::ir::op::swaps_last_two;
use crate::ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, UnaryOp, ValueId};
use std::collections::{HashMap, HashSet};

/// The most points a nested reduction folds (rule `nested-reduce`), and the most copies of
/// a per-row value a broadcast may make of an expensive tree (rule `inline`): on the GPU
/// every point of a row recomputes them, so they must stay small.
pub const NESTED_REDUCE_MAX_POINTS: u64 = 64;

/// The deepest an inlined expression tree, or an epilogue chain, may grow (rules
/// `inline` and `epilogue`): the kernel IR's expression walkers recurse this deep.
pub const MAX_FUSED_DEPTH: usize = 32;

/// The most products a contraction adds to its own (rule `terms`).
const MAX_TERMS: usize = 3;

/// The most additions between a term's product and the chain (rule `terms`).
const MAX_TERM_ADDITIONS: usize = 4;

/// The fewest points per batch row at which an expensive value read by a nested
/// reduction and by another user gets its own buffer instead of being evaluated in both
/// (rule `inline`). W4's attention softmax (`[batch, 4, 64, 64]`): the two launches of
/// `exp` then the division took 24 us at batch 1 against 36-43 us for the one that
/// evaluated `exp` twice; a classifier's `[batch, 10]` stays one launch.
pub const EVALUATED_TWICE_MIN_POINTS: u64 = 1024;

/// Where a value's elements come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// An input or a parameter: a buffer the runtime fills or keeps.
    Leaf,
    /// A scalar constant, inlined where used.
    Const,
    /// Its own buffer, written by its own kernel (or by the kernel of the product or
    /// reduction whose epilogue it ends).
    Buffer,
    /// Computed inside the expressions of the kernels that use it.
    Inline,
    /// A reshape or folded transpose that reads its operand's buffer, or an im2col whose
    /// products read its operand through the window (rule `window`).
    View,
    /// A product or reduction, or a link of its epilogue chain, computed by the kernel
    /// that writes the chain's last value `root`.
    Epilogue { root: ValueId },
}

/// The fusion decisions for one graph.
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    pub placement: HashMap<ValueId, Placement>,
    /// Chain root -> the product or reduction that starts the chain.
    pub producer_of: HashMap<ValueId, ValueId>,
    /// A sum over batch axes -> the matrix product it sums (rule
    /// `summed-product`): one contraction.
    pub summed_products: HashMap<ValueId, ValueId>,
    /// A chain's product -> the products its chain adds (rule `terms`), which its
    /// contraction computes as [`Term`](strata_kernels::ir::Term)s.
    pub terms: HashMap<ValueId, Vec<ValueId>>,
    /// Every product that is another's term.
    pub term_products: HashSet<ValueId>,
}

impl Fusion {
    pub fn get(&self, v: ValueId) -> Placement {
        self.placement.get(&v).copied().unwrap_or(Placement::Buffer)
    }
}

/// Whether an op is evaluated cheaply enough to recompute (the cost guard's unit).
pub fn is_expensive(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(
            UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Sqrt
                | UnaryOp::Tanh
                | UnaryOp::Erf
                | UnaryOp::Sigmoid
        ) | Op::Binary(BinaryOp::Pow)
            | Op::RandomUniform { .. }
    )
}

/// A reshape that only adds or removes dimensions of 1: coordinates map one to one.
pub fn is_unit_reshape(graph: &Graph, v: ValueId) -> bool {
    let Op::Reshape { shape } = &graph.node(v).op else {
        return false;
    };
    let src = graph.operands(v)[0];
    let strip = |dims: &[crate::ir::Dim]| -> Vec<crate::ir::Dim> {
        dims.iter()
            .copied()
            .filter(|d| *d != crate::ir::Dim::Fixed(1))
            .collect()
    };
    strip(shape.dims()) == strip(graph.ty(src).shape.dims())
}

/// A transpose whose every user is a matrix product (and that is no output), of the last
/// two dims (a weight read as `Wᵀ`) or keeping the last dim last (`[b, T, heads, d] ->
/// [b, heads, T, d]`: an attention's queries and values read out of the projections):
/// it is read through the product's offset and strides. Other permutations (the keys'
/// `[b, heads, d, T]`) are copied: a product reads a matrix whose columns are not
/// contiguous 1.1-1.3x slower at 64-128 rows than the copy costs (`gemm` packs it
/// transposed), unless it is a weight read as `Wᵀ` as before.
pub fn folds_into_matmuls(graph: &Graph, v: ValueId) -> bool {
    let Op::Transpose { perm } = &graph.node(v).op else {
        return false;
    };
    let r = perm.len();
    r >= 2
        && (swaps_last_two(perm) || perm[r - 1] == r - 1)
        && !graph.outputs.iter().any(|(_, o)| *o == v)
        && !graph.users(v).is_empty()
        && graph
            .users(v)
            .iter()
            .all(|u| matches!(graph.node(*u).op, Op::MatMul))
}

/// A slice that a matrix product reads (and that is no output), of a value stored
/// without a kernel of its own (an input, a parameter, a scan's result, or a window of
/// one along its first axis): the products read it through their strides and offset,
/// other users load through the same view, with no copy (an LSTM step's `h` out of its carry `[h, c]`, a stacked
/// sequence's part out of a scan's result).
pub fn slice_folds_into_matmuls(graph: &Graph, v: ValueId) -> bool {
    let Op::Slice { .. } = &graph.node(v).op else {
        return false;
    };
    let src = graph.operands(v)[0];
    let stored = |x: ValueId| {
        matches!(
            graph.node(x).op,
            Op::Input { .. } | Op::Param { .. } | Op::Scan(_)
        )
    };
    let stored_src = stored(src)
        || matches!(graph.node(src).op, Op::Slice { axis: 0, .. })
            && stored(graph.operands(src)[0])
            && !graph.outputs.iter().any(|(_, o)| *o == src);
    stored_src
        && !graph.outputs.iter().any(|(_, o)| *o == v)
        && graph
            .users(v)
            .iter()
            .any(|u| matches!(graph.node(*u).op, Op::MatMul))
}

/// An im2col (no output) whose every user is a reshape to `[batch, C kh kw, OH OW]` (no
/// output) that only matrix products read, as their right-hand operand: the products
/// read the image through the window (rule `window`), and the columns are never stored.
pub fn im2col_folds_into_matmuls(graph: &Graph, v: ValueId) -> bool {
    let Op::Im2Col { .. } = &graph.node(v).op else {
        return false;
    };
    let is_output = |x: ValueId| graph.outputs.iter().any(|(_, o)| *o == x);
    let dims = graph.ty(v).shape.dims();
    let (Some(taps), Some(positions)) = (
        dims.get(1..4).and_then(fixed_product),
        dims.get(4..6).and_then(fixed_product),
    ) else {
        return false;
    };
    let flat = [Dim::Batch, Dim::Fixed(taps), Dim::Fixed(positions)];
    let read_as_window = |r: ValueId| {
        let users = graph.users(r);
        matches!(graph.node(r).op, Op::Reshape { .. })
            && graph.ty(r).shape.dims() == flat
            && !is_output(r)
            && !users.is_empty()
            && users.iter().all(|u| {
                let operands = graph.operands(*u);
                matches!(graph.node(*u).op, Op::MatMul) && operands[1] == r && operands[0] != r
            })
    };
    dims.first() == Some(&Dim::Batch)
        && !is_output(v)
        && !graph.users(v).is_empty()
        && graph.users(v).iter().all(|r| read_as_window(*r))
}

/// The product of fixed dims, `None` if one is the batch.
fn fixed_product(dims: &[Dim]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(d.fixed()?))
}

/// The value of `v` if it is a constant, possibly broadcast or reshaped (the same at every
/// point).
pub fn constant_value(graph: &Graph, v: ValueId) -> Option<f64> {
    match &graph.node(v).op {
        Op::Const { value } => Some(*value),
        Op::Broadcast { .. } | Op::Reshape { .. } | Op::StopGradient => {
            constant_value(graph, graph.operands(v)[0])
        }
        _ => None,
    }
}

/// The reductions computed inside their users' expressions (rule `nested-reduce`).
fn nested_reductions(graph: &Graph, pinned: &HashSet<ValueId>) -> HashSet<ValueId> {
    graph
        .values()
        .into_iter()
        .filter(|&v| {
            let Op::Reduce { axes, .. } = &graph.node(v).op else {
                return false;
            };
            let operand = graph.operands(v)[0];
            let dims = graph.ty(operand).shape.dims().to_vec();
            let points = axes.iter().try_fold(1u64, |n, a| match dims[*a] {
                Dim::Fixed(d) => n.checked_mul(d),
                Dim::Batch => None,
            });
            let small = points.is_some_and(|n| n <= NESTED_REDUCE_MAX_POINTS);
            // A sum of a product over its batch axes is one contraction (rule 3), not a
            // sum recomputed by every user (an LSTM's input-weight gradient summed
            // over 50 time steps, read by each of an optimizer's updates).
            !pinned.contains(&v)
                && (small || constant_value(graph, operand).is_some())
                && summed_product(graph, v, pinned).is_none()
        })
        .collect()
}

/// The matrix product that reduction `r` sums over batch axes, if `r` and the
/// product are one contraction (rule `summed-product`): `r` sums, keeps no dimensions,
/// and reduces only batch axes of a product that `r` alone uses and that needs no storage
/// of its own.
fn summed_product(graph: &Graph, r: ValueId, pinned: &HashSet<ValueId>) -> Option<ValueId> {
    let Op::Reduce {
        op: ReduceOp::Sum,
        axes,
        keep_dims: false,
    } = &graph.node(r).op
    else {
        return None;
    };
    let p = graph.operands(r)[0];
    let batch_axes = graph.ty(p).shape.rank().checked_sub(2)?;
    let fits = matches!(graph.node(p).op, Op::MatMul)
        && !axes.is_empty()
        && axes.iter().all(|a| *a < batch_axes)
        && graph.users(p) == [r]
        && !pinned.contains(&p);
    fits.then_some(p)
}

/// Whether user `u` evaluates `v`'s tree more than once per element of `v` in a way the
/// emitters do not undo: a broadcast, unless only along trailing axes over at most
/// [`NESTED_REDUCE_MAX_POINTS`] points (a per-row value read across its row).
fn duplicates(graph: &Graph, v: ValueId, u: ValueId) -> bool {
    if !broadcasts(graph, v, u) {
        return false;
    }
    let (own, wide) = (graph.ty(v).shape.dims(), graph.ty(u).shape.dims());
    let lead = wide.len() - own.len();
    let mut copies = 1u64;
    let mut broadcast_seen = false;
    for (i, w) in wide.iter().enumerate() {
        let copied = *w != Dim::Fixed(1) && (i < lead || own[i - lead] == Dim::Fixed(1));
        if copied {
            broadcast_seen = true;
            copies = match w {
                Dim::Fixed(n) => copies.saturating_mul(*n),
                Dim::Batch => u64::MAX,
            };
        } else if broadcast_seen && *w != Dim::Fixed(1) {
            return true;
        }
    }
    copies > NESTED_REDUCE_MAX_POINTS
}

fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Broadcast { .. }
            | Op::OneHot { .. }
            | Op::Gather
            | Op::Cast { .. }
            | Op::Slice { .. }
            | Op::StopGradient
            | Op::Transpose { .. }
            | Op::RandomUniform { .. }
    )
}

/// A concatenation of operands of one type, lowered as one map over that type with a
/// store per operand (so its operands are computed at one point).
pub fn one_point_concat(graph: &Graph, v: ValueId) -> bool {
    let Op::Concat { .. } = graph.node(v).op else {
        return false;
    };
    let operands = graph.operands(v);
    operands.len() >= 2
        && operands
            .iter()
            .all(|o| graph.ty(*o) == graph.ty(operands[0]))
}

/// The one-point concatenation ([`one_point_concat`]) that every use of `v` reaches at
/// `v`'s own point: directly, or through element-wise ops of `v`'s shape (no broadcast,
/// no reindexing), each of which reaches it too, none of them an output or an update
/// (`kept`, whose uses are outside the graph's edges). Then `v` inlined into each operand
/// is computed once per point (the CPU emitter's code for one point computes a repeated
/// pure expression once). A walk over at most [`MAX_FUSED_DEPTH`] values, each visited
/// once, so a graph of many element-wise values stays linear to fuse.
fn reaches_one_concat(graph: &Graph, v: ValueId, kept: &HashSet<ValueId>) -> Option<ValueId> {
    let shape = &graph.ty(v).shape;
    let mut target = None;
    let mut seen = HashSet::from([v]);
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        let users = graph.users(x);
        if users.is_empty() || kept.contains(&x) {
            return None;
        }
        for u in users {
            if one_point_concat(graph, u) {
                if target.is_some_and(|t| t != u) {
                    return None;
                }
                target = Some(u);
            } else if matches!(graph.node(u).op, Op::Unary(_) | Op::Binary(_))
                && graph.ty(u).shape == *shape
            {
                if seen.insert(u) {
                    if seen.len() > MAX_FUSED_DEPTH {
                        return None;
                    }
                    stack.push(u);
                }
            } else {
                return None;
            }
        }
    }
    target
}

/// Whether user `u` reads `v` at more points than `v` has (a broadcast).
fn broadcasts(graph: &Graph, v: ValueId, u: ValueId) -> bool {
    match graph.node(u).op {
        Op::Binary(_) | Op::Broadcast { .. } => graph.ty(u).shape != graph.ty(v).shape,
        _ => false,
    }
}

/// Decides every value's placement (the rules of the module docs).
pub fn plan_fusion(graph: &Graph) -> Fusion {
    let order = graph.topo_order();
    let outputs: HashSet<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let update_values: HashSet<ValueId> = graph.updates.iter().map(|(_, n)| *n).collect();
    // Values with uses outside the graph's edges.
    let kept: HashSet<ValueId> = outputs.union(&update_values).copied().collect();
    let mut fusion = Fusion::default();

    // Rule 1: storage required, propagated backwards through views.
    let mut storage: HashSet<ValueId> = outputs.clone();
    for &v in order.iter().rev() {
        match &graph.node(v).op {
            Op::MatMul => storage.extend(graph.operands(v)),
            Op::Reshape { .. } if storage.contains(&v) || !is_unit_reshape(graph, v) => {
                storage.insert(graph.operands(v)[0]);
            }
            Op::Transpose { .. } if folds_into_matmuls(graph, v) => {
                storage.insert(graph.operands(v)[0]);
            }
            Op::Slice { .. } if slice_folds_into_matmuls(graph, v) => {
                storage.insert(graph.operands(v)[0]);
            }
            // Truncation happens in the store to an i32 buffer; an inlined cast would
            // hand its users the untruncated value.
            Op::Cast { to: DType::I32 } => {
                storage.insert(v);
            }
            // im2col and col2im read each element of their operand once per tap: an
            // operand computed inside them (a pooling window's max, a mask) would be
            // computed up to kh * kw times over.
            Op::Im2Col { .. } | Op::Col2Im { .. } => {
                storage.insert(graph.operands(v)[0]);
            }
            // A gather's table and ids, and a scatter-add's ids, are read at positions
            // that depend on the ids' values: the kernel IR addresses them in memory.
            // A scatter-add's values are stored too: each column's owner reads every
            // point's value, so an inlined value holding a row's reduction (a layer
            // norm's backward) would fold that row once per column.
            Op::Gather | Op::ScatterAdd { .. } => storage.extend(graph.operands(v)),
            _ => {}
        }
    }

    // Rule 2: nested reductions.
    let pinned: HashSet<ValueId> = storage.iter().chain(&update_values).copied().collect();
    let nested = nested_reductions(graph, &pinned);
    for &r in &nested {
        fusion.placement.insert(r, Placement::Inline);
    }

    // Rule 3: summed products.
    for &r in &order {
        if nested.contains(&r) {
            continue;
        }
        if let Some(p) = summed_product(graph, r, &pinned) {
            fusion.summed_products.insert(r, p);
        }
    }
    let summed: HashSet<ValueId> = fusion.summed_products.values().copied().collect();

    // Rule 4: epilogue chains.
    let position: HashMap<ValueId, usize> =
        order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    for &p in &order {
        if !matches!(graph.node(p).op, Op::MatMul | Op::Reduce { .. })
            || nested.contains(&p)
            || summed.contains(&p)
            || fusion.placement.contains_key(&p)
        {
            continue;
        }
        let shape = graph.ty(p).shape.clone();
        let mut chain = vec![p];
        let mut terms = Vec::new();
        loop {
            let root = *chain.last().expect("non-empty");
            let users = graph.users(root);
            if users.len() != 1
                || storage.contains(&root)
                || outputs.contains(&root)
                || update_values.contains(&root)
            {
                break;
            }
            let u = users[0];
            // A value ends at most one chain: the first product or reduction to reach it.
            if chain.len() > MAX_FUSED_DEPTH
                || fusion.placement.contains_key(&u)
                || !matches!(graph.node(u).op, Op::Unary(_) | Op::Binary(_))
                || graph.ty(u).shape != shape
            {
                break;
            }
            let others_ok = graph
                .operands(u)
                .iter()
                .all(|o| *o == root || !computed_from(graph, &position, *o, p));
            if !others_ok {
                break;
            }
            // Rule `terms`: a sum of products is one contraction.
            let additive = chain[1..]
                .iter()
                .chain([&u])
                .all(|&x| matches!(graph.node(x).op, Op::Binary(BinaryOp::Add)));
            if additive && terms.len() < MAX_TERMS && is_unbatched_product(graph, p) {
                let other = graph.operands(u).into_iter().find(|o| *o != root);
                if let Some(q) = other.and_then(|o| added_product(graph, o, &shape, &pinned))
                    && q != p
                    && !fusion.placement.contains_key(&q)
                    && !summed.contains(&q)
                {
                    terms.push(q);
                }
            }
            chain.push(u);
        }
        let root = *chain.last().expect("non-empty");
        for &q in &terms {
            fusion.placement.insert(q, Placement::Epilogue { root });
            fusion.term_products.insert(q);
        }
        if !terms.is_empty() {
            fusion.terms.insert(p, terms);
        }
        for &c in &chain[..chain.len() - 1] {
            fusion.placement.insert(c, Placement::Epilogue { root });
        }
        fusion.placement.insert(root, Placement::Buffer);
        if root != p {
            fusion.producer_of.insert(root, p);
        }
    }
    // A summed product is computed by the kernel of its reduction's chain.
    for (&r, &p) in &fusion.summed_products {
        let root = match fusion.get(r) {
            Placement::Epilogue { root } => root,
            _ => r,
        };
        fusion.placement.insert(p, Placement::Epilogue { root });
    }

    // Rule 5: inlining, with the cost guard. `cost` is the number of expensive ops an
    // inlined value's expression evaluates; a nested reduction's is 0 (it counts as cheap).
    // `depth` is the depth of an inlined value's expression tree.
    let mut cost: HashMap<ValueId, u32> = HashMap::new();
    let mut depth: HashMap<ValueId, usize> = HashMap::new();
    // The inlined values whose trees hold a nested reduction: cheap to read several
    // times per row, but a broadcast along a leading axis recomputes the reduction per
    // copy, where no emitter can hoist it (a max pool's backward, which divides each
    // window's gradient by its count of maxima, read at every element of the window).
    let mut holds_nested: HashSet<ValueId> = nested.clone();
    let tree_depth = |fusion: &Fusion, depth: &HashMap<ValueId, usize>, v: ValueId| {
        1 + graph
            .operands(v)
            .iter()
            .filter(|o| fusion.get(**o) == Placement::Inline)
            .map(|o| depth.get(o).copied().unwrap_or(1))
            .max()
            .unwrap_or(0)
    };
    for &v in &order {
        let node = graph.node(v);
        if nested.contains(&v) {
            let d = tree_depth(&fusion, &depth, v);
            if d > MAX_FUSED_DEPTH {
                fusion.placement.insert(v, Placement::Buffer);
            } else {
                depth.insert(v, d);
            }
            continue;
        }
        if fusion.placement.contains_key(&v) {
            continue;
        }
        let deep = tree_depth(&fusion, &depth, v);
        if deep > MAX_FUSED_DEPTH
            && is_elementwise(&node.op)
            && !folds_into_matmuls(graph, v)
            && !slice_folds_into_matmuls(graph, v)
        {
            fusion.placement.insert(v, Placement::Buffer);
            continue;
        }
        depth.insert(v, deep);
        let placement = match &node.op {
            Op::Input { .. } | Op::Param { .. } => Placement::Leaf,
            Op::Const { .. } => Placement::Const,
            Op::Reshape { .. } => {
                let src = graph.operands(v)[0];
                let inline_src = matches!(fusion.get(src), Placement::Inline | Placement::Const);
                if inline_src && !storage.contains(&v) {
                    cost.insert(v, cost.get(&src).copied().unwrap_or(0));
                    if holds_nested.contains(&src) {
                        holds_nested.insert(v);
                    }
                    Placement::Inline
                } else {
                    Placement::View
                }
            }
            Op::Transpose { .. } if folds_into_matmuls(graph, v) => Placement::View,
            Op::Slice { .. } if slice_folds_into_matmuls(graph, v) => Placement::View,
            Op::Im2Col { .. } if im2col_folds_into_matmuls(graph, v) => Placement::View,
            op if is_elementwise(op) && !storage.contains(&v) => {
                let own = u32::from(is_expensive(op));
                let tree: u32 = own
                    + graph
                        .operands(v)
                        .iter()
                        .filter(|o| fusion.get(**o) == Placement::Inline)
                        .map(|o| cost.get(o).copied().unwrap_or(0))
                        .sum::<u32>();
                let users = graph.users(v);
                let uses = users.iter().filter(|u| !nested.contains(u)).count()
                    + usize::from(update_values.contains(&v));
                // Several uses that all end in one concatenation's single point count as
                // one (an LSTM's `c` in `[o tanh(c), c]`).
                let single = uses <= 1 || reaches_one_concat(graph, v, &kept).is_some();
                let broadcast = users.iter().any(|u| duplicates(graph, v, *u));
                // Read by a nested reduction and elsewhere: inlined, it would be evaluated
                // twice per element (a softmax's `exp(x - max)`, in its row sum and in
                // its division), which costs more than a kernel and a buffer once a
                // batch row holds enough points.
                let twice = uses > 0
                    && users.iter().any(|u| nested.contains(u))
                    && graph.ty(v).shape.fixed_elements() >= EVALUATED_TWICE_MIN_POINTS;
                let nests = graph
                    .operands(v)
                    .iter()
                    .any(|o| fusion.get(*o) == Placement::Inline && holds_nested.contains(o));
                if (single || tree == 0)
                    && !((tree > 0 || nests) && broadcast)
                    && !(tree > 0 && twice)
                {
                    cost.insert(v, tree);
                    if nests {
                        holds_nested.insert(v);
                    }
                    Placement::Inline
                } else {
                    Placement::Buffer
                }
            }
            _ => Placement::Buffer,
        };
        fusion.placement.insert(v, placement);
    }
    fusion
}

/// Whether `p` is a matrix product of two matrices (no batch axes): a contraction that
/// may have terms.
fn is_unbatched_product(graph: &Graph, p: ValueId) -> bool {
    matches!(graph.node(p).op, Op::MatMul)
        && graph.ty(p).shape.rank() == 2
        && graph
            .operands(p)
            .iter()
            .all(|o| graph.ty(*o).shape.rank() == 2)
}

/// The one matrix product of `shape` that `o` adds (rule `terms`): `o` itself, or a leaf
/// of the additions of `shape` that `o` is, each used once and needing no storage
/// (`(x W_ihᵀ + b_ih) + b_hh`). Its element is then `acc`'s share in the chain's sum,
/// and 0 in the additions' own expression.
fn added_product(
    graph: &Graph,
    o: ValueId,
    shape: &crate::ir::Shape,
    pinned: &HashSet<ValueId>,
) -> Option<ValueId> {
    let mut products = Vec::new();
    let mut stack = vec![o];
    let mut additions = 0;
    while let Some(x) = stack.pop() {
        if graph.ty(x).shape != *shape || pinned.contains(&x) || graph.users(x).len() != 1 {
            continue;
        }
        match graph.node(x).op {
            Op::MatMul if is_unbatched_product(graph, x) => products.push(x),
            // A few additions deep: each is inlined into the chain's epilogue.
            Op::Binary(BinaryOp::Add) if additions < MAX_TERM_ADDITIONS => {
                additions += 1;
                stack.extend(graph.operands(x));
            }
            _ => {}
        }
    }
    match products[..] {
        [q] => Some(q),
        _ => None,
    }
}

/// Whether `v` is computed from `p` (`p` itself is not), given every value's position in
/// a topological order: a walk up from `v` through operands that stops at values placed
/// before `p`, which cannot be computed from it. It visits only values between `p` and
/// `v`, where taking every descendant of every product would cost the whole rest of the
/// graph per product.
fn computed_from(
    graph: &Graph,
    position: &HashMap<ValueId, usize>,
    v: ValueId,
    p: ValueId,
) -> bool {
    let floor = position[&p];
    if position[&v] <= floor {
        return false;
    }
    let mut seen = HashSet::new();
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        for o in graph.operands(x) {
            if o == p {
                return true;
            }
            if position[&o] > floor && seen.insert(o) {
                stack.push(o);
            }
        }
    }
    false
}
