//! The convolution pattern: `conv2d` elaborates to `im2col` reshaped to columns
//! `[n, C kh kw, OH OW]`, the product of the reshaped kernel `[O, C kh kw]` with them, an
//! optional bias column, and a reshape to `[n, O, OH, OW]`. Where the graph holds that chain with no other use of its inner
//! values, the export writes one ONNX `Conv` instead of the ops one by one: the same
//! sums (the product's order of accumulation aside), one node a runtime has a fast
//! kernel for, and the layer an importer recognizes.

use strata_compiler::ir::{BinaryOp, ConvWindow, Dim, Graph, Op, ValueId};

/// One convolution found in the graph.
pub(super) struct ConvMatch {
    /// The image `[n, C, H, W]`.
    pub input: ValueId,
    /// The kernel parameter `[O, C, kh, kw]`, PyTorch's layout and ONNX's.
    pub weight: ValueId,
    /// The bias parameter `[O]`, if the chain adds one.
    pub bias: Option<ValueId>,
    pub window: ConvWindow,
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
    let [
        Dim::Fixed(o),
        Dim::Fixed(wc),
        Dim::Fixed(kh),
        Dim::Fixed(kw),
    ] = graph.ty(weight).shape.dims()[..]
    else {
        return None;
    };
    if wc != c || kh != window.kh || kw != window.kw {
        return None;
    }
    let mut inner = vec![windows, columns, product, kernel_flat];
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
    let image = only_user(graph, last, outputs)?;
    let (oh, ow) = window.out_size(h, w).ok()?;
    match &graph.node(image).op {
        Op::Reshape { shape }
            if shape.dims() == [n, Dim::Fixed(o), Dim::Fixed(oh), Dim::Fixed(ow)] => {}
        _ => return None,
    }
    Some((
        image,
        ConvMatch {
            input,
            weight,
            bias,
            window,
            inner,
        },
    ))
}
