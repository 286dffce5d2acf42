//! The sliding-window ops as standard ONNX ops, where they are not part of a layer the
//! export recognizes (`Conv`, `ConvTranspose`): `im2col` as a `Gather` with a constant
//! index table, `col2im` as a `MatMul` with a constant 0/1 fold matrix. Both are exact:
//! every entry is a copy or a sum of copies, padding zeros included.

use super::{ExportError, GraphOut, Writer, with_doc};
use crate::proto::{Attr, attribute, f32_tensor, i64_tensor, node};
use strata_compiler::ir::{ConvWindow, Dim, Graph, ValueId};

impl Writer<'_> {
    /// `im2col` as standard ops: the image padded (`Pad`), flattened per sample
    /// (`Reshape` to `[n, C * Hp * Wp]`), and every tap's pixels gathered by a constant
    /// index table (`Gather` along axis 1 with `int64[C, kh, kw, OH, OW]`), so the result
    /// is exactly Strata's `[n, C, kh, kw, OH, OW]`, padding zeros included.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_im2col(
        &mut self,
        graph: &Graph,
        v: ValueId,
        window: &strata_compiler::ir::ConvWindow,
        input: &str,
        result: &str,
        out: &mut GraphOut,
        at: &str,
    ) -> Result<(), ExportError> {
        let operand = graph.operands(v)[0];
        let dims = graph.ty(operand).shape.dims().to_vec();
        let [_, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] = dims[..] else {
            return Err(ExportError::Internal(format!(
                "im2col {v} of a non-image {}",
                graph.ty(operand)
            )));
        };
        let (oh, ow) = window
            .out_size(h, w)
            .map_err(|e| ExportError::Internal(format!("im2col {v}: {e}")))?;
        let p = window.padding;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let mut padded = input.to_string();
        if p > 0 {
            let p = p as i64;
            let pads = self.i64s(out, &[0, 0, p, p, 0, 0, p, p]);
            padded = self.fresh();
            out.nodes.push(with_doc(
                node("Pad", &[input, &pads], &[&padded], vec![]),
                at,
            ));
        }
        let flat_shape = self.i64s(out, &[0, (c * hp * wp) as i64]);
        let flat = self.fresh();
        out.nodes.push(with_doc(
            node("Reshape", &[&padded, &flat_shape], &[&flat], vec![]),
            at,
        ));
        let (kh, kw, s, d) = (window.kh, window.kw, window.stride, window.dilation);
        // `out[n, c, i, j, oh, ow]` reads padded pixel `(oh s + i d, ow s + j d)` of `c`.
        let mut index = Vec::with_capacity((oh * ow * c * kh * kw) as usize);
        for ch in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    for y in 0..oh {
                        for x in 0..ow {
                            let row = y * s + i * d;
                            let col = x * s + j * d;
                            index.push((ch * hp * wp + row * wp + col) as i64);
                        }
                    }
                }
            }
        }
        let index = self.constant(out, i64_tensor("", &[c, kh, kw, oh, ow], &index));
        let mut gather = node(
            "Gather",
            &[&flat, &index],
            &[result],
            vec![attribute("axis", Attr::Int(1))],
        );
        gather.name = result.to_string();
        out.nodes.push(with_doc(gather, at));
        Ok(())
    }

    /// `col2im` as standard ops: the columns `[n, C, kh, kw, OH, OW]` reshaped to `[n, C,
    /// kh kw OH OW]`, multiplied by a constant fold matrix `[kh kw OH OW, H W]` (1 where a
    /// tap reads a pixel of the image, 0 elsewhere and for taps in the padding), and
    /// reshaped to `[n, C, H, W]`: every pixel the sum of the column entries that read it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_col2im(
        &mut self,
        v: ValueId,
        window: &ConvWindow,
        [c, h, w]: [u64; 3],
        input: &str,
        result: &str,
        out: &mut GraphOut,
        at: &str,
    ) -> Result<(), ExportError> {
        let (oh, ow) = window
            .out_size(h, w)
            .map_err(|e| ExportError::Internal(format!("col2im {v}: {e}")))?;
        let (kh, kw, s, d, p) = (
            window.kh,
            window.kw,
            window.stride,
            window.dilation,
            window.padding,
        );
        let taps = kh * kw * oh * ow;
        let pixels = h * w;
        let size = taps
            .checked_mul(pixels)
            .filter(|&n| n <= u64::from(u32::MAX));
        let Some(size) = size else {
            return Err(ExportError::Unsupported {
                op: "col2im",
                at: at.to_string(),
                reason: format!(
                    "its fold matrix would hold {taps} x {pixels} entries; written as one \
                     ConvTranspose it would not need one"
                ),
            });
        };
        let mut fold = vec![0.0f32; size as usize];
        let mut tap = 0;
        for i in 0..kh {
            for j in 0..kw {
                for y in 0..oh {
                    for x in 0..ow {
                        // The padded pixel `(y s + i d, x s + j d)`, in the image or not.
                        let (row, col) = (y * s + i * d, x * s + j * d);
                        if (p..h + p).contains(&row) && (p..w + p).contains(&col) {
                            let pixel = (row - p) * w + (col - p);
                            fold[(tap * pixels + pixel) as usize] = 1.0;
                        }
                        tap += 1;
                    }
                }
            }
        }
        let fold = self.constant(out, f32_tensor("", &[taps, pixels], &fold));
        let rows_shape = self.i64s(out, &[0, c as i64, taps as i64]);
        let rows = self.fresh();
        out.nodes.push(with_doc(
            node("Reshape", &[input, &rows_shape], &[&rows], vec![]),
            at,
        ));
        let summed = self.fresh();
        out.nodes.push(with_doc(
            node("MatMul", &[&rows, &fold], &[&summed], vec![]),
            at,
        ));
        let image_shape = self.i64s(out, &[0, c as i64, h as i64, w as i64]);
        let mut image = node("Reshape", &[&summed, &image_shape], &[result], vec![]);
        image.name = result.to_string();
        out.nodes.push(with_doc(image, at));
        Ok(())
    }
}
