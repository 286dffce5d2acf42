//! Nodes that are layers with weights: `Gemm` and `MatMul` (+ `Add`) as `dense`, `Conv`
//! as `conv2d`/`conv1d`, `ConvTranspose` as `conv_transpose2d`, pooling, `BatchNormalization`, `LayerNormalization`. Each is a
//! named instance (`layer conv1 = conv2d(4, 3, padding = 1)`) whose weights go into the
//! weights file under `NAME.weight`, `NAME.bias`, … in Strata's (PyTorch's) layouts.

use super::known::{Elems, Known, SymInt};
use super::source::number;
use super::tensor::Attrs;
use super::{Dyn, Importer, R, Val, View};
use crate::proto::pb;

impl Importer<'_> {
    /// Declares `layer NAME = CALL`.
    fn declare(&mut self, name: &str, call: String) {
        self.text.layers.push(format!("    layer {name} = {call}"));
    }

    /// `x |> NAME` with the result's shape.
    fn apply(&mut self, x: Dyn, name: &str, actual: Vec<SymInt>) -> Dyn {
        let expr = self.text.pipe(x.expr.clone(), name);
        Dyn {
            expr,
            actual,
            view: x.view,
            float: true,
        }
    }

    /// A dense layer of weight `w` `[out, in]` and bias `b` on `x` (in any lazy layout
    /// that keeps the last axis last).
    pub(super) fn dense(
        &mut self,
        n: &pb::NodeProto,
        x: Dyn,
        w: Known,
        b: Option<Known>,
    ) -> R<Dyn> {
        let [out, inp] = w.dims[..] else {
            return Err(format!("a weight of shape {:?}", w.dims));
        };
        let x = match &x.view {
            View::Perm(p) if p.last() == Some(&(p.len() - 1)) => x,
            View::Same => x,
            _ => self.plain(x)?,
        };
        if x.actual.last() != Some(&SymInt::fixed(inp as i64)) {
            return Err(format!(
                "a weight of {inp} inputs on a tensor of shape {:?}",
                x.actual
            ));
        }
        let named = if w
            .origin
            .as_deref()
            .is_some_and(|o| !o.starts_with("onnx::"))
        {
            Some(&w)
        } else {
            b.as_ref()
        };
        let name = self.instance_name(n, named, "dense");
        let bias_arg = if b.is_none() { ", bias = false" } else { "" };
        self.declare(&name, format!("dense({out}{bias_arg})"));
        self.add_weight(&format!("{name}.weight"), &[out, inp], w.as_f32()?)?;
        if let Some(b) = b {
            let v = b.as_f32()?;
            let v = match v.len() {
                1 => vec![v[0]; out],
                l if l == out => v,
                l => return Err(format!("a bias of {l} elements for {out} units")),
            };
            self.add_weight(&format!("{name}.bias"), &[out], v)?;
        }
        let mut actual = x.actual.clone();
        *actual.last_mut().expect("checked above") = SymInt::fixed(out as i64);
        Ok(self.apply(x, &name, actual))
    }

    /// `MatMul`: a weight (with the bias of the `Add` that follows it, when that is its
    /// only reader) is a dense layer, outside a loop's body; two model tensors are
    /// `matmul`.
    pub(super) fn matmul(&mut self, n: &pb::NodeProto) -> R<()> {
        Attrs::new(n).finish()?;
        let (a, b) = (self.need(n, 0)?, self.need(n, 1)?);
        if let (Val::Attn(x), Val::Attn(y)) = (&a, &b) {
            let v = self.attention_matmul(x, y)?;
            self.set(n, 0, v);
            return Ok(());
        }
        if let (Val::Attn(_), Val::Known(w)) = (&a, &b) {
            let (bias, add) = self.bias_after(n, w.dims.get(1).copied().unwrap_or(0));
            let wt = w.transpose(&[1, 0])?;
            let v = self
                .attention_end(&a, &wt, bias.as_ref())?
                .ok_or("an attention value in a product")?;
            self.finish_fused(n, add, v);
            return Ok(());
        }
        // In a loop's body a weight is the block's declared parameter (see `scan`), read
        // by a plain `matmul`.
        if let Val::Known(w) = &b
            && w.dims.len() == 2
            && !matches!(a, Val::Known(_))
            && !self.in_body
        {
            let (bias, add) = self.bias_after(n, w.dims[1]);
            let x = self.tensor(n, 0)?;
            let wt = w.transpose(&[1, 0])?;
            if let Some(v) = self.attention_start(n, &x, &wt, bias.as_ref())? {
                self.finish_fused(n, add, v);
                return Ok(());
            }
            let y = self.dense(n, x, wt, bias)?;
            self.finish_fused(n, add, Val::Dyn(y));
            return Ok(());
        }
        if matches!((&a, &b), (Val::Known(_), Val::Known(_))) {
            return Err("a product of two constants, which import does not fold".into());
        }
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        let y = self.tensor(n, 1)?;
        let y = self.plain(y)?;
        let (ra, rb) = (x.actual.len(), y.actual.len());
        if ra < 2 || rb < 2 || x.actual[ra - 1] != y.actual[rb - 2] {
            return Err("operands of matmul that do not match".into());
        }
        let mut actual = if ra >= rb {
            x.actual.clone()
        } else {
            y.actual.clone()
        };
        let r = actual.len();
        actual[r - 2] = x.actual[ra - 2];
        actual[r - 1] = y.actual[rb - 1];
        let expr = super::source::Expr::atom(format!("matmul({}, {})", x.expr.arg(), y.expr.arg()));
        self.set(n, 0, Val::Dyn(Dyn::new(expr, actual)));
        Ok(())
    }

    /// The bias of the `Add` that is the only reader of `n`'s output, and that node.
    fn bias_after(&self, n: &pb::NodeProto, units: usize) -> (Option<Known>, Option<usize>) {
        let out = &n.output[0];
        let readers = self.consumers.get(out).cloned().unwrap_or_default();
        if self.uses(out) != 1 || readers.len() != 1 {
            return (None, None);
        }
        let j = readers[0];
        let add = &self.graph.node[j];
        if add.op_type != "Add" || add.input.len() != 2 || !add.attribute.is_empty() {
            return (None, None);
        }
        let other = if add.input[0] == *out {
            &add.input[1]
        } else {
            &add.input[0]
        };
        match self.vals.get(other) {
            Some(Val::Known(k)) if k.elems.len() == units && k.dims.len() == 1 => {
                (Some(k.clone()), Some(j))
            }
            _ => (None, None),
        }
    }

    /// Sets the output of the fused `Add` (or of `n` when there is none).
    fn finish_fused(&mut self, n: &pb::NodeProto, add: Option<usize>, v: Val) {
        match add {
            Some(j) => {
                self.fused[j] = true;
                let graph = self.graph;
                self.set(&graph.node[j], 0, v);
            }
            None => self.set(n, 0, v),
        }
    }

    pub(super) fn gemm(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let alpha = a.float("alpha", 1.0)?;
        let beta = a.float("beta", 1.0)?;
        let trans_a = a.int("transA", 0)?;
        let trans_b = a.int("transB", 0)?;
        a.finish()?;
        if trans_a != 0 {
            return Err("`transA = 1`: the input transposed".into());
        }
        let w = self.known(n, 1, "the weight")?;
        if w.dims.len() != 2 {
            return Err("a weight that is not a matrix".into());
        }
        let mut w = if trans_b != 0 {
            w
        } else {
            w.transpose(&[1, 0])?
        };
        if alpha != 1.0 {
            w = Known {
                elems: Elems::F32(w.as_f32()?.iter().map(|x| x * alpha).collect()),
                ..w
            };
        }
        let bias = match self.input_val(n, 2)? {
            None => None,
            Some(Val::Known(c)) => Some(Known {
                dims: vec![c.elems.len()],
                elems: Elems::F32(c.as_f32()?.iter().map(|x| x * beta).collect()),
                origin: c.origin.clone(),
            }),
            Some(_) => return Err("a bias computed by the model".into()),
        };
        if let Some(v) = self.attention_end(&self.need(n, 0)?, &w, bias.as_ref())? {
            self.set(n, 0, v);
            return Ok(());
        }
        let x = self.tensor(n, 0)?;
        if x.shape().len() != 2 {
            return Err("an input that is not a matrix".into());
        }
        let y = self.dense(n, x, w, bias)?;
        self.set(n, 0, Val::Dyn(y));
        Ok(())
    }

    pub(super) fn conv(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let auto_pad = a.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let dilations = a.ints("dilations")?;
        let group = a.int("group", 1)?;
        let kernel_shape = a.ints("kernel_shape")?;
        let pads = a.ints("pads")?;
        let strides = a.ints("strides")?;
        a.finish()?;
        let w = self.known(n, 1, "the kernel")?;
        let bias = match self.input_val(n, 2)? {
            None => None,
            Some(Val::Known(k)) => Some(k),
            Some(_) => return Err("a bias computed by the model".into()),
        };
        let spatial = w
            .dims
            .len()
            .checked_sub(2)
            .ok_or("a kernel of rank below 3")?;
        if !(1..=2).contains(&spatial) {
            return Err(format!(
                "a {spatial}-D convolution; Strata has conv1d and conv2d"
            ));
        }
        if w.dims.contains(&0) {
            return Err(format!("a kernel of shape {:?}", w.dims));
        }
        let kernel: Vec<usize> = w.dims[2..].to_vec();
        if let Some(k) = &kernel_shape
            && k.iter().map(|&x| x as usize).ne(kernel.iter().copied())
        {
            return Err("`kernel_shape` differs from the kernel's".into());
        }
        let one = |v: Option<Vec<i64>>, what: &str| -> R<usize> {
            let v = v.unwrap_or_else(|| vec![1; spatial]);
            match v.iter().all(|&x| x == v[0]) && v.len() == spatial && v[0] > 0 {
                true => Ok(v[0] as usize),
                false => Err(format!("{what} {v:?}: Strata takes one for every axis")),
            }
        };
        let stride = one(strides, "strides")?;
        let dilation = one(dilations, "dilations")?;
        let pads: Vec<usize> = pads
            .unwrap_or_else(|| vec![0; 2 * spatial])
            .iter()
            .map(|&p| usize::try_from(p).map_err(|_| format!("padding {p}")))
            .collect::<R<_>>()?;
        if pads.len() != 2 * spatial {
            return Err(format!("pads {pads:?}"));
        }
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        if x.actual.len() != spatial + 2 {
            return Err(format!(
                "an input of rank {} for a {spatial}-D kernel",
                x.actual.len()
            ));
        }
        let out_c = w.dims[0];
        let (padding, pads_begin_end): (String, Vec<(usize, usize)>) = match auto_pad.as_str() {
            "NOTSET" | "VALID" => {
                let sides: Vec<(usize, usize)> =
                    (0..spatial).map(|i| (pads[i], pads[i + spatial])).collect();
                let text = if sides.iter().all(|&(b, e)| b == sides[0].0 && e == b) {
                    (sides[0].0 > 0).then(|| sides[0].0.to_string())
                } else if spatial == 2 && sides.iter().all(|&(b, e)| b == e) {
                    Some(format!("[{}, {}]", sides[0].0, sides[1].0))
                } else {
                    let list: Vec<String> = sides
                        .iter()
                        .flat_map(|&(b, e)| [b.to_string(), e.to_string()])
                        .collect();
                    Some(format!("[{}]", list.join(", ")))
                };
                (
                    text.map_or(String::new(), |t| format!(", padding = {t}")),
                    sides,
                )
            }
            "SAME_UPPER" if stride == 1 => {
                let sides = kernel
                    .iter()
                    .map(|&k| {
                        let total = (k - 1) * dilation;
                        (total / 2, total - total / 2)
                    })
                    .collect();
                (", padding = \"same\"".into(), sides)
            }
            other => {
                return Err(format!(
                    "`auto_pad = {other}` (Strata pads \"same\" at stride 1 only, the extra zero at the end)"
                ));
            }
        };
        let mut actual = vec![x.actual[0], SymInt::fixed(out_c as i64)];
        for i in 0..spatial {
            let size = x.actual[i + 2]
                .concrete()
                .ok_or("the batch as a spatial axis")? as usize;
            let reach = dilation * (kernel[i] - 1) + 1;
            let padded = size + pads_begin_end[i].0 + pads_begin_end[i].1;
            if padded < reach {
                return Err("a kernel larger than its padded input".into());
            }
            actual.push(SymInt::fixed(((padded - reach) / stride + 1) as i64));
        }
        let kernel_arg = if kernel.iter().all(|&k| k == kernel[0]) {
            kernel[0].to_string()
        } else {
            format!("[{}, {}]", kernel[0], kernel[1])
        };
        let mut call = format!("conv{spatial}d({out_c}, {kernel_arg}");
        if stride != 1 {
            call.push_str(&format!(", stride = {stride}"));
        }
        call.push_str(&padding);
        if dilation != 1 {
            call.push_str(&format!(", dilation = {dilation}"));
        }
        if group != 1 {
            call.push_str(&format!(", groups = {group}"));
        }
        if bias.is_none() {
            call.push_str(", bias = false");
        }
        call.push(')');
        let kind = if spatial == 2 { "conv2d" } else { "conv1d" };
        self.convolution_layer(n, kind, call, &w, bias.as_ref(), out_c, x, actual)
    }

    /// `ConvTranspose` (2-D, one group) as `conv_transpose2d`: the kernel `[C, O, kh,
    /// kw]` is PyTorch's layout. ONNX's output is the full one with `output_padding`
    /// zeros past its end, cropped by `pads` (begin, end); Strata's crops `padding` from
    /// both sides, so unequal pads are a larger `output_padding` where that stays below
    /// the stride (the end the same, the extra rows zeros either way).
    pub(super) fn conv_transpose(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let auto_pad = a.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let dilations = a.ints("dilations")?;
        let group = a.int("group", 1)?;
        let kernel_shape = a.ints("kernel_shape")?;
        let output_padding = a.ints("output_padding")?;
        let output_shape = a.ints("output_shape")?;
        let pads = a.ints("pads")?;
        let strides = a.ints("strides")?;
        a.finish()?;
        if auto_pad != "NOTSET" {
            return Err(format!("`auto_pad = {auto_pad}`: give `pads` instead"));
        }
        if output_shape.is_some() {
            return Err("`output_shape`: give `pads` and `output_padding` instead".into());
        }
        if group != 1 {
            return Err(format!(
                "`group = {group}`: Strata's conv_transpose2d has one"
            ));
        }
        let w = self.known(n, 1, "the kernel")?;
        let bias = match self.input_val(n, 2)? {
            None => None,
            Some(Val::Known(k)) => Some(k),
            Some(_) => return Err("a bias computed by the model".into()),
        };
        let [c, out_c, kh, kw] = w.dims[..] else {
            return Err(format!(
                "a kernel of shape {:?}; Strata has conv_transpose2d",
                w.dims
            ));
        };
        if w.dims.contains(&0) {
            return Err(format!("a kernel of shape {:?}", w.dims));
        }
        if let Some(k) = &kernel_shape
            && k[..] != [kh as i64, kw as i64]
        {
            return Err("`kernel_shape` differs from the kernel's".into());
        }
        let one = |v: Option<Vec<i64>>, what: &str| -> R<usize> {
            let v = v.unwrap_or_else(|| vec![1; 2]);
            match v.len() == 2 && v[0] == v[1] && v[0] > 0 {
                true => Ok(v[0] as usize),
                false => Err(format!("{what} {v:?}: Strata takes one for both axes")),
            }
        };
        let stride = one(strides, "strides")?;
        let dilation = one(dilations, "dilations")?;
        let counts = |v: Option<Vec<i64>>, len: usize, what: &str| -> R<Vec<usize>> {
            let v = v.unwrap_or_else(|| vec![0; len]);
            match v.len() == len && v.iter().all(|&x| x >= 0) {
                true => Ok(v.iter().map(|&x| x as usize).collect()),
                false => Err(format!("{what} {v:?}")),
            }
        };
        let pads = counts(pads, 4, "pads")?;
        let extra = counts(output_padding, 2, "output_padding")?;
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        if x.actual.len() != 4 || x.actual[1] != SymInt::fixed(c as i64) {
            return Err(format!(
                "an input of shape {:?} for a kernel of {c} input channels",
                x.actual
            ));
        }
        let mut padding = [0; 2];
        let mut out_padding = [0; 2];
        let mut actual = vec![x.actual[0], SymInt::fixed(out_c as i64)];
        for (i, k) in [kh, kw].into_iter().enumerate() {
            let (begin, end) = (pads[i], pads[i + 2]);
            let size = x.actual[i + 2]
                .concrete()
                .ok_or("the batch as a spatial axis")? as usize;
            let full = (size - 1) * stride + dilation * (k - 1) + 1;
            // (full ++ zeros(extra))[begin .. full + extra - end], as Strata writes it.
            let grown = (extra[i] + begin)
                .checked_sub(end)
                .filter(|&q| q < stride.max(dilation));
            let Some(grown) = grown else {
                return Err(format!(
                    "pads {:?} with output_padding {extra:?}: Strata crops the same from both sides and pads below the stride",
                    pads
                ));
            };
            let len = (full + grown).checked_sub(2 * begin).filter(|&n| n > 0);
            let len = len.ok_or("pads that crop the whole output")?;
            padding[i] = begin;
            out_padding[i] = grown;
            actual.push(SymInt::fixed(len as i64));
        }
        let pair = |v: [usize; 2]| match v[0] == v[1] {
            true => v[0].to_string(),
            false => format!("[{}, {}]", v[0], v[1]),
        };
        let mut call = format!("conv_transpose2d({out_c}, {}", pair([kh, kw]));
        if stride != 1 {
            call.push_str(&format!(", stride = {stride}"));
        }
        if padding != [0, 0] {
            call.push_str(&format!(", padding = {}", pair(padding)));
        }
        if out_padding != [0, 0] {
            call.push_str(&format!(", output_padding = {}", pair(out_padding)));
        }
        if dilation != 1 {
            call.push_str(&format!(", dilation = {dilation}"));
        }
        if bias.is_none() {
            call.push_str(", bias = false");
        }
        call.push(')');
        self.convolution_layer(
            n,
            "conv_transpose2d",
            call,
            &w,
            bias.as_ref(),
            out_c,
            x,
            actual,
        )
    }

    /// A convolution layer's instance (`call` is its text): declared, its kernel `w` and
    /// optional bias (`out_c` values) as its weights, and applied to `x`.
    #[allow(clippy::too_many_arguments)]
    fn convolution_layer(
        &mut self,
        n: &pb::NodeProto,
        kind: &'static str,
        call: String,
        w: &Known,
        bias: Option<&Known>,
        out_c: usize,
        x: Dyn,
        actual: Vec<SymInt>,
    ) -> R<()> {
        let name = self.instance_name(n, Some(w), kind);
        self.declare(&name, call);
        self.add_weight(&format!("{name}.weight"), &w.dims, w.as_f32()?)?;
        if let Some(b) = bias {
            if b.elems.len() != out_c {
                return Err("a bias of another length than the output channels".into());
            }
            self.add_weight(&format!("{name}.bias"), &[out_c], b.as_f32()?)?;
        }
        let y = self.apply(x, &name, actual);
        self.set(n, 0, Val::Dyn(y));
        Ok(())
    }

    pub(super) fn pool(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let max = n.op_type == "MaxPool";
        let auto_pad = a.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let ceil = a.int("ceil_mode", 0)?;
        let dilations = a.ints("dilations")?;
        let kernel = a.ints("kernel_shape")?.ok_or("no `kernel_shape`")?;
        let pads = a.ints("pads")?;
        let strides = a.ints("strides")?;
        if max {
            a.int("storage_order", 0)?;
        } else {
            a.int("count_include_pad", 0)?;
        }
        a.finish()?;
        if n.output.get(1).is_some_and(|o| self.uses(o) > 0) {
            return Err("its indices output is read".into());
        }
        if !(auto_pad == "NOTSET" || auto_pad == "VALID") {
            return Err(format!(
                "`auto_pad = {auto_pad}`: Strata's pooling has no padding"
            ));
        }
        if pads.as_ref().is_some_and(|p| p.iter().any(|&x| x != 0)) {
            return Err("padding: Strata's pooling has no padding (pad with a convolution's padding, or concat zeros)".into());
        }
        if ceil != 0 {
            return Err(
                "`ceil_mode = 1`: Strata drops a window running past the end, as `ceil_mode = 0`"
                    .into(),
            );
        }
        if dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&x| x != 1))
        {
            return Err("dilated pooling".into());
        }
        let spatial = kernel.len();
        if !(1..=2).contains(&spatial) || kernel.iter().any(|&k| k <= 0) {
            return Err(format!("a kernel of {kernel:?}"));
        }
        let strides = strides.unwrap_or_else(|| vec![1; spatial]);
        if strides.len() != spatial || strides.iter().any(|&s| s <= 0) {
            return Err(format!("strides {strides:?}"));
        }
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        if x.actual.len() != spatial + 2 {
            return Err("an input of another rank than the kernel's + 2".into());
        }
        let mut actual = x.actual[..2].to_vec();
        for i in 0..spatial {
            let size = x.actual[i + 2]
                .concrete()
                .ok_or("the batch as a spatial axis")?;
            if size < kernel[i] {
                return Err("a window larger than the input".into());
            }
            actual.push(SymInt::fixed((size - kernel[i]) / strides[i] + 1));
        }
        let list = |v: &[i64]| match v.iter().all(|&x| x == v[0]) {
            true => v[0].to_string(),
            false => format!(
                "[{}]",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let f = format!("{}_pool{spatial}d", if max { "max" } else { "avg" });
        let mut stage = format!("{f}({}", list(&kernel));
        if strides != kernel {
            stage.push_str(&format!(", stride = {}", list(&strides)));
        }
        stage.push(')');
        let expr = self.text.pipe(x.expr.clone(), &stage);
        self.set(n, 0, Val::Dyn(Dyn { expr, actual, ..x }));
        Ok(())
    }

    pub(super) fn global_avg_pool(&mut self, n: &pb::NodeProto) -> R<()> {
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        let shape = x.actual.clone();
        match shape.len() {
            4 => {
                let expr = self.text.pipe(x.expr.clone(), "global_avg_pool");
                let actual = shape[..2].to_vec();
                let view =
                    View::Reshape(vec![shape[0], shape[1], SymInt::fixed(1), SymInt::fixed(1)]);
                self.set(
                    n,
                    0,
                    Val::Dyn(Dyn {
                        expr,
                        actual,
                        view,
                        float: true,
                    }),
                );
            }
            3 => {
                let expr = self
                    .text
                    .pipe(x.expr.clone(), "mean(axis = 2, keepdims = true)");
                let actual = vec![shape[0], shape[1], SymInt::fixed(1)];
                self.set(n, 0, Val::Dyn(Dyn { expr, actual, ..x }));
            }
            r => return Err(format!("an input of rank {r}")),
        }
        Ok(())
    }

    pub(super) fn batch_norm(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let eps = a.float("epsilon", 1e-5)?;
        let momentum = a.float("momentum", 0.9)?;
        let training = a.int("training_mode", 0)?;
        a.finish()?;
        if training != 0 {
            return Err("`training_mode = 1`: import reads a model exported for inference".into());
        }
        let parts: Vec<Known> = (1..5)
            .map(|i| {
                self.known(
                    n,
                    i,
                    ["", "the scale", "the bias", "the mean", "the variance"][i],
                )
            })
            .collect::<R<_>>()?;
        let x = self.tensor(n, 0)?;
        let x = self.plain(x)?;
        let c = x
            .actual
            .get(1)
            .and_then(|c| c.concrete())
            .ok_or("no channel axis")? as usize;
        if parts.iter().any(|p| p.elems.len() != c) {
            return Err("statistics of another length than the channels".into());
        }
        let name = self.instance_name(n, Some(&parts[0]), "batch_norm");
        let mut args = Vec::new();
        if (1.0 - momentum - 0.1).abs() > 1e-6 {
            args.push(format!("momentum = {}", number(1.0 - momentum)));
        }
        if eps != 1e-5 {
            args.push(format!("eps = {}", number(eps)));
        }
        self.declare(&name, format!("batch_norm({})", args.join(", ")));
        for (key, p) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(&parts)
        {
            self.add_weight(&format!("{name}.{key}"), &[c], p.as_f32()?)?;
        }
        let actual = x.actual.clone();
        let y = self.apply(x, &name, actual);
        self.set(n, 0, Val::Dyn(y));
        Ok(())
    }

    pub(super) fn layer_norm(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let axis = a.int("axis", -1)?;
        let eps = a.float("epsilon", 1e-5)?;
        let stash = a.int("stash_type", 1)?;
        a.finish()?;
        let _ = stash; // statistics in f32 either way
        if n.output.iter().skip(1).any(|o| self.uses(o) > 0) {
            return Err("its mean or inverse deviation output is read".into());
        }
        let x = self.tensor(n, 0)?;
        let rank = x.shape().len();
        if super::known::norm_axis(axis, rank)? != rank - 1 {
            return Err(format!(
                "`axis = {axis}`: Strata's layer_norm normalizes over the last axis"
            ));
        }
        let x = match &x.view {
            View::Perm(p) if p.last() == Some(&(rank - 1)) => x,
            View::Same => x,
            _ => self.plain(x)?,
        };
        let d = x
            .actual
            .last()
            .and_then(|d| d.concrete())
            .ok_or("no last axis")? as usize;
        let scale = self.known(n, 1, "the scale")?;
        let bias = match self.input_val(n, 2)? {
            None => None,
            Some(Val::Known(k)) => Some(k),
            Some(_) => return Err("a bias computed by the model".into()),
        };
        let name = self.instance_name(n, Some(&scale), "layer_norm");
        let args = if eps != 1e-5 {
            format!("eps = {}", number(eps))
        } else {
            String::new()
        };
        self.declare(&name, format!("layer_norm({args})"));
        let full = |k: &Known| -> R<Vec<f32>> {
            let v = k.as_f32()?;
            match v.len() {
                1 => Ok(vec![v[0]; d]),
                l if l == d => Ok(v),
                _ => Err("a scale or bias of another length than the last axis".into()),
            }
        };
        let s = full(&scale)?;
        self.add_weight(&format!("{name}.weight"), &[d], s)?;
        let b = match &bias {
            Some(b) => full(b)?,
            None => vec![0.0; d],
        };
        self.add_weight(&format!("{name}.bias"), &[d], b)?;
        let actual = x.actual.clone();
        let y = self.apply(x, &name, actual);
        self.set(n, 0, Val::Dyn(y));
        Ok(())
    }
}
