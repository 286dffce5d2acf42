//! The convolution pattern: `conv2d` elaborates to `im2col` reshaped to columns
//! `[n, C kh kw, OH OW]`, the product of the reshaped kernel `[O, C kh kw]` with them, an
//! optional bias column, and a reshape to `[n, O, OH, OW]`. Where the graph holds that chain with no other use of its inner
//! values, the export writes one ONNX `Conv` instead of the ops one by one: the same
//! sums (the product's order of accumulation aside), one node a runtime has a fast
//! kernel for, and the layer an importer recognizes.
//!
//! `conv1d` is the same chain on the sequence `[n, C, L]` reshaped to an image of height
//! 1, with a kernel `[O, C, k]` and the result `[n, O, OL]`; its padding is written out
//! before it, zeros concatenated along the length (it may differ between the ends).
//! That is one 1-D `Conv` of the sequence, the zeros its `pads`.
//!
//! The passes apply an activation of the image before the reshape to it (rule
//! `unary_reshape`: the activation then joins the product's epilogue), so element-wise
//! unary ops between the bias and the reshape are part of the chain: they are written
//! after the `Conv`, on the image. The reshape ending the chain may then have merged
//! with the next one (a max pool's windows) or gone (a transposed convolution reads
//! the columns): a `Reshape` of the image to the chain's last shape follows them.

use strata_compiler::ir::{BinaryOp, ConvWindow, Dim, Graph, Op, Shape, UnaryOp, ValueId};

/// One convolution found in the graph.
pub(super) struct ConvMatch {
    /// The image `[n, C, H, W]`, or the sequence `[n, C, L]`.
    pub input: ValueId,
    /// The kernel parameter `[O, C, kh, kw]` (`[O, C, k]`), PyTorch's layout and ONNX's.
    pub weight: ValueId,
    /// The bias parameter `[O]`, if the chain adds one.
    pub bias: Option<ValueId>,
    pub window: ConvWindow,
    /// The kernel's extent along each spatial axis (`kernel_shape`).
    pub kernel: Vec<u64>,
    /// ONNX's `pads`: the zeros before each spatial axis, then after each.
    pub pads: Vec<u64>,
    /// Element-wise ops applied to the convolution's result before its reshape to the
    /// image, in order: written after the `Conv`.
    pub activations: Vec<(ValueId, UnaryOp)>,
    /// The shape of the chain's last value, where it is not the image's: the passes
    /// merge the reshape to the image with a reshape after it (a max pool's windows), or
    /// drop it where a reshape back follows. Written as a `Reshape` of the image.
    pub reshape_to: Option<Shape>,
    /// The values of the chain that the `Conv` replaces (not written).
    pub inner: Vec<ValueId>,
}

/// The convolutions of `graph`, keyed by the chain's last value (the `Conv`'s result).
pub(super) fn find_convolutions(graph: &Graph) -> Vec<(ValueId, ConvMatch)> {
    let outputs: Vec<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    graph
        .values()
        .into_iter()
        .filter_map(|v| match_from(graph, v, &outputs))
        .collect()
}

/// The one user of `v`, when it has exactly one, uses it once and `v` is no output.
pub(super) fn only_user(graph: &Graph, v: ValueId, outputs: &[ValueId]) -> Option<ValueId> {
    match graph.users(v).as_slice() {
        [u] if !outputs.contains(&v)
            && graph.operands(*u).iter().filter(|o| **o == v).count() == 1 =>
        {
            Some(*u)
        }
        _ => None,
    }
}

fn match_from(
    graph: &Graph,
    windows: ValueId,
    outputs: &[ValueId],
) -> Option<(ValueId, ConvMatch)> {
    let Op::Im2Col { window } = graph.node(windows).op else {
        return None;
    };
    let input = *graph.operands(windows).first()?;
    let [n, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] = graph.ty(input).shape.dims()[..] else {
        return None;
    };
    let columns = only_user(graph, windows, outputs)?;
    if !matches!(graph.node(columns).op, Op::Reshape { .. }) {
        return None;
    }
    let product = only_user(graph, columns, outputs)?;
    if graph.node(product).op != Op::MatMul {
        return None;
    }
    let [kernel_flat, rhs] = graph.operands(product)[..] else {
        return None;
    };
    if rhs != columns
        || !matches!(graph.node(kernel_flat).op, Op::Reshape { .. })
        || only_user(graph, kernel_flat, outputs)? != product
    {
        return None;
    }
    let weight = *graph.operands(kernel_flat).first()?;
    if !matches!(graph.node(weight).op, Op::Param { .. }) {
        return None;
    }
    let mut inner = vec![windows, columns, product, kernel_flat];
    let (o, conv_input, kernel, pads) = match graph.ty(weight).shape.dims()[..] {
        [
            Dim::Fixed(o),
            Dim::Fixed(wc),
            Dim::Fixed(kh),
            Dim::Fixed(kw),
        ] if wc == c && kh == window.kh && kw == window.kw => {
            (o, input, vec![kh, kw], vec![window.padding; 4])
        }
        [Dim::Fixed(o), Dim::Fixed(wc), Dim::Fixed(k)]
            if wc == c && h == 1 && window.kh == 1 && k == window.kw && window.padding == 0 =>
        {
            let (sequence, pads) = sequence_of(graph, input, windows, outputs, &mut inner)?;
            (o, sequence, vec![k], pads)
        }
        _ => return None,
    };
    let mut last = product;
    let mut bias = None;
    let next = only_user(graph, product, outputs)?;
    if let Op::Binary(BinaryOp::Add) = graph.node(next).op {
        // The bias as a column `[O, 1]`, added to every output pixel.
        let column = graph.operands(next).into_iter().find(|x| *x != product)?;
        if !matches!(graph.node(column).op, Op::Reshape { .. })
            || only_user(graph, column, outputs)? != next
        {
            return None;
        }
        let b = *graph.operands(column).first()?;
        let is_bias = matches!(graph.node(b).op, Op::Param { .. })
            && graph.ty(b).shape.dims() == [Dim::Fixed(o)]
            && graph.ty(column).shape.dims() == [Dim::Fixed(o), Dim::Fixed(1)];
        if !is_bias {
            return None;
        }
        bias = Some(b);
        inner.extend([next, column]);
        last = next;
    }
    let (oh, ow) = window.out_size(h, w).ok()?;
    let mut activations = Vec::new();
    let mut reshape_to = None;
    let image = if kernel.len() == 1 {
        // The product is already `[n, O, OL]` where the passes dropped the reshapes to
        // height 1 and back.
        let sequence = [n, Dim::Fixed(o), Dim::Fixed(ow)];
        if graph.ty(last).shape.dims() == sequence {
            inner.retain(|&v| v != last);
            last
        } else {
            let image = only_user(graph, last, outputs)?;
            match &graph.node(image).op {
                Op::Reshape { shape } if shape.dims() == sequence => image,
                _ => return None,
            }
        }
    } else {
        // The chain ends at the reshape to the image, or where no activation or reshape
        // follows (the passes drop a reshape to the image that a reshape back undoes).
        let mut end = last;
        while let Some(next) = only_user(graph, end, outputs) {
            match graph.node(next).op {
                Op::Unary(u) => activations.push((next, u)),
                Op::Reshape { .. } => {
                    end = next;
                    break;
                }
                _ => break,
            }
            end = next;
        }
        inner.extend(activations.iter().map(|(a, _)| *a));
        inner.retain(|&v| v != end);
        let shape = &graph.ty(end).shape;
        if shape.dims() != [n, Dim::Fixed(o), Dim::Fixed(oh), Dim::Fixed(ow)] {
            reshape_to = Some(shape.clone());
        }
        end
    };
    Some((
        image,
        ConvMatch {
            input: conv_input,
            weight,
            bias,
            window,
            kernel,
            pads,
            activations,
            reshape_to,
            inner,
        },
    ))
}

/// The sequence `[n, C, L]` a conv1d's image `[n, C, 1, L]` is reshaped from (read by
/// the window `windows` alone), with the zeros concatenated at its ends taken off as
/// `pads` `[before, after]`; the values left out join `inner`.
fn sequence_of(
    graph: &Graph,
    image: ValueId,
    windows: ValueId,
    outputs: &[ValueId],
    inner: &mut Vec<ValueId>,
) -> Option<(ValueId, Vec<u64>)> {
    if !matches!(graph.node(image).op, Op::Reshape { .. })
        || only_user(graph, image, outputs)? != windows
    {
        return None;
    }
    let sequence = *graph.operands(image).first()?;
    let [_, _, Dim::Fixed(_)] = graph.ty(sequence).shape.dims()[..] else {
        return None;
    };
    inner.push(image);
    let padded = matches!(graph.node(sequence).op, Op::Concat { axis: 2 })
        && only_user(graph, sequence, outputs) == Some(image);
    if !padded {
        return Some((sequence, vec![0, 0]));
    }
    let parts = graph.operands(sequence);
    let data: Vec<usize> = (0..parts.len())
        .filter(|&i| !is_zeros(graph, parts[i]))
        .collect();
    let [at] = data[..] else {
        return Some((sequence, vec![0, 0]));
    };
    let extent = |v: &ValueId| graph.ty(*v).shape.dims()[2].fixed().unwrap_or(0);
    let before = parts[..at].iter().map(extent).sum();
    let after = parts[at + 1..].iter().map(extent).sum();
    inner.push(sequence);
    Some((parts[at], vec![before, after]))
}

/// Whether `v` is a constant zero stretched to a shape (written-out padding).
pub(super) fn is_zeros(graph: &Graph, v: ValueId) -> bool {
    matches!(graph.node(v).op, Op::Broadcast { .. })
        && graph
            .operands(v)
            .first()
            .is_some_and(|&c| matches!(graph.node(c).op, Op::Const { value } if value == 0.0))
}
