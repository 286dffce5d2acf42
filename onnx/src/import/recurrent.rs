//! ONNX's `LSTM`, `GRU` and `RNN` as Strata's `lstm`, `gru` and `rnn` layers.
//!
//! ONNX runs them time-major (`X` `[T, batch, F]`, `Y` `[T, directions, batch, H]`) with
//! the gates stacked `i, o, f, c` (LSTM) and `z, r, h` (GRU); Strata's layers, like
//! PyTorch's, read `[batch, T, F]` and stack `i, f, g, o` and `r, z, n`. PyTorch's
//! export wraps the node in `Transpose` (to time-major), `Squeeze` (the directions) and
//! `Transpose` (back): those are followed lazily here ([`RecStage`]) and write nothing,
//! and reading only the last step (`out[:, -1]`) of a forward layer is the layer with
//! `return_sequences = false`. A bidirectional node is `bidirectional = true` (its
//! backward weights under `_reverse`), its `Y` joined to `[T, batch, 2H]` by
//! `Transpose` and `Reshape` as PyTorch writes it; a stacked PyTorch RNN is one node a
//! layer, so one instance a layer.

use super::known::{Known, SymInt};
use super::source::Expr;
use super::tensor::Attrs;
use super::{Dyn, Importer, R, Val, View};
use crate::proto::pb;

/// One recurrent node.
#[derive(Clone, Debug)]
pub struct RecLayer {
    kind: &'static str,
    name: String,
    hidden: usize,
    /// 1, or 2 when bidirectional.
    dirs: usize,
    /// The input sequence, batch-major.
    input: Expr,
    batch: SymInt,
    steps: usize,
    /// The layer's output sequence `[batch, T, H]`, once written.
    seq: Option<Expr>,
}

/// Where a value derived from a recurrent node's `Y` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecStage {
    /// `Y` itself: `[T, directions, batch, H]`.
    Onnx,
    /// `Y` with its directions next to the hidden axis: `[T, batch, directions, H]`.
    DirectionsInner,
    /// `[T, batch, directions·H]`.
    TimeMajor,
    /// `[batch, T, directions·H]`.
    BatchMajor,
}

#[derive(Clone, Debug)]
pub struct RecVal {
    layer: usize,
    stage: RecStage,
    /// Whether every value from `Y` to this one has one reader (so the sequence need
    /// not be written if only its last step is read).
    single: bool,
}

/// Strata's gate order as blocks of ONNX's: LSTM `i o f c` -> `i f c o`, GRU `z r h` ->
/// `r z h`.
fn gate_order(kind: &str) -> &'static [usize] {
    match kind {
        "lstm" => &[0, 2, 3, 1],
        "gru" => &[1, 0, 2],
        _ => &[0],
    }
}

fn reorder(v: &[f32], blocks: &[usize], block_len: usize) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|&b| v[b * block_len..(b + 1) * block_len].iter().copied())
        .collect()
}

impl RecVal {
    /// The same value, read by more than one node.
    pub fn shared(self) -> RecVal {
        RecVal {
            single: false,
            ..self
        }
    }
}

impl Importer<'_> {
    pub(super) fn recurrent(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let kind = match n.op_type.as_str() {
            "LSTM" => "lstm",
            "GRU" => "gru",
            _ => "rnn",
        };
        let hidden = a.int("hidden_size", 0)?;
        let direction = a.string("direction")?.unwrap_or_else(|| "forward".into());
        let layout = a.int("layout", 0)?;
        let clip = a.float("clip", f32::INFINITY)?;
        let activations = a.strings("activations")?;
        a.floats("activation_alpha")?;
        a.floats("activation_beta")?;
        let lbr = if kind == "gru" {
            a.int("linear_before_reset", 0)?
        } else {
            1
        };
        let input_forget = if kind == "lstm" {
            a.int("input_forget", 0)?
        } else {
            0
        };
        a.finish()?;
        let dirs = match direction.as_str() {
            "forward" => 1,
            "bidirectional" => 2,
            _ => {
                return Err(format!(
                    "`direction = {direction}`: Strata's recurrent layers run forward, or both ways (`bidirectional = true`)"
                ));
            }
        };
        if clip.is_finite() {
            return Err("`clip`: Strata's recurrent layers do not clip the cell".into());
        }
        let defaults: &[&str] = match kind {
            "lstm" => &["Sigmoid", "Tanh", "Tanh"],
            "gru" => &["Sigmoid", "Tanh"],
            _ => &["Tanh"],
        };
        if let Some(acts) = activations
            && !acts.iter().map(String::as_str).eq(defaults.iter().copied())
        {
            return Err(format!(
                "activations {acts:?}: Strata's `{kind}` uses {defaults:?}"
            ));
        }
        if lbr != 1 {
            return Err("`linear_before_reset = 0`: Strata's gru (as PyTorch's) applies the reset gate after the hidden product".into());
        }
        if input_forget != 0 {
            return Err("`input_forget = 1` (coupled gates)".into());
        }
        if n.input.get(4).is_some_and(|s| !s.is_empty()) {
            return Err("`sequence_lens`: Strata runs every sequence to its full length".into());
        }
        if kind == "lstm" && n.input.get(7).is_some_and(|s| !s.is_empty()) {
            return Err("peephole weights `P`".into());
        }
        for (i, what) in [(5, "initial_h"), (6, "initial_c")] {
            match self.input_val(n, i)? {
                None => {}
                Some(Val::Fill { value: 0.0, .. }) => {}
                Some(Val::Known(k)) if k.as_f32()?.iter().all(|&x| x == 0.0) => {}
                Some(_) if i == 6 && kind != "lstm" => {}
                Some(_) => {
                    return Err(format!(
                        "`{what}` is not zeros: Strata's recurrent layers start from zeros"
                    ));
                }
            }
        }
        for (o, what) in n.output.iter().enumerate().skip(1) {
            if self.uses(what) > 0 {
                return Err(format!(
                    "output {o} (the final {}) is read; import reads the sequence `Y` (take its last step instead)",
                    if o == 1 { "hidden state" } else { "cell state" }
                ));
            }
        }
        let w = self.known(n, 1, "W")?;
        let r = self.known(n, 2, "R")?;
        let gates = gate_order(kind).len();
        let h = usize::try_from(hidden).map_err(|_| "a negative hidden_size")?;
        let gh = gates * h;
        let [wd, wg, f] = w.dims[..] else {
            return Err(format!("W of shape {:?}", w.dims));
        };
        if wd != dirs || wg != gh || r.dims != [dirs, gh, h] || h == 0 {
            return Err(format!(
                "W {:?} and R {:?} for hidden size {h}",
                w.dims, r.dims
            ));
        }
        let b = match self.input_val(n, 3)? {
            None => vec![0.0; 2 * gh * dirs],
            Some(Val::Known(k)) if k.dims == [dirs, 2 * gh] => k.as_f32()?,
            Some(_) => return Err("B that is not a known [1, 2·gates·hidden] tensor".into()),
        };
        // The input, batch-major.
        let x = self.tensor(n, 0)?;
        let x = match (&x.view, layout) {
            (View::Perm(p), 0) if p == &[1, 0, 2] => x,
            (_, 1) => self.plain(x)?,
            _ => {
                let x = self.plain(x)?;
                return Err(format!(
                    "a time-major input of shape {:?} that is not the transpose of a batch-major sequence",
                    x.actual
                ));
            }
        };
        let [batch, steps, feat] = x.actual[..] else {
            return Err("an input that is not a sequence [batch, T, F]".into());
        };
        if batch != SymInt::BATCH || feat != SymInt::fixed(f as i64) {
            return Err(format!(
                "an input of shape {:?} for W of {f} features",
                x.actual
            ));
        }
        let steps = steps.concrete().ok_or("the batch as the time axis")? as usize;
        let order = gate_order(kind);
        let name = self.instance_name(n, None, kind);
        let (w, r) = (w.as_f32()?, r.as_f32()?);
        for d in 0..dirs {
            let suffix = if d == 0 { "" } else { "_reverse" };
            let (wv, rv, bv) = (
                &w[d * gh * f..(d + 1) * gh * f],
                &r[d * gh * h..(d + 1) * gh * h],
                &b[d * 2 * gh..(d + 1) * 2 * gh],
            );
            let key = |k: &str| format!("{name}.{k}_l0{suffix}");
            self.add_weight(&key("weight_ih"), &[gh, f], reorder(wv, order, h * f))?;
            self.add_weight(&key("weight_hh"), &[gh, h], reorder(rv, order, h * h))?;
            self.add_weight(&key("bias_ih"), &[gh], reorder(&bv[..gh], order, h))?;
            self.add_weight(&key("bias_hh"), &[gh], reorder(&bv[gh..], order, h))?;
        }
        self.recurrent.push(RecLayer {
            kind,
            name,
            hidden: h,
            dirs,
            input: x.expr,
            batch,
            steps,
            seq: None,
        });
        let single = self.uses(&n.output[0]) == 1;
        self.set(
            n,
            0,
            Val::Rec(RecVal {
                layer: self.recurrent.len() - 1,
                stage: RecStage::Onnx,
                single,
            }),
        );
        Ok(())
    }

    pub(super) fn rec_shape(&self, r: &RecVal) -> Vec<SymInt> {
        let l = &self.recurrent[r.layer];
        let (t, h) = (
            SymInt::fixed(l.steps as i64),
            SymInt::fixed(l.hidden as i64),
        );
        let d = SymInt::fixed(l.dirs as i64);
        let dh = SymInt::fixed((l.dirs * l.hidden) as i64);
        match r.stage {
            RecStage::Onnx => vec![t, d, l.batch, h],
            RecStage::DirectionsInner => vec![t, l.batch, d, h],
            RecStage::TimeMajor => vec![t, l.batch, dh],
            RecStage::BatchMajor => vec![l.batch, t, dh],
        }
    }

    /// The layer's whole output sequence, written once.
    fn rec_sequence(&mut self, layer: usize) -> Expr {
        if let Some(e) = &self.recurrent[layer].seq {
            return e.clone();
        }
        let l = self.recurrent[layer].clone();
        let both = if l.dirs == 2 {
            ", bidirectional = true"
        } else {
            ""
        };
        self.text.layers.push(format!(
            "    layer {} = {}({}{both})",
            l.name, l.kind, l.hidden
        ));
        let e = self.text.pipe(l.input, &l.name);
        let e = self.text.bind(e);
        self.recurrent[layer].seq = Some(e.clone());
        e
    }

    /// A recurrent value as a model tensor.
    pub(super) fn rec_dyn(&mut self, r: &RecVal) -> R<Dyn> {
        let view = match r.stage {
            RecStage::Onnx | RecStage::DirectionsInner => {
                return Err(
                    "the recurrent output `Y` read other than with its direction axis squeezed or joined to the hidden one"
                        .into(),
                );
            }
            RecStage::TimeMajor => View::Perm(vec![1, 0, 2]),
            RecStage::BatchMajor => View::Same,
        };
        let l = &self.recurrent[r.layer];
        let actual = vec![
            l.batch,
            SymInt::fixed(l.steps as i64),
            SymInt::fixed((l.dirs * l.hidden) as i64),
        ];
        let expr = self.rec_sequence(r.layer);
        Ok(Dyn {
            expr,
            actual,
            view,
            float: true,
        })
    }

    pub(super) fn rec_squeeze(&mut self, r: &RecVal, target: &[SymInt]) -> R<Option<Val>> {
        let l = &self.recurrent[r.layer];
        let tm = [
            SymInt::fixed(l.steps as i64),
            l.batch,
            SymInt::fixed((l.dirs * l.hidden) as i64),
        ];
        // `Squeeze` of the one direction, or `Reshape` joining the two to the hidden axis.
        let joins = match r.stage {
            RecStage::Onnx => l.dirs == 1,
            RecStage::DirectionsInner => true,
            _ => false,
        };
        Ok((joins && target == tm).then_some(Val::Rec(RecVal {
            stage: RecStage::TimeMajor,
            ..r.clone()
        })))
    }

    pub(super) fn rec_transpose(&mut self, r: &RecVal, perm: &[usize]) -> R<Val> {
        let stage = match (r.stage, perm) {
            (RecStage::TimeMajor, [1, 0, 2]) => RecStage::BatchMajor,
            (RecStage::BatchMajor, [1, 0, 2]) => RecStage::TimeMajor,
            (RecStage::Onnx, [0, 2, 1, 3]) => RecStage::DirectionsInner,
            _ => {
                let d = self.rec_dyn(r)?;
                let d = self.plain(d)?;
                return Ok(Val::Dyn(Dyn {
                    view: View::Perm(perm.to_vec()),
                    ..d
                }));
            }
        };
        Ok(Val::Rec(RecVal { stage, ..r.clone() }))
    }

    /// `Gather` of the last step of a batch-major sequence nothing else reads: the layer
    /// with `return_sequences = false`.
    pub(super) fn rec_last_step(
        &mut self,
        n: &pb::NodeProto,
        v: &Val,
        axis: i64,
        idx: &Known,
    ) -> R<Option<Dyn>> {
        let Val::Rec(r) = v else { return Ok(None) };
        let l = &self.recurrent[r.layer];
        let last = l.steps as i64 - 1;
        let is_last =
            idx.dims.is_empty() && matches!(idx.as_i64s()?[..], [i] if i == -1 || i == last);
        if r.stage != RecStage::BatchMajor
            || l.dirs != 1
            || !(axis == 1 || axis == -2)
            || !is_last
            || !r.single
            || self.uses(&n.input[0]) != 1
            || l.seq.is_some()
        {
            return Ok(None);
        }
        let l = l.clone();
        self.text.layers.push(format!(
            "    layer {} = {}({}, return_sequences = false)",
            l.name, l.kind, l.hidden
        ));
        let expr = self.text.pipe(l.input, &l.name);
        // Nothing else may write the sequence of this instance now.
        self.recurrent[r.layer].seq = Some(Expr::atom("<final state only>"));
        Ok(Some(Dyn::new(
            expr,
            vec![l.batch, SymInt::fixed(l.hidden as i64)],
        )))
    }
}
