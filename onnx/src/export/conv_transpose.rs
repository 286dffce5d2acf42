//! The transposed convolution pattern: `conv_transpose2d` elaborates to the product of
//! the kernel `[C, O, kh, kw]` reshaped to `[C, O kh kw]` and transposed with the image
//! reshaped to `[n, C, H W]`, reshaped to every pixel's window of contributions `[n, O,
//! kh, kw, H, W]`, and `col2im` (unpadded) summing the windows into the full output
//! `(H - 1) stride + dilation (kh - 1) + 1` high. After it come, per spatial axis, zeros
//! concatenated past the end (`output_padding`) and a slice (`padding` cropped from each
//! side), then an optional bias parameter `[O]` added as `[O, 1, 1]`. Where the graph
//! holds that chain with no other use of its inner values, the export writes one ONNX
//! `ConvTranspose` (PyTorch's `ConvTranspose2d`: the same kernel layout, strides,
//! dilations, `pads` and `output_padding`) instead of the ops one by one.
//!
//! ONNX's output is the full one with `output_padding` zeros past its end, cropped by
//! `pads` (begin, end) on each axis; so a chain of trailing-zero concatenations and slices
//! on an axis is `(full ++ zeros(e))[s .. s + len]`, which is `output_padding = e`, `pads =
//! (s, full + e - s - len)`. The chain is followed as long as it keeps that form.

use super::conv::{is_zeros, only_user};
use strata_compiler::ir::{BinaryOp, Dim, Graph, Op, ValueId};

/// One transposed convolution found in the graph.
pub(super) struct ConvTransposeMatch {
    /// The image `[n, C, H, W]`.
    pub input: ValueId,
    /// The kernel parameter `[C, O, kh, kw]`, PyTorch's layout and ONNX's.
    pub weight: ValueId,
    /// The bias parameter `[O]`, if the chain adds one.
    pub bias: Option<ValueId>,
    pub kernel: [u64; 2],
    pub stride: u64,
    pub dilation: u64,
    /// ONNX's `pads`: `[top, left, bottom, right]`.
    pub pads: [u64; 4],
    pub output_padding: [u64; 2],
    /// The values of the chain that the `ConvTranspose` replaces (not written); the
    /// reshapes of the kernel and the image and the zeros, which other values may read
    /// too, are not among them.
    pub inner: Vec<ValueId>,
}

/// The transposed convolutions of `graph`, keyed by the chain's last value.
pub(super) fn find_conv_transposes(graph: &Graph) -> Vec<(ValueId, ConvTransposeMatch)> {
    let outputs: Vec<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    graph
        .values()
        .into_iter()
        .filter_map(|v| match_from(graph, v, &outputs))
        .collect()
}

/// The operand of `v` when `v` is a reshape.
fn reshape_of(graph: &Graph, v: ValueId) -> Option<ValueId> {
    match graph.node(v).op {
        Op::Reshape { .. } => graph.operands(v).first().copied(),
        _ => None,
    }
}

fn fixed(graph: &Graph, v: ValueId) -> Option<Vec<u64>> {
    graph.ty(v).shape.dims().iter().map(|d| d.fixed()).collect()
}

/// An axis of the output as `(full ++ zeros(extension))[start .. start + len]`.
#[derive(Clone, Copy)]
struct AxisCrop {
    full: u64,
    extension: u64,
    start: u64,
    len: u64,
}

impl AxisCrop {
    fn reaches_end(&self) -> bool {
        self.start + self.len == self.full + self.extension
    }
}

fn match_from(
    graph: &Graph,
    summed: ValueId,
    outputs: &[ValueId],
) -> Option<(ValueId, ConvTransposeMatch)> {
    let Op::Col2Im {
        window,
        channels: o,
        height,
        width,
    } = graph.node(summed).op
    else {
        return None;
    };
    if window.padding != 0 {
        return None;
    }
    // col2im <- reshape [n, O, kh, kw, H, W] <- matmul(transpose(reshape(weight)), reshape(x))
    let windows = *graph.operands(summed).first()?;
    let product = reshape_of(graph, windows)?;
    if graph.node(product).op != Op::MatMul
        || only_user(graph, windows, outputs)? != summed
        || only_user(graph, product, outputs)? != windows
    {
        return None;
    }
    let [kernel_t, pixels] = graph.operands(product)[..] else {
        return None;
    };
    // The kernel's and the image's reshapes may be shared (a layer applied twice, one
    // image read by several layers): the writer drops them when nothing else reads them.
    if graph.node(kernel_t).op != (Op::Transpose { perm: vec![1, 0] }) {
        return None;
    }
    let kernel_flat = *graph.operands(kernel_t).first()?;
    let weight = reshape_of(graph, kernel_flat)?;
    let input = reshape_of(graph, pixels)?;
    if !matches!(graph.node(weight).op, Op::Param { .. }) {
        return None;
    }
    let [c, wo, kh, kw] = fixed(graph, weight)?[..] else {
        return None;
    };
    let [n, Dim::Fixed(ic), Dim::Fixed(h), Dim::Fixed(w)] = graph.ty(input).shape.dims()[..] else {
        return None;
    };
    let (s, d) = (window.stride, window.dilation);
    let full = [
        (h - 1) * s + d * (kh - 1) + 1,
        (w - 1) * s + d * (kw - 1) + 1,
    ];
    let shapes_agree = ic == c
        && wo == o
        && [kh, kw] == [window.kh, window.kw]
        && [height, width] == full
        && graph.ty(windows).shape.dims()
            == [
                n,
                Dim::Fixed(o),
                Dim::Fixed(kh),
                Dim::Fixed(kw),
                Dim::Fixed(h),
                Dim::Fixed(w),
            ]
        && graph.ty(pixels).shape.dims() == [n, Dim::Fixed(c), Dim::Fixed(h * w)];
    if !shapes_agree {
        return None;
    }
    let mut inner = vec![summed, windows, product];
    let mut axes = full.map(|full| AxisCrop {
        full,
        extension: 0,
        start: 0,
        len: full,
    });
    let mut last = summed;
    // Trailing zeros and slices on the spatial axes, as long as they keep the form.
    while let Some(next) = only_user(graph, last, outputs) {
        match graph.node(next).op {
            Op::Slice { axis, start, len } if axis == 2 || axis == 3 => {
                let a = &mut axes[axis - 2];
                a.start += start;
                a.len = len;
            }
            Op::Concat { axis } if axis == 2 || axis == 3 => {
                let [first, zeros] = graph.operands(next)[..] else {
                    break;
                };
                let a = &mut axes[axis - 2];
                if first != last || !is_zeros(graph, zeros) || !a.reaches_end() {
                    break;
                }
                let extra = graph.ty(zeros).shape.dims().get(axis)?.fixed()?;
                a.extension += extra;
                a.len += extra;
            }
            _ => break,
        }
        inner.push(next);
        last = next;
    }
    // ONNX's output_padding is below the stride (or the dilation), as Strata's is.
    if axes.iter().any(|a| a.extension >= s.max(d)) {
        return None;
    }
    let mut bias = None;
    if let Some(next) = only_user(graph, last, outputs)
        && graph.node(next).op == Op::Binary(BinaryOp::Add)
        && let Some(column) = graph.operands(next).into_iter().find(|x| *x != last)
        && let Some(b) = reshape_of(graph, column)
        && only_user(graph, column, outputs) == Some(next)
        && matches!(graph.node(b).op, Op::Param { .. })
        && graph.ty(b).shape.dims() == [Dim::Fixed(o)]
        && graph.ty(column).shape.dims() == [Dim::Fixed(o), Dim::Fixed(1), Dim::Fixed(1)]
        && graph.ty(next).shape == graph.ty(last).shape
    {
        bias = Some(b);
        inner.extend([column, next]);
        last = next;
    }
    // The last value is the ConvTranspose's result, written; the rest are replaced.
    inner.retain(|&v| v != last);
    let [ah, aw] = axes;
    Some((
        last,
        ConvTransposeMatch {
            input,
            weight,
            bias,
            kernel: [kh, kw],
            stride: s,
            dilation: d,
            pads: [
                ah.start,
                aw.start,
                ah.full + ah.extension - ah.start - ah.len,
                aw.full + aw.extension - aw.start - aw.len,
            ],
            output_padding: [ah.extension, aw.extension],
            inner,
        },
    ))
}
