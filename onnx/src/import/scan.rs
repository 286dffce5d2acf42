//! ONNX `Scan` as the language's own loop: the body as a block `(carry, x) -> next
//! carry`, the node as `scan(Cell, xs, init, return_sequences = …, reverse = …)`.
//!
//! What maps: one state variable (the carry, `[batch, …]`), one scan input (the
//! sequence, scanned along axis 0, so time-major `[T, batch, …]`; the language takes it
//! batch-major, and the transpose in front of the loop, kept lazy ([`View`]), cancels),
//! and scan outputs that stack the carry in the input's direction. The body is read by
//! an importer of its own into the block: a weight it reads from the outer scope is a
//! declared parameter of the block (its value in the weights under the block call's
//! scope, `lstm0cell0.weight_hh_l0`, as the compiled model names it), an outer constant
//! folds, and an outer value the model computes is an error, since a block reads only
//! its arguments. So is anything else the language's `scan` cannot say: several state
//! variables or scan inputs, another scan axis, an output stacked the other way, a
//! loop inside the body.
//!
//! The stacked carries are followed lazily ([`ScanVal`]): Strata's own export joins the
//! initial carry to them (`Unsqueeze` + `Concat`, its `keep = all`) and slices back
//! either every step after the first carry or the last one; those are `scan(…)` and
//! `scan(…, return_sequences = false)`, and the joined tensor is written only where it
//! is read some other way.

use super::known::{SymInt, norm_axis};
use super::source::{Expr, axes_arg, identifier};
use super::tensor::{Attrs, read_tensor};
use super::{Dyn, ImportError, Importer, R, Val, View, dims_show};
use crate::proto::pb;
use std::collections::HashSet;

/// One `Scan` node, as the language's call.
#[derive(Clone, Debug)]
pub struct ScanLoop {
    /// The block its body became.
    block: String,
    /// The sequence, batch-major `[batch, T, …]`.
    xs: Expr,
    /// The initial carry, and the value the graph holds for it (to recognize it joined
    /// to the stacked carries).
    init: Expr,
    init_val: Val,
    steps: usize,
    reverse: bool,
    /// The carry's shape, `[batch, …]`.
    carry: Vec<SymInt>,
    /// How many of the node's outputs are read.
    outputs_read: usize,
    /// `scan(…)`, every step's carry `[batch, T, …]`, once written.
    seq: Option<Expr>,
}

/// Where a value derived from a `Scan`'s stacked carries stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStage {
    /// The carry after each step, time-major: `[T, batch, …]` (the ONNX scan output).
    Steps,
    /// The initial carry joined to them, `[T + 1, batch, …]`: Strata's `keep = all`
    /// (the initial carry first forward, last in reverse).
    WithInit,
}

#[derive(Clone, Debug)]
pub struct ScanVal {
    scan: usize,
    stage: ScanStage,
    /// Whether this value and the node's other outputs are read once in all, so the
    /// last carry alone can be `return_sequences = false`.
    single: bool,
}

impl ScanVal {
    /// The same value, read by more than one node.
    pub fn shared(self) -> ScanVal {
        ScanVal {
            single: false,
            ..self
        }
    }
}

/// The permutation swapping the first two of `rank` axes (time-major <-> batch-major).
fn swap01(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(0, 1);
    p
}

/// `name` with the `Identity` nodes of `graph` that produce it looked through.
fn through_identities<'a>(graph: &'a pb::GraphProto, mut name: &'a str) -> &'a str {
    for _ in 0..graph.node.len() {
        let source = graph
            .node
            .iter()
            .find(|n| n.op_type == "Identity" && n.output.iter().any(|o| o == name));
        match source.and_then(|n| n.input.first()) {
            Some(input) => name = input,
            None => break,
        }
    }
    name
}

impl Importer<'_> {
    pub(super) fn scan(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let body = a.graph("body")?.ok_or("no `body`")?;
        let scan_inputs = a.int("num_scan_inputs", 0)?;
        let in_dirs = a.ints("scan_input_directions")?;
        let out_dirs = a.ints("scan_output_directions")?;
        let in_axes = a.ints("scan_input_axes")?;
        let out_axes = a.ints("scan_output_axes")?;
        a.finish()?;
        let states = (n.input.len() as i64) - scan_inputs;
        if scan_inputs < 1 || states < 0 {
            return Err(format!(
                "`num_scan_inputs = {scan_inputs}` for {} inputs",
                n.input.len()
            ));
        }
        if states != 1 {
            return Err(format!(
                "{states} state variables: the language's scan carries one (a block `(carry, x) -> next carry`), so several states travel as one tensor"
            ));
        }
        if scan_inputs != 1 {
            return Err(format!(
                "{scan_inputs} scan inputs: the language's scan reads one sequence"
            ));
        }
        if let Some(axis) = in_axes.iter().chain(&out_axes).flatten().find(|&&x| x != 0) {
            return Err(format!(
                "scan axis {axis}: the language's scan runs over the first axis of a time-major `[T, batch, …]` (axis 0)"
            ));
        }
        let reverse = match in_dirs.as_deref() {
            None | Some([0]) => false,
            Some([1]) => true,
            Some(d) => return Err(format!("`scan_input_directions = {d:?}`")),
        };
        let scan_outputs = n.output.len().saturating_sub(1);
        if body.input.len() != 2 || body.output.len() != n.output.len() || n.output.is_empty() {
            return Err(format!(
                "a body of {} inputs and {} outputs for a node of {} outputs: one carry, one step",
                body.input.len(),
                body.output.len(),
                n.output.len()
            ));
        }
        let out_dirs = out_dirs.unwrap_or_else(|| vec![0; scan_outputs]);
        if out_dirs.len() != scan_outputs {
            return Err(format!("`scan_output_directions = {out_dirs:?}`"));
        }
        let read: Vec<usize> = (0..n.output.len())
            .filter(|&k| !n.output[k].is_empty() && self.uses(&n.output[k]) > 0)
            .collect();
        let carry_out = through_identities(body, &body.output[0].name);
        for &k in read.iter().filter(|&&k| k > 0) {
            if through_identities(body, &body.output[k].name) != carry_out {
                return Err(format!(
                    "scan output {k} stacks another value than the carry: the language's scan stacks the carries"
                ));
            }
            if out_dirs[k - 1] != i64::from(reverse) {
                return Err(format!(
                    "scan output {k} is stacked in the other direction than the sequence is read: the language's scan stacks each carry at its step's index"
                ));
            }
        }

        // The initial carry and the sequence, batch-major.
        let init_val = self.need(n, 0)?;
        let carry = self.shape_of(&init_val);
        if carry.first() != Some(&SymInt::BATCH) {
            return Err(format!(
                "an initial carry of shape [{}]: the language's carry is `[batch, …]`",
                dims_show(&carry)
            ));
        }
        let init = self.tensor(n, 0)?;
        if !init.float {
            return Err("an integer carry: the language's carry is f32".into());
        }
        let init = self.plain(init)?.expr;
        let seq = self.tensor(n, 1)?;
        let shape = seq.shape();
        let (steps, step) = match shape.as_slice() {
            [t, b, rest @ ..] if *b == SymInt::BATCH && t.concrete().is_some_and(|t| t > 0) => {
                let mut step = vec![SymInt::BATCH];
                step.extend_from_slice(rest);
                (t.k as usize, step)
            }
            _ => {
                return Err(format!(
                    "a sequence of shape [{}]: the language's scan reads `[T, batch, …]` here (`[batch, T, …]` in the file)",
                    dims_show(&shape)
                ));
            }
        };
        let swap = swap01(shape.len());
        let step_float = seq.float;
        let xs = match &seq.view {
            View::Perm(p) if *p == swap => seq.expr.clone(),
            _ => {
                let d = self.plain(seq)?;
                self.text
                    .pipe(d.expr, &format!("transpose({})", axes_arg(&swap)))
            }
        };
        let block = self.scan_block(body, &carry, &step, step_float)?;
        self.scans.push(ScanLoop {
            block,
            xs,
            init,
            init_val,
            steps,
            reverse,
            carry,
            outputs_read: read.len(),
            seq: None,
        });
        let scan = self.scans.len() - 1;
        let single = |me: &Self, k: usize| read.len() == 1 && me.uses(&n.output[k]) == 1;
        if read.contains(&0) {
            let last = self.scan_final(scan, single(self, 0))?;
            self.set(n, 0, Val::Dyn(last));
        }
        for k in 1..n.output.len() {
            let stacked = ScanVal {
                scan,
                stage: ScanStage::Steps,
                single: single(self, k),
            };
            self.set(n, k, Val::Scan(stacked));
        }
        Ok(())
    }

    /// Imports `body` as a block `(carry, x)` with the carry of shape `carry` and the
    /// step of shape `step`, and returns its name.
    fn scan_block(
        &mut self,
        body: &pb::GraphProto,
        carry: &[SymInt],
        step: &[SymInt],
        step_float: bool,
    ) -> R<String> {
        // What the body reads from the outer scope: known values only.
        let mut defined: HashSet<&str> = body.input.iter().map(|i| i.name.as_str()).collect();
        defined.extend(body.initializer.iter().map(|t| t.name.as_str()));
        let mut outer = Vec::new();
        for node in &body.node {
            for x in node.input.iter().filter(|x| !x.is_empty()) {
                if defined.contains(x.as_str()) || outer.iter().any(|(o, _)| o == x) {
                    continue;
                }
                match self.vals.get(x) {
                    Some(Val::Known(k)) => outer.push((x.clone(), k.clone())),
                    Some(_) => {
                        return Err(format!(
                            "its body reads `{x}` from the outer scope, a value the model computes: a loop's cell reads only its carry, its step and values known when importing (weights, constants)"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "its body reads `{x}`, which no earlier node computes"
                        ));
                    }
                }
            }
            defined.extend(node.output.iter().map(String::as_str));
        }
        let mut sub = Importer::new(body);
        sub.in_body = true;
        for t in &body.initializer {
            let k = read_tensor(t).map_err(|e| format!("its body's initializer: {e}"))?;
            sub.vals.insert(t.name.clone(), Val::Known(k));
        }
        let hint = outer.iter().find_map(|(_, k)| {
            let origin = k.origin.as_deref()?;
            origin.split_once('.').map(|(layer, _)| layer.to_string())
        });
        for (name, k) in outer {
            sub.vals.insert(name, Val::Known(k));
        }
        let carry_name = sub.text.take_name("carry");
        let step_name = sub.text.take_name("x");
        let carry_in = Dyn::new(Expr::atom(carry_name.clone()), carry.to_vec());
        let step_in = Dyn {
            float: step_float,
            ..Dyn::new(Expr::atom(step_name.clone()), step.to_vec())
        };
        sub.vals
            .insert(body.input[0].name.clone(), Val::Dyn(carry_in));
        sub.vals
            .insert(body.input[1].name.clone(), Val::Dyn(step_in));
        sub.run_nodes().map_err(|e| match e {
            ImportError::Node { node, op, what } => {
                format!("in its body, node `{node}` ({op}): {what}")
            }
            other => format!("in its body: {other}"),
        })?;
        let out = &body.output[0].name;
        let next = match sub.val(out)? {
            Val::Known(_) => return Err("its body's carry is a constant".into()),
            v => sub.model_tensor(v, out)?,
        };
        if next.shape() != carry || !next.float {
            return Err(format!(
                "its body returns a carry of shape [{}] for one of f32[{}]",
                dims_show(&next.shape()),
                dims_show(carry)
            ));
        }
        // The carry is read twice in the body graph (the state and the stacked output),
        // so it was bound to a name; the block returns it as it is.
        let ret = sub.materialize(next)?;
        let ret = sub.text.unbind_last(ret);
        let name = self.block_name(hint.as_deref());
        let scope = format!("{}0", name.to_lowercase());
        let text = sub.text.render_block(&name, &[carry_name, step_name], &ret);
        self.text.blocks.push(text);
        for (weight, t) in std::mem::take(&mut sub.text.weights) {
            self.text.weights.push((format!("{scope}.{weight}"), t));
        }
        Ok(name)
    }

    /// A fresh block name after the layer whose weights the body reads (`lstm0` ->
    /// `Lstm0Cell`), whose call's scope (`lstm0cell0`, where the compiler puts the
    /// block's parameters) is free too.
    fn block_name(&mut self, layer: Option<&str>) -> String {
        let base = identifier(layer.unwrap_or(""));
        let mut chars = base.chars();
        let base = match (layer, chars.next()) {
            (Some(_), Some(c)) => format!("{}{}Cell", c.to_ascii_uppercase(), chars.as_str()),
            _ => "Cell".to_string(),
        };
        let mut name = base.clone();
        let mut i = 1;
        loop {
            let scope = format!("{}0", name.to_lowercase());
            if !self.text.unavailable(&name) && !self.text.unavailable(&scope) {
                self.text.reserve(&name);
                self.text.reserve(&scope);
                return name;
            }
            name = format!("{base}{i}");
            i += 1;
        }
    }

    /// The call of loop `scan`: every step's carry, or only the last.
    fn scan_call(&self, scan: usize, sequences: bool) -> Expr {
        let l = &self.scans[scan];
        let mut call = format!("scan({}, {}, {}", l.block, l.xs.arg(), l.init.arg());
        if !sequences {
            call.push_str(", return_sequences = false");
        }
        if l.reverse {
            call.push_str(", reverse = true");
        }
        call.push(')');
        Expr::atom(call)
    }

    /// Every step's carry `[batch, T, …]`, written once under a name.
    fn scan_sequence(&mut self, scan: usize) -> Expr {
        if let Some(e) = &self.scans[scan].seq {
            return e.clone();
        }
        let call = self.scan_call(scan, true);
        let e = self.text.bind(call);
        self.scans[scan].seq = Some(e.clone());
        e
    }

    /// The last carry `[batch, …]`: the loop with `return_sequences = false` when
    /// nothing else of it is read, else the last step of the sequence.
    fn scan_final(&mut self, scan: usize, single: bool) -> R<Dyn> {
        let l = &self.scans[scan];
        let carry = l.carry.clone();
        if single && l.outputs_read == 1 && l.seq.is_none() {
            return Ok(Dyn::new(self.scan_call(scan, false), carry));
        }
        let last = if l.reverse { 0 } else { l.steps - 1 };
        let seq = self.scan_sequence(scan);
        let expr = self.text.pipe(seq, &format!("slice({last}, 1, axis = 1)"));
        let mut actual = carry.clone();
        actual.insert(1, SymInt::fixed(1));
        Ok(Dyn {
            expr,
            actual,
            view: View::Reshape(carry),
            float: true,
        })
    }

    pub(super) fn scan_shape(&self, s: &ScanVal) -> Vec<SymInt> {
        let l = &self.scans[s.scan];
        let steps = match s.stage {
            ScanStage::Steps => l.steps,
            ScanStage::WithInit => l.steps + 1,
        };
        let mut shape = l.carry.clone();
        shape.insert(0, SymInt::fixed(steps as i64));
        shape
    }

    /// A value of stacked carries as a model tensor: the sequence, time-major in a lazy
    /// transpose, with the initial carry joined to it if it was.
    pub(super) fn scan_dyn(&mut self, s: &ScanVal) -> R<Dyn> {
        let seq = self.scan_sequence(s.scan);
        let l = self.scans[s.scan].clone();
        let mut actual = l.carry.clone();
        let view = View::Perm(swap01(actual.len() + 1));
        if s.stage == ScanStage::Steps {
            actual.insert(1, SymInt::fixed(l.steps as i64));
            return Ok(Dyn {
                expr: seq,
                actual,
                view,
                float: true,
            });
        }
        actual.insert(1, SymInt::fixed(1));
        let first = self.text.pipe(
            l.init.clone(),
            &format!("reshape([{}])", super::dims_text(&actual)?),
        );
        let parts = match l.reverse {
            false => [first.arg(), seq.arg()],
            true => [seq.arg(), first.arg()],
        };
        actual[1] = SymInt::fixed(l.steps as i64 + 1);
        let expr = Expr::atom(format!("concat({}, axis = 1)", parts.join(", ")));
        Ok(Dyn {
            expr,
            actual,
            view,
            float: true,
        })
    }

    /// `Concat` of a loop's initial carry (unsqueezed) and its stacked carries along
    /// the time axis, on the side Strata's export puts it: the `keep = all` tensor.
    pub(super) fn scan_concat(&mut self, vals: &[Val], axis: i64) -> R<Option<Val>> {
        let (first, steps, init_first) = match vals {
            [x, Val::Scan(s)] if s.stage == ScanStage::Steps => (x, s, true),
            [Val::Scan(s), x] if s.stage == ScanStage::Steps => (x, s, false),
            _ => return Ok(None),
        };
        let l = &self.scans[steps.scan];
        if init_first == l.reverse || norm_axis(axis, l.carry.len() + 1)? != 0 {
            return Ok(None);
        }
        let mut unsqueezed = l.carry.clone();
        unsqueezed.insert(0, SymInt::fixed(1));
        let is_init = match (first, &l.init_val) {
            (Val::Fill { value, shape }, Val::Fill { value: v, .. }) => {
                value.to_bits() == v.to_bits() && *shape == unsqueezed
            }
            (Val::Dyn(u), Val::Dyn(init)) => {
                u.shape() == unsqueezed && u.actual == init.actual && u.expr.text == init.expr.text
            }
            _ => false,
        };
        Ok(is_init.then(|| {
            Val::Scan(ScanVal {
                stage: ScanStage::WithInit,
                ..steps.clone()
            })
        }))
    }

    /// `Slice` of stacked carries along time (`cuts` as the slice clamped them: axis,
    /// start, end, step, extent): the steps after the initial carry are the sequence,
    /// the one after the last step the last carry. `None` for any other slice.
    pub(super) fn scan_slice(
        &mut self,
        s: &ScanVal,
        cuts: &[(usize, i64, i64, i64, i64)],
    ) -> R<Option<Val>> {
        let [(0, start, end, 1, _)] = cuts[..] else {
            return Ok(None);
        };
        let l = &self.scans[s.scan];
        let t = l.steps as i64;
        let (steps, last) = match (s.stage, l.reverse) {
            (ScanStage::Steps, false) => (None, (t - 1, t)),
            (ScanStage::Steps, true) => (None, (0, 1)),
            (ScanStage::WithInit, false) => (Some((1, t + 1)), (t, t + 1)),
            (ScanStage::WithInit, true) => (Some((0, t)), (0, 1)),
        };
        if steps == Some((start, end)) {
            return Ok(Some(Val::Scan(ScanVal {
                stage: ScanStage::Steps,
                ..s.clone()
            })));
        }
        if (start, end) != last {
            return Ok(None);
        }
        let mut one = l.carry.clone();
        one.insert(0, SymInt::fixed(1));
        let d = self.scan_final(s.scan, s.single)?;
        Ok(Some(Val::Dyn(Dyn {
            view: View::Reshape(one),
            ..d
        })))
    }
}
