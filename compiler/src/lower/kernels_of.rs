//! The kernels of the lowered program: a fused chain (a map, a reduction or a product
//! with its epilogue), a copy, or an update group, built by substitution: [`element`]
//! loads a stored value and rebuilds an inlined one from its operands, a nested
//! reduction as an [`Expr::Reduce`] whose loop variables follow those in scope where it
//! is built (the [`Site`]).

use super::fuse::one_point_concat;
use super::{BufferId, LowerError, LoweredLaunch, Lowerer, Storage, kernel_dims};
use crate::ir::{self, Op, ValueId};
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ReduceOp, ScatterAdd, Store, Term,
};

/// Buffer slots of the kernel being built and the buffers bound to them.
struct Slots {
    decls: Vec<BufferDecl>,
    bindings: Vec<BufferId>,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            decls: Vec::new(),
            bindings: Vec::new(),
        }
    }

    fn slot(&mut self, l: &Lowerer, b: BufferId, access: Access) -> usize {
        if let Some(i) = self.bindings.iter().position(|x| *x == b) {
            if self.decls[i].access != access {
                self.decls[i].access = Access::ReadWrite;
            }
            return i;
        }
        let buf = &l.out.buffers[b];
        self.decls.push(BufferDecl {
            name: buf.name.replace('.', "_"),
            dtype: buf.dtype,
            shape: buf.shape.clone(),
            access,
        });
        self.bindings.push(b);
        self.decls.len() - 1
    }
}

fn push_kernel(
    l: &mut Lowerer,
    what: &str,
    slots: Slots,
    body: KernelBody,
) -> Result<(), LowerError> {
    let kernel = Kernel {
        name: format!("k{}_{what}", l.out.kernels.len()),
        buffers: slots.decls,
        body,
    };
    kernel.validate().map_err(|e| LowerError(e.to_string()))?;
    l.out.kernels.push(kernel);
    l.out.launches.push(LoweredLaunch {
        kernel: l.out.kernels.len() - 1,
        bindings: slots.bindings,
    });
    Ok(())
}

fn vars(n: usize) -> Vec<Index> {
    (0..n).map(Index::Var).collect()
}

/// Where an element is built: how many loop variables are in scope (a nested reduction
/// numbers its own after them), and the product or reduction whose epilogue it is in.
#[derive(Clone, Copy)]
struct Site {
    scope: usize,
    acc: Option<ValueId>,
}

impl Site {
    fn new(scope: usize) -> Site {
        Site { scope, acc: None }
    }
}

/// The element of `v` at `coords` (one per dimension of `v`). A stored value is a load
/// (a view, a reshape or a folded transpose, is addressed through its own shape: a
/// reshape keeps the row-major order, so the flat index in the value's shape is the flat
/// index in the buffer); an inlined value is rebuilt from its operands' elements; in an
/// epilogue, the product or reduction `site.acc` is [`Expr::Acc`].
fn element(
    l: &Lowerer,
    slots: &mut Slots,
    v: ValueId,
    coords: &[Index],
    site: Site,
) -> Result<Expr, LowerError> {
    let acc = site.acc;
    if acc == Some(v) {
        return Ok(Expr::Acc);
    }
    let shape = kernel_dims(&l.graph.ty(v).shape);
    match l.storage.get(&v).copied() {
        Some(Storage::Const(c)) => Ok(Expr::Const(c)),
        Some(Storage::Buffer(b)) => {
            let s = slots.slot(l, b, Access::Read);
            Ok(Expr::load(s, Index::row_major(coords, &shape)))
        }
        Some(Storage::TransposedView(b)) => {
            let (mut c, mut src_shape) = (coords.to_vec(), shape);
            let r = c.len();
            c.swap(r - 2, r - 1);
            src_shape.swap(r - 2, r - 1);
            let s = slots.slot(l, b, Access::Read);
            Ok(Expr::load(s, Index::row_major(&c, &src_shape)))
        }
        Some(Storage::PermutedView { buf, of }) => {
            let (perm, src_shape) = permutation_of(l, of)?;
            // Coordinate `i` of the transpose is coordinate `perm[i]` of its operand.
            let mut c = vec![Index::Const(0); perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                c[p] = coords[i].clone();
            }
            let s = slots.slot(l, buf, Access::Read);
            Ok(Expr::load(s, Index::row_major(&c, &src_shape)))
        }
        Some(Storage::SliceView {
            buf,
            of,
            axis,
            start,
            transposed,
        }) => {
            let mut c = coords.to_vec();
            if transposed {
                let r = c.len();
                c.swap(r - 2, r - 1);
            }
            c[axis] = c[axis].clone().add(Index::Const(start as i64));
            let s = slots.slot(l, buf, Access::Read);
            let parent = kernel_dims(&l.graph.ty(of).shape);
            Ok(Expr::load(s, Index::row_major(&c, &parent)))
        }
        Some(Storage::Inline) => expand(l, slots, v, coords, site),
        Some(Storage::Im2ColView { .. }) => Err(LowerError(format!(
            "{v}: im2col columns read only through a window, not element by element"
        ))),
        None => Err(LowerError(format!("{v} used before it is lowered"))),
    }
}

/// Coordinates of operand `o` read at `coords` of a space of rank `coords.len()`, by
/// NumPy broadcasting (align from the right, dims of 1 read index 0).
fn broadcast_coords(l: &Lowerer, o: ValueId, coords: &[Index]) -> Vec<Index> {
    let shape = &l.graph.ty(o).shape;
    let (r, rank) = (shape.rank(), coords.len());
    shape
        .dims()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if *d == ir::Dim::Fixed(1) {
                Index::Const(0)
            } else {
                coords[rank - r + i].clone()
            }
        })
        .collect()
}

/// `v`'s op rebuilt at `coords` from its operands' elements.
fn expand(
    l: &Lowerer,
    slots: &mut Slots,
    v: ValueId,
    coords: &[Index],
    site: Site,
) -> Result<Expr, LowerError> {
    let node = l.graph.node(v);
    let operands = l.graph.operands(v);
    let rank = coords.len();
    let at = |o: ValueId, c: &[Index], slots: &mut Slots| element(l, slots, o, c, site);
    Ok(match &node.op {
        Op::Unary(op) => {
            let c = broadcast_coords(l, operands[0], coords);
            Expr::unary(*op, at(operands[0], &c, slots)?)
        }
        // A product added here is a term of the chain's contraction (fusion rule
        // `terms`): its share is in `acc`, so the sum is the other operand.
        Op::Binary(BinaryOp::Add)
            if operands.iter().any(|o| l.fusion.term_products.contains(o)) =>
        {
            let other = if l.fusion.term_products.contains(&operands[0]) {
                operands[1]
            } else {
                operands[0]
            };
            let c = broadcast_coords(l, other, coords);
            at(other, &c, slots)?
        }
        Op::Binary(op) => {
            let ca = broadcast_coords(l, operands[0], coords);
            let cb = broadcast_coords(l, operands[1], coords);
            let a = at(operands[0], &ca, slots)?;
            let b = at(operands[1], &cb, slots)?;
            Expr::binary(*op, a, b)
        }
        Op::Broadcast { .. } => {
            let c = broadcast_coords(l, operands[0], coords);
            at(operands[0], &c, slots)?
        }
        // A load of an i32 buffer converts to f32, and a store into one truncates
        // (`Op::Cast`'s rule): a cast to i32 always has storage (`fuse`), so its users
        // read the truncated value.
        Op::StopGradient | Op::Cast { .. } => at(operands[0], coords, slots)?,
        Op::Transpose { perm } => {
            let mut c = vec![Index::Const(0); rank];
            for (i, p) in perm.iter().enumerate() {
                c[*p] = coords[i].clone();
            }
            at(operands[0], &c, slots)?
        }
        Op::Slice { axis, start, .. } => {
            let mut c = coords.to_vec();
            c[*axis] = c[*axis].clone().add(Index::Const(*start as i64));
            at(operands[0], &c, slots)?
        }
        // out[i..., c] = (c == labels[i...]): the comparison gives 1.0 or 0.0, and a label
        // outside 0..classes matches no c.
        Op::OneHot { .. } => {
            let label = at(operands[0], &coords[..rank - 1], slots)?;
            Expr::binary(
                BinaryOp::Eq,
                Expr::IndexValue(coords[rank - 1].clone()),
                label,
            )
        }
        // out[i..., c] = table[ids[i...], c], masked to 0 for an id that is no row.
        Op::Gather => {
            let (table, ids) = (operands[0], operands[1]);
            Expr::Gather {
                table: table_slot(l, slots, table, Access::Read)?,
                ids: ids_slot(l, slots, ids)?,
                id_index: Index::row_major(
                    &coords[..rank - 1],
                    &kernel_dims(&l.graph.ty(ids).shape),
                ),
                col: coords[rank - 1].clone(),
            }
        }
        // Element i draws from the counter (i, step), i the row-major index of `coords`
        // in the value's own shape, wherever the element is computed.
        Op::RandomUniform { seed, .. } => {
            let step = at(operands[0], &[], slots)?;
            Expr::Uniform {
                seed: *seed,
                index: Index::row_major(coords, &kernel_dims(&node.ty.shape)),
                step: Box::new(step),
            }
        }
        Op::Im2Col { window } => {
            let image = fixed_dims(l, operands[0])?;
            im2col_element(
                window,
                &image,
                coords,
                |c: &[Index], slots: &mut Slots| at(operands[0], c, slots),
                slots,
            )?
        }
        Op::Col2Im {
            window,
            height,
            width,
            ..
        } => col2im_element(
            window,
            [*height, *width],
            coords,
            |c: &[Index], slots: &mut Slots| at(operands[0], c, slots),
            slots,
        )?,
        // Only a reshape adding or removing dims of 1 is inlined: the other dims pair up.
        Op::Reshape { .. } => {
            let src = l.graph.ty(operands[0]).shape.clone();
            let mut kept = node
                .ty
                .shape
                .dims()
                .iter()
                .zip(coords)
                .filter(|(d, _)| **d != ir::Dim::Fixed(1))
                .map(|(_, c)| c.clone());
            let c: Vec<Index> = src
                .dims()
                .iter()
                .map(|d| {
                    if *d == ir::Dim::Fixed(1) {
                        Some(Index::Const(0))
                    } else {
                        kept.next()
                    }
                })
                .collect::<Option<_>>()
                .ok_or_else(|| LowerError(format!("{v}: reshape cannot be inlined")))?;
            at(operands[0], &c, slots)?
        }
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => {
            let in_shape = &l.graph.ty(operands[0]).shape;
            let (c, extent) = reduced_coords(in_shape, axes, *keep_dims, coords, site.scope);
            nested_reduce(l, slots, *op, operands[0], &c, extent, site)?
        }
        other => {
            return Err(LowerError(format!(
                "{v}: `{}` cannot be inlined",
                other.mnemonic()
            )));
        }
    })
}

/// The coordinates of a reduction's operand, reading the output's `coords` along the
/// kept axes and new loop variables from `first_var` on along the reduced ones, and the
/// reduced extent.
fn reduced_coords(
    in_shape: &ir::Shape,
    axes: &[usize],
    keep_dims: bool,
    coords: &[Index],
    first_var: usize,
) -> (Vec<Index>, Vec<Dim>) {
    let mut operand = Vec::new();
    let mut extent = Vec::new();
    let mut out_pos = 0;
    for (i, d) in in_shape.dims().iter().enumerate() {
        if axes.contains(&i) {
            operand.push(Index::Var(first_var + extent.len()));
            extent.push(super::kernel_dim(*d));
            if keep_dims {
                out_pos += 1;
            }
        } else {
            operand.push(coords[out_pos].clone());
            out_pos += 1;
        }
    }
    (operand, extent)
}

/// A reduction of `operand` inside the expression being built (rule `nested-reduce`):
/// its closed form if the operand is a constant (`sum` of `c` over `n` points is `c n`),
/// else an [`Expr::Reduce`] over `extent` of the operand at `coords`.
fn nested_reduce(
    l: &Lowerer,
    slots: &mut Slots,
    op: ReduceOp,
    operand: ValueId,
    coords: &[Index],
    extent: Vec<Dim>,
    site: Site,
) -> Result<Expr, LowerError> {
    if let Some(c) = super::fuse::constant_value(l.graph, operand) {
        return Ok(match op {
            ReduceOp::Max | ReduceOp::Min => Expr::Const(c),
            ReduceOp::Sum => {
                let points = extent
                    .iter()
                    .fold(Index::Const(1), |n, d| n.mul(Index::of_dim(*d)));
                match points {
                    Index::Const(n) => Expr::Const(c * n as f64),
                    n if c == 1.0 => Expr::IndexValue(n),
                    n => Expr::binary(BinaryOp::Mul, Expr::Const(c), Expr::IndexValue(n)),
                }
            }
        });
    }
    let inner = Site {
        scope: site.scope + extent.len(),
        ..site
    };
    let value = element(l, slots, operand, coords, inner)?;
    Ok(Expr::Reduce {
        op,
        extent,
        value: Box::new(value),
    })
}

/// The fixed dims of `v`'s type after the first (an image's `[C, H, W]`).
fn fixed_dims(l: &Lowerer, v: ValueId) -> Result<Vec<u64>, LowerError> {
    l.graph.ty(v).shape.dims()[1..]
        .iter()
        .map(|d| d.fixed())
        .collect::<Option<_>>()
        .ok_or_else(|| LowerError(format!("{v}: an image needs fixed channels and size")))
}

/// `1.0` where `lo <= ix < hi`, else `0.0`.
fn in_range(ix: &Index, lo: i64, hi: i64) -> Expr {
    let value = || Expr::IndexValue(ix.clone());
    Expr::binary(
        BinaryOp::Mul,
        Expr::binary(BinaryOp::Ge, value(), Expr::Const(lo as f64)),
        Expr::binary(BinaryOp::Lt, value(), Expr::Const(hi as f64)),
    )
}

/// `(ix + offset) % n` for an `ix + offset` that is never negative: an index always in
/// `0..n` that equals `ix + offset - k n` for the `k` making it so. Where the tap is
/// valid this is the wanted coordinate; elsewhere it is some in-range coordinate whose
/// load is masked to zero (the CPU emitter may evaluate both arms of a select, so an
/// out-of-range load must never be written at all).
fn wrapped(ix: Index, offset: i64, n: u64) -> Index {
    Index::Rem(Box::new(ix.add(Index::Const(offset))), n as i64)
}

/// The smallest multiple of `n` that is at least `x` (`x >= 0`).
fn multiple_at_least(x: i64, n: i64) -> i64 {
    (x + n - 1).div_euclid(n) * n
}

/// Element `[b, c, i, j, oh, ow]` of im2col over an image `[C, H, W]`: row
/// `oh s + i d - pad` and column `ow s + j d - pad` of channel `c`, masked to zero in the
/// padding. Affine in the coordinates (no division) when there is no padding.
fn im2col_element(
    window: &ir::ConvWindow,
    image: &[u64],
    coords: &[Index],
    mut load: impl FnMut(&[Index], &mut Slots) -> Result<Expr, LowerError>,
    slots: &mut Slots,
) -> Result<Expr, LowerError> {
    let &[_, h, w] = image else {
        return Err(LowerError(
            "im2col of an image that is not [C, H, W]".into(),
        ));
    };
    let [s, pad, d] = [window.stride, window.padding, window.dilation].map(|v| v as i64);
    let [_, channel, i, j, oy, ox] = coords else {
        return Err(LowerError("im2col columns that are not rank 6".into()));
    };
    let channel = channel.clone();
    let (i, j, oy, ox) = (i.clone(), j.clone(), oy.clone(), ox.clone());
    // Rows and columns of the padded image: never negative.
    let row = oy.mul(Index::Const(s)).add(i.mul(Index::Const(d)));
    let col = ox.mul(Index::Const(s)).add(j.mul(Index::Const(d)));
    if pad == 0 {
        return load(&[coords[0].clone(), channel, row, col], slots);
    }
    let (h, w) = (h as i64, w as i64);
    let image_row = wrapped(row.clone(), multiple_at_least(pad, h) - pad, h as u64);
    let image_col = wrapped(col.clone(), multiple_at_least(pad, w) - pad, w as u64);
    let x = load(&[coords[0].clone(), channel, image_row, image_col], slots)?;
    let mask = Expr::binary(
        BinaryOp::Mul,
        in_range(&row, pad, h + pad),
        in_range(&col, pad, w + pad),
    );
    Ok(Expr::binary(BinaryOp::Mul, x, mask))
}

/// Element `[b, c, y, x]` of col2im into an image `[C, H, W]`: the sum over the taps
/// `(i, j)` of the windows `(oh, ow)` with `oh s + i d = y + pad` and
/// `ow s + j d = x + pad`, unrolled over the `kh kw` taps. For tap `i`, `t = y + pad - i d`
/// must be a multiple of `s` with `t / s` in `0..OH`; adding `m s >= (kh - 1) d` keeps
/// every divided index non-negative.
fn col2im_element(
    window: &ir::ConvWindow,
    [h, w]: [u64; 2],
    coords: &[Index],
    mut load: impl FnMut(&[Index], &mut Slots) -> Result<Expr, LowerError>,
    slots: &mut Slots,
) -> Result<Expr, LowerError> {
    let (oh, ow) = window.out_size(h, w).map_err(LowerError)?;
    let [kh, kw, s, pad, d] = [
        window.kh,
        window.kw,
        window.stride,
        window.padding,
        window.dilation,
    ]
    .map(|v| v as i64);
    // For one tap along one axis: the window index (wrapped into range) and its
    // validity mask, or None when no window reaches it at any pixel.
    let axis = |pixel: &Index, tap: i64, k: i64, out: u64| -> (Index, Option<Expr>) {
        let m = multiple_at_least((k - 1) * d, s) / s;
        let shifted = pixel.clone().add(Index::Const(pad - tap * d + m * s));
        let window_plus_m = Index::Div(Box::new(shifted.clone()), s);
        let out = out as i64;
        let index = wrapped(
            window_plus_m.clone(),
            multiple_at_least(m, out) - m,
            out as u64,
        );
        let mut mask = in_range(&window_plus_m, m, m + out);
        if s > 1 {
            let aligned = Expr::binary(
                BinaryOp::Eq,
                Expr::IndexValue(Index::Rem(Box::new(shifted), s)),
                Expr::Const(0.0),
            );
            mask = Expr::binary(BinaryOp::Mul, mask, aligned);
        }
        (index, Some(mask))
    };
    let (b, c) = (coords[0].clone(), coords[1].clone());
    let mut sum: Option<Expr> = None;
    for i in 0..kh {
        let (oy, mask_y) = axis(&coords[2], i, kh, oh);
        for j in 0..kw {
            let (ox, mask_x) = axis(&coords[3], j, kw, ow);
            let tap = [Index::Const(i), Index::Const(j)];
            let at = [&[b.clone(), c.clone()][..], &tap, &[oy.clone(), ox]].concat();
            let mut term = load(&at, slots)?;
            for mask in [mask_y.clone(), mask_x].into_iter().flatten() {
                term = Expr::binary(BinaryOp::Mul, term, mask);
            }
            sum = Some(match sum {
                None => term,
                Some(acc) => Expr::binary(BinaryOp::Add, acc, term),
            });
        }
    }
    sum.ok_or_else(|| LowerError("col2im with an empty kernel".into()))
}

/// The slot of the buffer holding the table `v` (`[rows, cols]`) in its own layout.
fn table_slot(
    l: &Lowerer,
    slots: &mut Slots,
    v: ValueId,
    access: Access,
) -> Result<usize, LowerError> {
    match l.storage.get(&v).copied() {
        Some(Storage::Buffer(b)) if l.out.buffers[b].shape == kernel_dims(&l.graph.ty(v).shape) => {
            Ok(slots.slot(l, b, access))
        }
        _ => Err(LowerError(format!(
            "{v}: a gather's table must be a stored [rows, cols] value, not a view"
        ))),
    }
}

/// The slot of the buffer holding the ids `v`: a stored value, addressed row-major in
/// its own shape (a reshape's buffer keeps that order).
fn ids_slot(l: &Lowerer, slots: &mut Slots, v: ValueId) -> Result<usize, LowerError> {
    match l.storage.get(&v).copied() {
        Some(Storage::Buffer(b)) => Ok(slots.slot(l, b, Access::Read)),
        _ => Err(LowerError(format!("{v}: ids must be stored, not a view"))),
    }
}

/// `out[ids[n], c] += values[n, c]` over the ids' points `n` (ids and values stored, by
/// rule `needs-storage`).
fn emit_scatter_add(l: &mut Lowerer, v: ValueId, out: BufferId) -> Result<(), LowerError> {
    let (ids, values) = match l.graph.operands(v)[..] {
        [ids, values] => (ids, values),
        _ => return Err(LowerError(format!("{v}: a scatter-add of ids and values"))),
    };
    let over = kernel_dims(&l.graph.ty(ids).shape);
    let rank = over.len();
    let mut slots = Slots::new();
    let ids_slot = ids_slot(l, &mut slots, ids)?;
    let value = element(l, &mut slots, values, &vars(rank + 1), Site::new(rank + 1))?;
    let out = slots.slot(l, out, Access::Write);
    let body = KernelBody::ScatterAdd(ScatterAdd {
        id_index: Index::row_major(&vars(rank), &over),
        over,
        ids: ids_slot,
        value,
        out,
    });
    push_kernel(l, "scatter_add", slots, body)
}

/// Emits the kernel(s) computing `v` into buffer `out`.
pub(super) fn emit(l: &mut Lowerer, v: ValueId, out: BufferId) -> Result<(), LowerError> {
    emit_fused(l, v, v, out)
}

/// The name of a fused kernel: its ops, producer first (`matmul_add_relu`).
fn chain_name(l: &Lowerer, producer: ValueId, root: ValueId) -> String {
    let mut names = vec![l.graph.node(root).op.mnemonic()];
    let mut v = root;
    while v != producer {
        match l.graph.operands(v).into_iter().find(|o| {
            *o == producer || matches!(l.fusion.get(*o), super::fuse::Placement::Epilogue { .. })
        }) {
            Some(o) => {
                names.push(l.graph.node(o).op.mnemonic());
                v = o;
            }
            None => break,
        }
    }
    names.reverse();
    names.truncate(4);
    names.join("_")
}

/// Emits the kernel(s) computing `producer` followed by its epilogue chain up to `root`
/// into buffer `out` (`producer == root` for a kernel of one op, or a map).
pub(super) fn emit_fused(
    l: &mut Lowerer,
    producer: ValueId,
    root: ValueId,
    out: BufferId,
) -> Result<(), LowerError> {
    let node = l.graph.node(producer);
    let operands = l.graph.operands(producer);
    let space = kernel_dims(&node.ty.shape);
    let rank = space.len();
    let mut slots = Slots::new();
    let out_index = Index::row_major(&vars(rank), &space);
    let name = chain_name(l, producer, root);
    // The epilogue: the chain's expression over the producer's coordinates.
    let epilogue = |l: &Lowerer, slots: &mut Slots| -> Result<Expr, LowerError> {
        if root == producer {
            Ok(Expr::Acc)
        } else {
            let site = Site {
                scope: rank,
                acc: Some(producer),
            };
            expand(l, slots, root, &vars(rank), site)
        }
    };
    if let (Some(&product), Op::Reduce { axes, .. }) =
        (l.fusion.summed_products.get(&producer), &node.op)
    {
        let mut c = contraction(l, &mut slots, product, axes, out)?;
        c.epilogue = epilogue(l, &mut slots)?;
        let name = chain_name(l, product, root);
        return push_kernel(l, &name, slots, KernelBody::Contract(c));
    }
    match &node.op {
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => {
            let in_shape = &l.graph.ty(operands[0]).shape;
            let (coords, reduce) = reduced_coords(in_shape, axes, *keep_dims, &vars(rank), rank);
            let site = Site::new(rank + reduce.len());
            let value = element(l, &mut slots, operands[0], &coords, site)?;
            let epilogue = epilogue(l, &mut slots)?;
            let o = slots.slot(l, out, Access::Write);
            let body = KernelBody::Reduce {
                space,
                reduce,
                op: *op,
                value,
                out: Store {
                    buf: o,
                    index: out_index,
                    value: epilogue,
                },
            };
            push_kernel(l, &name, slots, body)
        }
        Op::ScatterAdd { .. } => emit_scatter_add(l, producer, out),
        Op::MatMul => {
            let mut c = contraction(l, &mut slots, producer, &[], out)?;
            for &q in l.fusion.terms.get(&producer).into_iter().flatten() {
                let t = contraction(l, &mut slots, q, &[], out)?;
                c.terms.push(Term {
                    k: t.k,
                    a: t.a,
                    b: t.b,
                });
            }
            c.epilogue = epilogue(l, &mut slots)?;
            push_kernel(l, &name, slots, KernelBody::Contract(c))
        }
        Op::Concat { axis } if one_point_concat(l.graph, producer) => {
            // Operands of one shape: one map over it, a store per operand into its block,
            // so a value the operands share (an LSTM's `c`, in `[o tanh(c), c]`) is
            // computed once per point (fusion rule `inline` lets it into both).
            let part_dims = kernel_dims(&l.graph.ty(operands[0]).shape);
            let width = concat_width(&part_dims, *axis)?;
            let mut stores = Vec::with_capacity(operands.len());
            for (i, &o) in operands.iter().enumerate() {
                let block = (*axis, width * i as i64);
                stores.push(concat_store(l, &mut slots, o, block, &space, out)?);
            }
            push_kernel(
                l,
                "concat",
                slots,
                KernelBody::Map {
                    space: part_dims,
                    stores,
                },
            )
        }
        Op::Concat { axis } => {
            let mut offset = 0i64;
            for o in operands {
                let mut slots = Slots::new();
                let part_dims = kernel_dims(&l.graph.ty(o).shape);
                let stores = vec![concat_store(
                    l,
                    &mut slots,
                    o,
                    (*axis, offset),
                    &space,
                    out,
                )?];
                offset += concat_width(&part_dims, *axis)?;
                push_kernel(
                    l,
                    "concat",
                    slots,
                    KernelBody::Map {
                        space: part_dims,
                        stores,
                    },
                )?;
            }
            Ok(())
        }
        _ => {
            let value = expand(l, &mut slots, producer, &vars(rank), Site::new(rank))?;
            let o = slots.slot(l, out, Access::Write);
            let stores = vec![Store {
                buf: o,
                index: out_index,
                value,
            }];
            push_kernel(l, &name, slots, KernelBody::Map { space, stores })
        }
    }
}

/// An operand's extent along the concatenation's axis (never the batch).
fn concat_width(part_dims: &[Dim], axis: usize) -> Result<i64, LowerError> {
    match part_dims[axis] {
        Dim::Fixed(n) => Ok(n as i64),
        Dim::Batch => Err(LowerError("concat along the batch".into())),
    }
}

/// The store of a concatenation's operand `o` into its block of `out` (of kernel shape
/// `space`): `block` is the axis and the operand's offset along it.
fn concat_store(
    l: &mut Lowerer,
    slots: &mut Slots,
    o: ValueId,
    (axis, offset): (usize, i64),
    space: &[Dim],
    out: BufferId,
) -> Result<Store, LowerError> {
    let rank = space.len();
    let value = element(l, slots, o, &vars(rank), Site::new(rank))?;
    let mut coords = vars(rank);
    coords[axis] = Index::Var(axis).add(Index::Const(offset));
    Ok(Store {
        buf: slots.slot(l, out, Access::Write),
        index: Index::row_major(&coords, space),
        value,
    })
}

/// A copy of a constant, an inlined value or a view into its own buffer.
pub(super) fn emit_copy(l: &mut Lowerer, v: ValueId, out: BufferId) -> Result<(), LowerError> {
    let space = kernel_dims(&l.graph.ty(v).shape);
    let rank = space.len();
    let mut slots = Slots::new();
    let x = element(l, &mut slots, v, &vars(rank), Site::new(rank))?;
    let o = slots.slot(l, out, Access::Write);
    let stores = vec![Store {
        buf: o,
        index: Index::row_major(&vars(rank), &space),
        value: x,
    }];
    push_kernel(l, "copy", slots, KernelBody::Map { space, stores })
}

/// A copy of buffer `src` into buffer `dst`, element for element (same shape).
pub(super) fn emit_buffer_copy(
    l: &mut Lowerer,
    src: BufferId,
    dst: BufferId,
) -> Result<(), LowerError> {
    let space = l.out.buffers[dst].shape.clone();
    let rank = space.len();
    let mut slots = Slots::new();
    let from = slots.slot(l, src, Access::Read);
    let to = slots.slot(l, dst, Access::Write);
    let index = Index::row_major(&vars(rank), &space);
    let stores = vec![Store {
        buf: to,
        index: index.clone(),
        value: Expr::Load { buf: from, index },
    }];
    push_kernel(l, "copy", slots, KernelBody::Map { space, stores })
}

/// One map storing every `(param, new value)` of an update group into the parameters'
/// buffers (`targets`), all of one shape.
pub(super) fn emit_update(
    l: &mut Lowerer,
    members: &[(ValueId, ValueId)],
    targets: &[BufferId],
) -> Result<(), LowerError> {
    let space = kernel_dims(&l.graph.ty(members[0].0).shape);
    let rank = space.len();
    let mut slots = Slots::new();
    let mut values = Vec::new();
    for (_, new) in members {
        values.push(element(l, &mut slots, *new, &vars(rank), Site::new(rank))?);
    }
    let mut stores = Vec::new();
    for (value, target) in values.into_iter().zip(targets) {
        stores.push(Store {
            buf: slots.slot(l, *target, Access::Write),
            index: Index::row_major(&vars(rank), &space),
            value,
        });
    }
    push_kernel(l, "update", slots, KernelBody::Map { space, stores })
}

/// A matrix operand of a product: `v`'s element `(b..., row, col)`, where `batch_vars`
/// holds the contraction's variable for each batch axis of the product, and `v`'s own
/// batch axes align with the last of them (so `v` of rank 2 is shared across the batch).
fn matrix_operand(
    l: &Lowerer,
    slots: &mut Slots,
    v: ValueId,
    batch_vars: &[Index],
) -> Result<MatrixOperand, LowerError> {
    let (buf, transposed) = match l.storage.get(&v).copied() {
        Some(Storage::Buffer(b)) => (b, false),
        Some(Storage::TransposedView(b)) => (b, true),
        Some(Storage::PermutedView { buf, of }) => {
            return permuted_matrix_operand(l, slots, buf, of, batch_vars);
        }
        Some(Storage::SliceView {
            buf,
            of,
            axis,
            start,
            transposed,
        }) => {
            let view = (buf, of, axis, start, transposed);
            return Ok(sliced_matrix_operand(l, slots, v, batch_vars, view));
        }
        // `[batch, taps, positions]`: the image of the product's batch index.
        Some(Storage::Im2ColView { image, window }) => {
            let [batch_var] = batch_vars else {
                return Err(LowerError(format!(
                    "{v}: a window read by a product of {} batch axes",
                    batch_vars.len()
                )));
            };
            // The image's buffer holds it row-major, whatever shape it declares.
            let per_image = window
                .image_len()
                .ok_or_else(|| LowerError(format!("{v}: the window's image overflows")))?;
            let offset = batch_var.clone().mul(Index::Const(per_image as i64));
            let slot = slots.slot(l, image, Access::Read);
            return Ok(MatrixOperand::windowed(slot, offset, window));
        }
        _ => return Err(LowerError(format!("{v}: a matrix operand needs storage"))),
    };
    // The operand's own shape (its buffer may be a reshape's), untransposed.
    let mut shape = kernel_dims(&l.graph.ty(v).shape);
    let r = shape.len();
    if transposed {
        shape.swap(r - 2, r - 1);
    }
    let own_batch = r - 2;
    // Batch coordinates: the operand's leading dims align with the last of the
    // product's batch axes (rank 2 operands have none).
    let mut coords: Vec<Index> = batch_vars[batch_vars.len() - own_batch..].to_vec();
    coords.push(Index::Const(0));
    coords.push(Index::Const(0));
    let offset = Index::row_major(&coords, &shape);
    let inner = Index::of_dim(shape[r - 1]);
    let (row_stride, col_stride) = if transposed {
        (Index::Const(1), inner)
    } else {
        (inner, Index::Const(1))
    };
    Ok(MatrixOperand {
        buf: slots.slot(l, buf, Access::Read),
        offset,
        row_stride,
        col_stride,
        window: None,
    })
}

/// Transpose `v`'s permutation and its operand's shape.
fn permutation_of(l: &Lowerer, v: ValueId) -> Result<(Vec<usize>, Vec<Dim>), LowerError> {
    let Op::Transpose { perm } = &l.graph.node(v).op else {
        return Err(LowerError(format!("{v}: a permuted view of no transpose")));
    };
    let src = l.graph.operands(v)[0];
    Ok((perm.clone(), kernel_dims(&l.graph.ty(src).shape)))
}

/// A matrix operand read through a transpose (any permutation) of a value stored
/// row-major in `buf`: its batch coordinates and its rows and columns are coordinates of
/// that value, so the offset sums each batch coordinate times its axis's stride, and
/// the row and column strides are their axes' strides.
fn permuted_matrix_operand(
    l: &Lowerer,
    slots: &mut Slots,
    buf: BufferId,
    v: ValueId,
    batch_vars: &[Index],
) -> Result<MatrixOperand, LowerError> {
    let (perm, src_shape) = permutation_of(l, v)?;
    let r = perm.len();
    let stride = |axis: usize| {
        src_shape[axis + 1..]
            .iter()
            .fold(Index::Const(1), |s, d| s.mul(Index::of_dim(*d)))
    };
    let own_batch = r - 2;
    let coords = batch_vars
        .get(batch_vars.len().saturating_sub(own_batch)..)
        .filter(|c| c.len() == own_batch)
        .ok_or_else(|| {
            LowerError(format!(
                "{v}: a product of fewer batch axes than its operand"
            ))
        })?;
    let offset = coords
        .iter()
        .zip(&perm)
        .fold(Index::Const(0), |o, (c, &p)| {
            o.add(c.clone().mul(stride(p)))
        });
    Ok(MatrixOperand {
        buf: slots.slot(l, buf, Access::Read),
        offset,
        row_stride: stride(perm[r - 2]),
        col_stride: stride(perm[r - 1]),
        window: None,
    })
}

/// A matrix operand read through a slice of a stored value: its element `[.., i, j]` is
/// the parent's at the same coordinates (swapped when `transposed`) with `start` added
/// along the sliced axis, so the offset moves and the row stride is the parent's last
/// dim.
fn sliced_matrix_operand(
    l: &Lowerer,
    slots: &mut Slots,
    v: ValueId,
    batch_vars: &[Index],
    (buf, of, axis, start, transposed): (BufferId, ValueId, usize, u64, bool),
) -> MatrixOperand {
    let parent = kernel_dims(&l.graph.ty(of).shape);
    let r = parent.len();
    let own_batch = kernel_dims(&l.graph.ty(v).shape).len() - 2;
    let mut coords: Vec<Index> = batch_vars[batch_vars.len() - own_batch..].to_vec();
    coords.push(Index::Const(0));
    coords.push(Index::Const(0));
    coords[axis] = coords[axis].clone().add(Index::Const(start as i64));
    let (row_stride, col_stride) = if transposed {
        (Index::Const(1), Index::of_dim(parent[r - 1]))
    } else {
        (Index::of_dim(parent[r - 1]), Index::Const(1))
    };
    MatrixOperand {
        buf: slots.slot(l, buf, Access::Read),
        offset: Index::row_major(&coords, &parent),
        row_stride,
        col_stride,
        window: None,
    }
}

/// The contraction computing product `p` of `a x b`, summed over its batch axes `summed`
/// (rule `summed-product` of [`super::fuse`]; none for a product of its own): the kept
/// batch axes are the contraction's batch, the summed ones its `summed` dimensions.
fn contraction(
    l: &Lowerer,
    slots: &mut Slots,
    p: ValueId,
    summed: &[usize],
    out: BufferId,
) -> Result<Contraction, LowerError> {
    let space = kernel_dims(&l.graph.ty(p).shape);
    let r = space.len();
    let (a, b) = match l.graph.operands(p)[..] {
        [a, b] => (a, b),
        _ => return Err(LowerError(format!("{p}: a product of two operands"))),
    };
    let a_shape = kernel_dims(&l.graph.ty(a).shape);
    let k = a_shape[a_shape.len() - 1];
    let (kept, summed): (Vec<usize>, Vec<usize>) = (0..r - 2).partition(|x| !summed.contains(x));
    // The operands' variables: the kept batch axes, then the summed ones.
    let mut batch_vars = vec![Index::Const(0); r - 2];
    for (var, &axis) in kept.iter().chain(&summed).enumerate() {
        batch_vars[axis] = Index::Var(var);
    }
    let a_op = matrix_operand(l, slots, a, &batch_vars)?;
    let b_op = matrix_operand(l, slots, b, &batch_vars)?;
    Ok(Contraction {
        batch: kept.iter().map(|&x| space[x]).collect(),
        summed: summed.iter().map(|&x| space[x]).collect(),
        m: space[r - 2],
        n: space[r - 1],
        k,
        a: a_op,
        b: b_op,
        out: slots.slot(l, out, Access::Write),
        epilogue: Expr::Acc,
        terms: Vec::new(),
    })
}
