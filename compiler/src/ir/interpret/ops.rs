//! The numeric kernels of the reference interpreter: one function per op kind over dense
//! row-major `f64` tensors. Each checks its operands' concrete shapes and returns a
//! message, never panics, on a mismatch; sums run sequentially in row-major order.
//! Element-wise ops and reduction steps compute `strata_kernels::scalar_op`'s semantics
//! (`apply`, `combine`), the same code as the kernel IR's evaluator.

use super::{Tensor, concrete_shape, dims_text, element_count};
use crate::ir::DType;
use crate::ir::op::{ConvWindow, Op, ReduceOp};
use strata_kernels::rng;

/// Evaluates a non-leaf op on its operands' values.
pub(super) fn apply(op: &Op, operands: &[&Tensor], batch: Option<usize>) -> Result<Tensor, String> {
    let operand = |i: usize| -> Result<&Tensor, String> {
        operands
            .get(i)
            .copied()
            .ok_or_else(|| format!("expected operand {i}, got {}", operands.len()))
    };
    match op {
        Op::Input { .. } | Op::Param { .. } => Err("leaves are looked up, not applied".into()),
        Op::Const { value } => Ok(Tensor::scalar(*value)),
        Op::Unary(u) => {
            let x = operand(0)?;
            Ok(Tensor {
                shape: x.shape.clone(),
                data: x.data.iter().map(|&a| u.apply(a)).collect(),
            })
        }
        Op::Binary(b) => broadcast(operand(0)?, operand(1)?, |x, y| b.apply(x, y)),
        Op::MatMul => matmul(operand(0)?, operand(1)?),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => reduce(operand(0)?, *op, axes, *keep_dims),
        Op::Reshape { shape } => {
            let x = operand(0)?;
            let target = concrete_shape(shape, batch)
                .ok_or_else(|| format!("target {shape} needs the batch size"))?;
            if element_count(&target) != Some(x.len()) {
                return Err(format!(
                    "cannot reshape {} ({} elements) into {}",
                    dims_text(&x.shape),
                    x.len(),
                    dims_text(&target)
                ));
            }
            Ok(Tensor {
                shape: target,
                data: x.data.clone(),
            })
        }
        Op::Transpose { perm } => transpose(operand(0)?, perm),
        Op::Concat { axis } => concat(operands, *axis),
        Op::Slice { axis, start, len } => slice(operand(0)?, *axis, *start, *len),
        Op::StopGradient => Ok(operand(0)?.clone()),
        Op::Broadcast { shape } => {
            let target = concrete_shape(shape, batch)
                .ok_or_else(|| format!("target {shape} needs the batch size"))?;
            let x = operand(0)?;
            let out = broadcast(x, &Tensor::zeros(target.clone()), |x, _| x)?;
            if out.shape != target {
                return Err(format!(
                    "cannot broadcast {} to {}",
                    dims_text(&x.shape),
                    dims_text(&target)
                ));
            }
            Ok(out)
        }
        Op::OneHot { classes } => one_hot(operand(0)?, *classes),
        Op::Gather => gather(operand(0)?, operand(1)?),
        Op::ScatterAdd { rows } => scatter_add(operand(0)?, operand(1)?, *rows),
        Op::Cast { to } => {
            let x = operand(0)?;
            let convert: fn(f64) -> f64 = match to {
                // Exact in f64 (the reference); the backends round to f32 above 2²⁴.
                DType::F32 => |a| a,
                DType::I32 => to_i32,
            };
            Ok(Tensor {
                shape: x.shape.clone(),
                data: x.data.iter().map(|&a| convert(a)).collect(),
            })
        }
        Op::RandomUniform { seed, shape } => {
            let target = concrete_shape(shape, batch)
                .ok_or_else(|| format!("shape {shape} needs the batch size"))?;
            random_uniform(operand(0)?, *seed, target)
        }
        Op::Im2Col { window } => im2col(operand(0)?, window),
        Op::Col2Im {
            window,
            channels,
            height,
            width,
        } => col2im(operand(0)?, window, [*channels, *height, *width]),
        Op::Scan(scan) => super::scan_loop::run(scan, operands),
    }
}

/// `x` truncated toward zero and saturated to `i32`'s range, NaN -> 0: what the
/// backends' `f32 -> i32` store computes (Cranelift's `fcvt_to_sint_sat`).
fn to_i32(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.trunc().clamp(f64::from(i32::MIN), f64::from(i32::MAX))
    }
}

/// Calls `visit(column offset, image offset)` for every tap of every window of an
/// `[n, c, h, w]` image that lands inside the image (not in the padding). Offsets are
/// row-major into `[n, C, kh, kw, OH, OW]` and `[n, C, H, W]`; returns the columns'
/// dims after the batch.
fn for_each_tap(
    image: [usize; 4],
    window: &ConvWindow,
    mut visit: impl FnMut(usize, usize),
) -> Result<[usize; 5], String> {
    let [n, c, h, w] = image;
    let (oh, ow) = window.out_size(h as u64, w as u64)?;
    let (oh, ow) = (oh as usize, ow as usize);
    let [kh, kw, stride, pad, dil] = [
        window.kh,
        window.kw,
        window.stride,
        window.padding,
        window.dilation,
    ]
    .map(|v| v as usize);
    for b in 0..n {
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let tap = ((b * c + ci) * kh + i) * kw + j;
                    for y in 0..oh {
                        // The padded row; inside the image when pad <= r < h + pad.
                        let r = y * stride + i * dil;
                        if r < pad || r >= h + pad {
                            continue;
                        }
                        for x in 0..ow {
                            let q = x * stride + j * dil;
                            if q < pad || q >= w + pad {
                                continue;
                            }
                            let column = (tap * oh + y) * ow + x;
                            let pixel = ((b * c + ci) * h + r - pad) * w + q - pad;
                            visit(column, pixel);
                        }
                    }
                }
            }
        }
    }
    Ok([c, kh, kw, oh, ow])
}

/// `[n, C, H, W]` -> `[n, C, kh, kw, OH, OW]`, zeros for taps in the padding.
fn im2col(x: &Tensor, window: &ConvWindow) -> Result<Tensor, String> {
    let &[n, c, h, w] = x.shape.as_slice() else {
        return Err(format!(
            "`im2col` needs a rank-4 image, got {}",
            dims_text(&x.shape)
        ));
    };
    let dims = for_each_tap([0, c, h, w], window, |_, _| {})?;
    let mut data = vec![0.0; n * dims.iter().product::<usize>()];
    for_each_tap([n, c, h, w], window, |column, pixel| {
        data[column] = x.data[pixel];
    })?;
    Ok(Tensor {
        shape: [&[n][..], &dims].concat(),
        data,
    })
}

/// `[n, C, kh, kw, OH, OW]` -> `[n, C, H, W]`, each pixel the sum of its columns.
fn col2im(g: &Tensor, window: &ConvWindow, image: [u64; 3]) -> Result<Tensor, String> {
    let [c, h, w] = image.map(|v| v as usize);
    let want = for_each_tap([0, c, h, w], window, |_, _| {})?;
    let (n, dims) = match g.shape.split_first() {
        Some((&n, dims)) => (n, dims),
        None => (0, &[][..]),
    };
    if dims != want {
        return Err(format!(
            "`col2im` to [{c}, {h}, {w}] needs columns {}, got {}",
            dims_text(&[&[n][..], &want].concat()),
            dims_text(&g.shape)
        ));
    }
    let mut data = vec![0.0; n * c * h * w];
    for_each_tap([n, c, h, w], window, |column, pixel| {
        data[pixel] += g.data[column];
    })?;
    Ok(Tensor {
        shape: vec![n, c, h, w],
        data,
    })
}

/// Row-major strides (in elements) of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Calls `visit` with one flat offset per operand for every index of `shape`, in
/// row-major order; operand `k`'s offset advances by `strides[k][d]` along dimension `d`.
fn walk<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    mut visit: impl FnMut([usize; K]),
) {
    if shape.contains(&0) {
        return;
    }
    let mut index = vec![0usize; shape.len()];
    let mut offsets = [0usize; K];
    loop {
        visit(offsets);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for k in 0..K {
                offsets[k] += strides[k][d];
            }
            if index[d] < shape[d] {
                break;
            }
            for k in 0..K {
                offsets[k] -= strides[k][d] * shape[d];
            }
            index[d] = 0;
        }
    }
}

/// NumPy broadcasting: align from the right, a dimension of 1 stretches.
fn broadcast(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor, String> {
    let rank = a.rank().max(b.rank());
    // Each operand's shape padded with leading 1s to `rank`.
    let pad = |t: &Tensor| -> Vec<usize> {
        let mut s = vec![1; rank - t.rank()];
        s.extend_from_slice(&t.shape);
        s
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut shape = Vec::with_capacity(rank);
    for (&x, &y) in pa.iter().zip(&pb) {
        shape.push(match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {} and {} do not broadcast",
                    dims_text(&a.shape),
                    dims_text(&b.shape)
                ));
            }
        });
    }
    let stretched = |padded: &[usize]| -> Vec<usize> {
        strides(padded)
            .into_iter()
            .zip(padded)
            .zip(&shape)
            .map(|((s, &d), &out)| if d == 1 && out != 1 { 0 } else { s })
            .collect()
    };
    let (sa, sb) = (stretched(&pa), stretched(&pb));
    let mut data = Vec::with_capacity(element_count(&shape).unwrap_or(0));
    walk(&shape, [&sa, &sb], |[i, j]| {
        data.push(f(a.data[i], b.data[j]))
    });
    Ok(Tensor { shape, data })
}

/// `a[..., m, k] x b[..., k, n]`, `b` of rank 2 shared by every leading index of `a`.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let (ra, rb) = (a.rank(), b.rank());
    let mismatch = || {
        format!(
            "cannot multiply {} by {}",
            dims_text(&a.shape),
            dims_text(&b.shape)
        )
    };
    if ra < 2 || rb < 2 {
        return Err(mismatch());
    }
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    // A rank-2 operand is shared by every leading index of the other.
    let (shared_a, shared_b) = (ra == 2, rb == 2);
    if k != k2 || (!shared_a && !shared_b && a.shape[..ra - 2] != b.shape[..rb - 2]) {
        return Err(mismatch());
    }
    let lead = if shared_a {
        &b.shape[..rb - 2]
    } else {
        &a.shape[..ra - 2]
    };
    let batches: usize = lead.iter().product();
    let mut shape = lead.to_vec();
    shape.extend([m, n]);
    let mut data = vec![0.0; batches * m * n];
    for bi in 0..batches {
        let a_off = if shared_a { 0 } else { bi * m * k };
        let b_off = if shared_b { 0 } else { bi * k * n };
        let out = &mut data[bi * m * n..(bi + 1) * m * n];
        for i in 0..m {
            let row = &mut out[i * n..(i + 1) * n];
            // Sum over p in order for every (i, j).
            for p in 0..k {
                let x = a.data[a_off + i * k + p];
                let b_row = &b.data[b_off + p * n..b_off + (p + 1) * n];
                for (acc, &y) in row.iter_mut().zip(b_row) {
                    *acc += x * y;
                }
            }
        }
    }
    Ok(Tensor { shape, data })
}

/// Folds `axes` (sorted, distinct, non-empty) of `x` in row-major order.
fn reduce(x: &Tensor, op: ReduceOp, axes: &[usize], keep_dims: bool) -> Result<Tensor, String> {
    if axes.is_empty()
        || axes.windows(2).any(|w| w[0] >= w[1])
        || axes.iter().any(|&a| a >= x.rank())
    {
        return Err(format!(
            "axes {axes:?} are not sorted, distinct, non-empty axes of {}",
            dims_text(&x.shape)
        ));
    }
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    // Reduced dimensions do not move the output offset.
    let out_strides: Vec<usize> = strides(&kept)
        .into_iter()
        .enumerate()
        .map(|(d, s)| if axes.contains(&d) { 0 } else { s })
        .collect();
    let mut data = vec![op.identity(); kept.iter().product()];
    walk(&x.shape, [&strides(&x.shape), &out_strides], |[i, o]| {
        data[o] = op.combine(data[o], x.data[i]);
    });
    let shape = if keep_dims {
        kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    Ok(Tensor { shape, data })
}

/// Output dimension `i` is input dimension `perm[i]`.
fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank()
        || perm
            .iter()
            .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!(
            "{perm:?} is not a permutation of the dimensions of {}",
            dims_text(&x.shape)
        ));
    }
    let in_strides = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let gather: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut data = Vec::with_capacity(x.len());
    walk(&shape, [&gather], |[i]| data.push(x.data[i]));
    Ok(Tensor { shape, data })
}

/// Joins `operands` along `axis`; every other dimension must agree.
fn concat(operands: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let Some(first) = operands.first() else {
        return Err("concat needs at least one operand".into());
    };
    if axis >= first.rank() {
        return Err(format!(
            "axis {axis} is out of range for {}",
            dims_text(&first.shape)
        ));
    }
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for t in operands {
        let fits = t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
        if !fits {
            return Err(format!(
                "cannot concat {} and {} along axis {axis}",
                dims_text(&first.shape),
                dims_text(&t.shape)
            ));
        }
        shape[axis] += t.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(element_count(&shape).unwrap_or(0));
    for o in 0..outer {
        for t in operands {
            let chunk = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Tensor { shape, data })
}

/// Elements `start..start + len` of `x` along `axis`.
fn slice(x: &Tensor, axis: usize, start: u64, len: u64) -> Result<Tensor, String> {
    let (start, len) = (start as usize, len as usize);
    if axis >= x.rank() || start.checked_add(len).is_none_or(|end| end > x.shape[axis]) {
        return Err(format!(
            "cannot take {start}..{} of axis {axis} of {}",
            start.saturating_add(len),
            dims_text(&x.shape)
        ));
    }
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let row = x.shape[axis] * inner;
    let mut shape = x.shape.clone();
    shape[axis] = len;
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = o * row + start * inner;
        data.extend_from_slice(&x.data[base..base + len * inner]);
    }
    Ok(Tensor { shape, data })
}

/// `uniform_at(seed, i, step)` at every row-major index `i` of `shape`: the bits every
/// backend draws. The step is rounded to `f32` first, as the backends hold it.
fn random_uniform(step: &Tensor, seed: u64, shape: Vec<usize>) -> Result<Tensor, String> {
    let &[step] = step.data.as_slice() else {
        return Err(format!(
            "the step must be a scalar, got {}",
            dims_text(&step.shape)
        ));
    };
    let step = rng::step_word(step as f32);
    let n = element_count(&shape).ok_or_else(|| "the random tensor is too large".to_string())?;
    let data = (0..n as u64)
        .map(|i| f64::from(rng::uniform_at(seed, i, step)))
        .collect();
    Ok(Tensor { shape, data })
}

/// `out[..., c] = 1.0` where `labels[...] == c`, else 0.0 (so out-of-range labels give a
/// row of zeros).
fn one_hot(labels: &Tensor, classes: u64) -> Result<Tensor, String> {
    let classes = usize::try_from(classes).map_err(|_| "too many classes".to_string())?;
    let mut shape = labels.shape.clone();
    shape.push(classes);
    let n = element_count(&shape).ok_or_else(|| "the one-hot tensor is too large".to_string())?;
    let mut data = vec![0.0; n];
    for (i, &label) in labels.data.iter().enumerate() {
        if label >= 0.0 && label < classes as f64 && label.fract() == 0.0 {
            data[i * classes + label as usize] = 1.0;
        }
    }
    Ok(Tensor { shape, data })
}

/// The row of `table` `[rows, cols]` at each id, a row of zeros for an id outside
/// `0..rows`: `[ids' dims, cols]`.
fn gather(table: &Tensor, ids: &Tensor) -> Result<Tensor, String> {
    let &[rows, cols] = table.shape.as_slice() else {
        return Err(format!(
            "gather needs a table of rank 2, got {}",
            dims_text(&table.shape)
        ));
    };
    let mut shape = ids.shape.clone();
    shape.push(cols);
    let mut data = Vec::with_capacity(ids.len().saturating_mul(cols));
    for &id in &ids.data {
        if id >= 0.0 && id < rows as f64 && id.fract() == 0.0 {
            let row = id as usize * cols;
            data.extend_from_slice(&table.data[row..row + cols]);
        } else {
            data.extend(std::iter::repeat_n(0.0, cols));
        }
    }
    Ok(Tensor { shape, data })
}

/// The adjoint of [`gather`]: a `[rows, cols]` table whose row `r` sums the rows of
/// `values` `[ids' dims, cols]` whose id is `r`, in order; other ids add nothing.
fn scatter_add(ids: &Tensor, values: &Tensor, rows: u64) -> Result<Tensor, String> {
    let rows = usize::try_from(rows).map_err(|_| "too many rows".to_string())?;
    let cols = match values.shape.split_last() {
        Some((cols, lead)) if lead == ids.shape.as_slice() => *cols,
        _ => {
            return Err(format!(
                "scatter_add of values {} for ids {}",
                dims_text(&values.shape),
                dims_text(&ids.shape)
            ));
        }
    };
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| "the table is too large".to_string())?;
    let mut data = vec![0.0; n];
    for (i, &id) in ids.data.iter().enumerate() {
        if id >= 0.0 && id < rows as f64 && id.fract() == 0.0 {
            let row = id as usize * cols;
            for c in 0..cols {
                data[row + c] += values.data[i * cols + c];
            }
        }
    }
    Ok(Tensor {
        shape: vec![rows, cols],
        data,
    })
}
