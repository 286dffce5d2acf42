//! Ops that move elements without computing: `Gather`, `Squeeze`/`Unsqueeze`,
//! `Concat`, `Slice`, `Reshape`/`Flatten`, `Transpose`, and the reductions. On known
//! tensors (shapes, constants) they fold; on model tensors they become `slice`,
//! `concat`, `reshape`, `transpose` and `sum`/`mean`/`max`/`min`, with reshapes and
//! transposes kept lazy ([`View`]) until a value is used in that layout; on recurrent
//! and attention values they follow the layout those subgraphs move through.

use super::attention;
use super::known::{BinOp, Elems, Known, SymInt, broadcast, check_perm, norm_axis, numel};
use super::source::{Expr, axes_arg};
use super::tensor::Attrs;
use super::{Dyn, Importer, R, Val, View, dims_show};
use crate::proto::pb;

impl Importer<'_> {
    pub(super) fn gather(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let axis = a.int("axis", 0)?;
        a.finish()?;
        if let (Val::Known(table), Some(Val::Dyn(ids))) = (self.need(n, 0)?, self.input_val(n, 1)?)
        {
            return self.embedding(n, table, ids, axis);
        }
        if let Some(Val::Guard(ids)) = self.input_val(n, 1)? {
            let table = self.known(n, 0, "the table of a guarded gather")?;
            let v = self.guard_gather(n, table, &ids, axis)?;
            self.set(n, 0, v);
            return Ok(());
        }
        let idx = self.known(n, 1, "the indices")?;
        let idx_values = idx.as_i64s()?;
        match self.need(n, 0)? {
            Val::Known(k) => {
                let axis = norm_axis(axis, k.dims.len())?;
                let g = k.gather(axis, &idx_values, &idx.dims)?;
                self.set(n, 0, Val::Known(g));
            }
            Val::Attn(a) => {
                let axis = norm_axis(axis, a.shape.len())?;
                let mut shape = a.shape[..axis].to_vec();
                shape.extend(idx.dims.iter().map(|&d| SymInt::fixed(d as i64)));
                shape.extend_from_slice(&a.shape[axis + 1..]);
                self.set(n, 0, Val::Attn(attention::AttnVal { shape, ..a }));
            }
            v => {
                if let Some(out) = self.rec_last_step(n, &v, axis, &idx)? {
                    self.set(n, 0, Val::Dyn(out));
                    return Ok(());
                }
                let d = self.tensor(n, 0)?;
                let d = self.plain(d)?;
                let axis = norm_axis(axis, d.actual.len())?;
                let len = d.actual[axis]
                    .concrete()
                    .ok_or("a gather along the batch")?;
                let [i] = idx_values[..] else {
                    return Err("a gather of more than one index from a model tensor".into());
                };
                let i = if i < 0 { i + len } else { i };
                if !(0..len).contains(&i) {
                    return Err(format!("index {i} is outside an axis of {len}"));
                }
                let e = self
                    .text
                    .pipe(d.expr.clone(), &format!("slice({i}, 1, axis = {axis})"));
                let mut shape = d.actual.clone();
                shape[axis] = SymInt::fixed(1);
                let mut target = d.actual.clone();
                if idx.dims.is_empty() {
                    target.remove(axis);
                }
                let out = Dyn {
                    expr: e,
                    actual: shape,
                    view: View::Reshape(target),
                    float: d.float,
                };
                self.set(n, 0, Val::Dyn(out));
            }
        }
        Ok(())
    }

    pub(super) fn squeeze(&mut self, n: &pb::NodeProto, a: Attrs) -> R<()> {
        let unsqueeze = n.op_type == "Unsqueeze";
        a.finish()?;
        let v = self.need(n, 0)?;
        let shape = self.shape_of(&v);
        let axes: Option<Vec<i64>> = match self.input_val(n, 1)? {
            Some(Val::Known(k)) => Some(k.as_i64s()?),
            Some(_) => return Err("axes computed by the model".into()),
            None => None,
        };
        let target: Vec<SymInt> = if unsqueeze {
            let axes = axes.ok_or("no axes")?;
            let rank = shape.len() + axes.len();
            let mut axes: Vec<usize> =
                axes.iter().map(|&x| norm_axis(x, rank)).collect::<R<_>>()?;
            axes.sort_unstable();
            let mut out = shape.clone();
            for &ax in &axes {
                if ax > out.len() {
                    return Err("unsqueeze axes out of range".into());
                }
                out.insert(ax, SymInt::fixed(1));
            }
            out
        } else {
            let axes: Vec<usize> = match axes {
                Some(ax) => ax
                    .iter()
                    .map(|&x| norm_axis(x, shape.len()))
                    .collect::<R<_>>()?,
                None => (0..shape.len())
                    .filter(|&i| shape[i] == SymInt::fixed(1))
                    .collect(),
            };
            if axes.iter().any(|&i| shape[i] != SymInt::fixed(1)) {
                return Err("squeezes an axis that is not of size 1".into());
            }
            shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, s)| *s)
                .collect()
        };
        if let Val::Attn(a) = &v {
            let out = Val::Attn(attention::AttnVal {
                shape: target,
                ..a.clone()
            });
            self.set(n, 0, out);
            return Ok(());
        }
        if let Val::Rec(r) = &v
            && let Some(out) = self.rec_squeeze(r, &target)?
        {
            self.set(n, 0, out);
            return Ok(());
        }
        if let Val::Guard(g) = &v {
            let out = self
                .guard_unsqueeze(g, &target)
                .ok_or_else(|| g.unfinished())?;
            self.set(n, 0, out);
            return Ok(());
        }
        if let Val::Fill { value, .. } = v {
            self.set(
                n,
                0,
                Val::Fill {
                    value,
                    shape: target,
                },
            );
            return Ok(());
        }
        if let Val::Known(k) = v {
            let dims = target
                .iter()
                .map(|s| s.concrete().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or("known tensor with the batch")?;
            let k = k.reshape(dims)?;
            self.set(n, 0, Val::Known(k));
            return Ok(());
        }
        self.reshape_to(n, target)
    }

    pub(super) fn concat(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let axis = a.int("axis", 0)?;
        a.finish()?;
        let vals: Vec<Val> = (0..n.input.len())
            .map(|i| self.need(n, i))
            .collect::<R<_>>()?;
        if vals.iter().all(|v| matches!(v, Val::Known(_))) {
            let ks: Vec<Known> = vals
                .into_iter()
                .map(|v| match v {
                    Val::Known(k) => k,
                    _ => unreachable!("checked above"),
                })
                .collect();
            let rank = ks.first().map_or(0, |k| k.dims.len());
            let k = Known::concat(&ks, norm_axis(axis, rank)?)?;
            self.set(n, 0, Val::Known(k));
            return Ok(());
        }
        if let Some(joined) = self.scan_concat(&vals, axis)? {
            self.set(n, 0, joined);
            return Ok(());
        }
        let mut parts = Vec::new();
        for i in 0..n.input.len() {
            parts.push(self.tensor(n, i)?);
        }
        let rank = parts[0].shape().len();
        let axis = norm_axis(axis, rank)?;
        // Tensors transposed alike join along the axis the transpose moved, and stay
        // transposed (a bidirectional layer's two time-major directions).
        let view = match &parts[0].view {
            View::Perm(p) if parts.iter().all(|d| d.view == parts[0].view) => View::Perm(p.clone()),
            _ => View::Same,
        };
        let axis = match &view {
            View::Perm(p) => p[axis],
            _ => {
                for d in &mut parts {
                    *d = self.plain(d.clone())?;
                }
                axis
            }
        };
        let mut shape = parts[0].actual.clone();
        let mut total = SymInt::fixed(0);
        for p in &parts {
            total = total.add(p.actual[axis], 1)?;
        }
        shape[axis] = total;
        let args: Vec<String> = parts.iter().map(|p| p.expr.arg()).collect();
        let axis_arg = if axis + 1 == rank {
            String::new()
        } else {
            format!(", axis = {axis}")
        };
        let e = Expr::atom(format!("concat({}{axis_arg})", args.join(", ")));
        let float = parts[0].float;
        self.set(
            n,
            0,
            Val::Dyn(Dyn {
                float,
                view,
                ..Dyn::new(e, shape)
            }),
        );
        Ok(())
    }

    pub(super) fn slice(&mut self, n: &pb::NodeProto, a: Attrs) -> R<()> {
        a.finish()?;
        let starts = self.known(n, 1, "the starts")?.as_i64s()?;
        let ends = self.known(n, 2, "the ends")?.as_i64s()?;
        let v = self.need(n, 0)?;
        let shape = self.shape_of(&v);
        let axes: Vec<usize> = match self.input_val(n, 3)? {
            Some(Val::Known(k)) => k
                .as_i64s()?
                .iter()
                .map(|&x| norm_axis(x, shape.len()))
                .collect::<R<_>>()?,
            Some(_) => return Err("axes computed by the model".into()),
            None => (0..starts.len()).collect(),
        };
        let steps = match self.input_val(n, 4)? {
            Some(Val::Known(k)) => k.as_i64s()?,
            Some(_) => return Err("steps computed by the model".into()),
            None => vec![1; starts.len()],
        };
        if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err("starts, ends, axes and steps of different lengths".into());
        }
        // (axis, start, end, step) clamped as ONNX does.
        let mut cuts = Vec::new();
        for j in 0..axes.len() {
            let ax = axes[j];
            let step = steps[j];
            if step == 0 {
                return Err("a step of 0".into());
            }
            let Some(dim) = shape[ax].concrete() else {
                if starts[j] == 0 && ends[j] >= i64::MAX / 2 && step == 1 {
                    continue; // the whole batch
                }
                return Err("a slice of the batch".into());
            };
            let fix = |x: i64, lo: i64, hi: i64| {
                let x = if x < 0 { x.saturating_add(dim) } else { x };
                x.clamp(lo, hi)
            };
            let (s, e) = if step > 0 {
                (fix(starts[j], 0, dim), fix(ends[j], 0, dim))
            } else {
                (fix(starts[j], 0, dim - 1), fix(ends[j], -1, dim - 1))
            };
            cuts.push((ax, s, e, step, dim));
        }
        if let Val::Scan(sv) = &v
            && let Some(out) = self.scan_slice(sv, &cuts)?
        {
            self.set(n, 0, out);
            return Ok(());
        }
        match v {
            Val::Fill { value, mut shape } => {
                for (ax, s, e, step, _) in cuts {
                    let len = if step > 0 {
                        (e - s).max(0)
                    } else {
                        (s - e).max(0)
                    };
                    shape[ax] = SymInt::fixed((len + step.abs() - 1) / step.abs());
                }
                self.set(n, 0, Val::Fill { value, shape });
            }
            Val::Known(mut k) => {
                for (ax, s, e, step, _) in cuts {
                    k = k.slice_axis(ax, s, e, step)?;
                }
                self.set(n, 0, Val::Known(k));
            }
            _ => {
                // A transposed tensor is sliced along the axis the transpose moved, and
                // stays transposed (an LSTM's hidden half of its time-major carries).
                let d = self.tensor(n, 0)?;
                let mut d = match d.view {
                    View::Perm(_) | View::Same => d,
                    View::Reshape(_) => self.plain(d)?,
                };
                for (ax, s, e, step, dim) in cuts {
                    let ax = match &d.view {
                        View::Perm(p) => p[ax],
                        _ => ax,
                    };
                    if step != 1 {
                        return Err("a slice with a step other than 1".into());
                    }
                    let len = (e - s).max(0);
                    if s == 0 && len == dim {
                        continue;
                    }
                    if len == 0 {
                        return Err("an empty slice".into());
                    }
                    d.expr = self
                        .text
                        .pipe(d.expr.clone(), &format!("slice({s}, {len}, axis = {ax})"));
                    d.actual[ax] = SymInt::fixed(len);
                }
                self.set(n, 0, Val::Dyn(d));
            }
        }
        Ok(())
    }

    /// `Reshape` to an ONNX target (with `0` and `-1`).
    pub(super) fn reshape(&mut self, n: &pb::NodeProto, target: Vec<SymInt>) -> R<()> {
        let v = self.need(n, 0)?;
        let shape = self.shape_of(&v);
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, t) in target.iter().enumerate() {
            match t.concrete() {
                Some(0) => out.push(*shape.get(i).ok_or("a 0 past the input's rank")?),
                Some(-1) if infer.is_none() => {
                    infer = Some(i);
                    out.push(SymInt::fixed(1));
                }
                Some(x) if x < 0 => return Err(format!("target dimension {x}")),
                _ => out.push(*t),
            }
        }
        let total = shape
            .iter()
            .try_fold(SymInt::fixed(1), |a, &b| a.times(b))?;
        let known = out.iter().try_fold(SymInt::fixed(1), |a, &b| a.times(b))?;
        if let Some(i) = infer {
            out[i] = total.divided_by(known)?;
        }
        let check = out.iter().try_fold(SymInt::fixed(1), |a, &b| a.times(b))?;
        if check != total {
            return Err(format!(
                "cannot reshape [{}] to [{}]",
                dims_show(&shape),
                dims_show(&out)
            ));
        }
        if let Val::Rec(r) = &v
            && let Some(joined) = self.rec_squeeze(r, &out)?
        {
            self.set(n, 0, joined);
            return Ok(());
        }
        if let Val::Attn(a) = &v {
            let out = self.attention_reshape(a, out)?;
            self.set(n, 0, out);
            return Ok(());
        }
        if let Val::Fill { value, .. } = v {
            self.set(n, 0, Val::Fill { value, shape: out });
            return Ok(());
        }
        if let Val::Known(k) = v {
            let dims = out
                .iter()
                .map(|s| s.concrete().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or("a known tensor reshaped with the batch")?;
            let k = k.reshape(dims)?;
            self.set(n, 0, Val::Known(k));
            return Ok(());
        }
        self.reshape_to(n, out)
    }

    /// A model tensor reshaped to `target` (resolved): lazily, written only when used.
    pub(super) fn reshape_to(&mut self, n: &pb::NodeProto, target: Vec<SymInt>) -> R<()> {
        let d = self.tensor(n, 0)?;
        let d = match d.view {
            View::Perm(_) => self.plain(d)?,
            _ => d,
        };
        let view = if target == d.actual {
            View::Same
        } else {
            View::Reshape(target)
        };
        self.set(n, 0, Val::Dyn(Dyn { view, ..d }));
        Ok(())
    }

    pub(super) fn transpose(&mut self, n: &pb::NodeProto, perm: Vec<usize>) -> R<()> {
        let v = self.need(n, 0)?;
        check_perm(&perm, self.shape_of(&v).len())?;
        match v {
            Val::Known(k) => {
                let t = k.transpose(&perm)?;
                self.set(n, 0, Val::Known(t));
            }
            Val::Rec(r) => {
                let out = self.rec_transpose(&r, &perm)?;
                self.set(n, 0, out);
            }
            Val::Attn(a) => {
                let shape = perm.iter().map(|&p| a.shape[p]).collect();
                self.set(n, 0, Val::Attn(attention::AttnVal { shape, ..a }));
            }
            _ => {
                let d = self.tensor(n, 0)?;
                let d = match d.view {
                    View::Reshape(_) => self.plain(d)?,
                    _ => d,
                };
                let base: Vec<usize> = match &d.view {
                    View::Perm(q) => q.clone(),
                    _ => (0..d.actual.len()).collect(),
                };
                let composed: Vec<usize> = perm.iter().map(|&p| base[p]).collect();
                let view = if composed.iter().enumerate().all(|(i, &p)| i == p) {
                    View::Same
                } else {
                    View::Perm(composed)
                };
                self.set(n, 0, Val::Dyn(Dyn { view, ..d }));
            }
        }
        Ok(())
    }

    pub(super) fn reduce(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let op = n.op_type.as_str();
        let keep = a.int("keepdims", 1)? != 0;
        let empty_noop = a.int("noop_with_empty_axes", 0)? != 0;
        let attr_axes = a.ints("axes")?;
        a.finish()?;
        let axes = match (attr_axes, self.input_val(n, 1)?) {
            (Some(ax), _) => Some(ax),
            (None, Some(Val::Known(k))) => Some(k.as_i64s()?),
            (None, Some(_)) => return Err("axes computed by the model".into()),
            (None, None) => None,
        };
        let d = self.tensor(n, 0)?;
        let d = self.plain(d)?;
        let rank = d.actual.len();
        let axes: Vec<usize> = match axes {
            Some(ax) if !ax.is_empty() => {
                let mut v: Vec<usize> = ax.iter().map(|&x| norm_axis(x, rank)).collect::<R<_>>()?;
                v.sort_unstable();
                v.dedup();
                v
            }
            _ if empty_noop => {
                self.set(n, 0, Val::Dyn(d));
                return Ok(());
            }
            _ => (0..rank).collect(),
        };
        if axes.iter().any(|&x| d.actual[x].concrete().is_none()) {
            return Err("a reduction over the batch, which Strata's models do not compute".into());
        }
        let f = match op {
            "ReduceMean" => "mean",
            "ReduceSum" => "sum",
            "ReduceMax" => "max",
            _ => "min",
        };
        let keep_arg = if keep { ", keepdims = true" } else { "" };
        let e = self.text.pipe(
            d.expr.clone(),
            &format!("{f}(axis = {}{keep_arg})", axes_arg(&axes)),
        );
        let actual: Vec<SymInt> = d
            .actual
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| match (axes.contains(&i), keep) {
                (false, _) => Some(s),
                (true, true) => Some(SymInt::fixed(1)),
                (true, false) => None,
            })
            .collect();
        self.set(
            n,
            0,
            Val::Dyn(Dyn {
                expr: e,
                actual,
                ..d
            }),
        );
        Ok(())
    }

    /// Rows of a weight table picked by the model's integer ids: `embedding`.
    fn embedding(&mut self, n: &pb::NodeProto, table: Known, ids: Dyn, axis: i64) -> R<()> {
        if axis != 0 {
            return Err(
                "a gather by model values other than rows of a table by integer ids".into(),
            );
        }
        let rows = self.embedding_of(n, table, ids)?;
        self.set(n, 0, Val::Dyn(rows));
        Ok(())
    }

    /// The `embedding` layer of `table` applied to `ids`.
    pub(super) fn embedding_of(&mut self, n: &pb::NodeProto, table: Known, ids: Dyn) -> R<Dyn> {
        let [vocab, dim] = table.dims[..] else {
            return Err(format!("rows of a table of shape {:?}", table.dims));
        };
        if ids.float {
            return Err(
                "a gather by model values other than rows of a table by integer ids".into(),
            );
        }
        let ids = self.plain(ids)?;
        let name = self.instance_name(n, Some(&table), "embedding");
        self.text.layers.push(format!(
            "    layer {name} = embedding(vocab = {vocab}, dim = {dim})"
        ));
        self.add_weight(&format!("{name}.weight"), &[vocab, dim], table.as_f32()?)?;
        let mut actual = ids.actual.clone();
        actual.push(SymInt::fixed(dim as i64));
        let expr = self.text.pipe(ids.expr.clone(), &name);
        Ok(Dyn {
            expr,
            actual,
            view: View::Same,
            float: true,
        })
    }

    /// `Expand`: a known tensor of one value stretched to a shape that holds the batch
    /// is a fill (a loop's zero state, padding); a model tensor stretched is itself plus
    /// zeros of the shape, as the language broadcasts.
    pub(super) fn expand(&mut self, n: &pb::NodeProto) -> R<()> {
        let target = self.known(n, 1, "the shape")?.as_ints()?.to_vec();
        let v = self.need(n, 0)?;
        let shape = self.shape_of(&v);
        // ONNX's Expand broadcasts both ways: a 1 in the target keeps the input's extent.
        let out = broadcast(&shape, &target)?;
        let concrete: Option<Vec<usize>> = out
            .iter()
            .map(|s| s.concrete().and_then(|d| usize::try_from(d).ok()))
            .collect();
        let v = match (v, concrete) {
            (Val::Known(k), Some(dims)) => {
                let zeros = match &k.elems {
                    Elems::F32(_) => Known::f32(dims.clone(), vec![0.0; numel(&dims)?]),
                    Elems::Int(_) => {
                        Known::ints(dims.clone(), vec![SymInt::fixed(0); numel(&dims)?])
                    }
                };
                Val::Known(k.binary(&zeros, BinOp::Add)?)
            }
            (Val::Known(k), None) => {
                let values = k.as_f32()?;
                match values.first() {
                    Some(&x) if values.iter().all(|&y| y.to_bits() == x.to_bits()) => Val::Fill {
                        value: x,
                        shape: out,
                    },
                    _ => {
                        return Err(
                            "a tensor of several values stretched to a shape with the batch: Strata stretches a model tensor, or one value"
                                .into(),
                        );
                    }
                }
            }
            (Val::Fill { value, .. }, _) => Val::Fill { value, shape: out },
            _ => {
                let d = self.tensor(n, 0)?;
                if out == shape {
                    Val::Dyn(d)
                } else {
                    let d = self.plain(d)?;
                    let zeros = format!("zeros([{}])", super::dims_text(&out)?);
                    let expr = self
                        .text
                        .operator(format!("{} + {zeros}", d.expr.operand()));
                    Val::Dyn(Dyn {
                        expr,
                        actual: out,
                        ..d
                    })
                }
            }
        };
        self.set(n, 0, v);
        Ok(())
    }
}
