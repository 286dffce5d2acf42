//! An ONNX model as a Strata model file and its weights: the reverse of the export.
//!
//! The graph is read node by node, in its (topological) order, into [`Val`]s: tensors
//! known at import time ([`Known`]: initializers, constants and the shape arithmetic a
//! PyTorch export computes at run time, folded here with the batch size as a symbol),
//! and tensors of the model ([`Dyn`]), each an expression of the model language.
//! Chains of ops that are a layer (`Gemm`, or `MatMul` + `Add` of a weight and a bias:
//! `dense`; `Conv`; pooling; the normalizations; `LSTM`/`GRU`/`RNN`; PyTorch's
//! multi-head attention) become that layer, as a named instance (`layer fc1 =
//! dense(32)`) whose weights take the instance's names; other ops become the language's
//! plain ops. A value read more than once is bound to a name; the rest reads as pipe
//! chains (`x |> fc1 |> relu |> fc2`). A `Scan` (Strata's own recurrent layers and
//! cells) is the language's loop: its body, read by an importer of its own, a block,
//! and the node a `scan(…)` call ([`scan`]).
//!
//! Layout changes are kept lazy ([`View`]): PyTorch's recurrent and attention exports
//! move the batch to the second axis and back, which the language never needs to
//! write, so a transpose or reshape is written only when a value is used in that form.
//!
//! What the language cannot express is an [`ImportError::Node`] naming the node, its op
//! and what is missing; malformed bytes are an [`ImportError::Decode`].

mod attention;
mod elementwise;
mod known;
mod layers;
mod masked_gather;
mod recurrent;
mod scan;
mod shapes;
mod source;
mod tensor;

use crate::proto::{DecodeError, decode_model, pb};
use known::{Elems, norm_axis};
pub use known::{Known, SymInt};
use source::{Expr, ModelText, axes_arg, identifier, number};
use std::collections::HashMap;
use strata_artifact::HostTensor;
use tensor::{Attrs, read_tensor};

/// Why a file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The model as a whole (no graph, another opset domain, an input Strata cannot
    /// take).
    #[error("{0}")]
    Model(String),
    /// One node: its name, its op and what Strata cannot express.
    #[error("node `{node}` ({op}): {what}")]
    Node {
        node: String,
        op: String,
        what: String,
    },
}

/// What goes into the model file besides the graph.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The model's name in the file.
    pub model_name: String,
    /// Where the file came from (the header comment names it).
    pub source_name: String,
    /// The weights file the header comment tells to load.
    pub weights_name: String,
}

/// The model file's text and its weights, under the names the file gives them.
#[derive(Debug)]
pub struct Imported {
    pub source: String,
    pub weights: Vec<(String, HostTensor)>,
}

/// Reads `bytes` (a `.onnx` file) as a Strata model file and its weights.
pub fn import_model(bytes: &[u8], options: &ImportOptions) -> Result<Imported, ImportError> {
    let model = decode_model(bytes)?;
    import_proto(&model, options)
}

/// [`import_model`] on a decoded model.
pub fn import_proto(
    model: &pb::ModelProto,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Model("the file holds no graph".into()))?;
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_str() {
            "" | "ai.onnx" => opset = Some(o.version),
            other => {
                return Err(ImportError::Model(format!(
                    "the model uses ops of domain `{other}`; import reads the default ONNX domain only"
                )));
            }
        }
    }
    let opset = opset.unwrap_or(1);
    if opset < 13 {
        return Err(ImportError::Model(format!(
            "the model is of opset {opset}; import reads opset 13 and later (re-export with a newer opset)"
        )));
    }
    let mut im = Importer::new(graph);
    let producer = match (
        model.producer_name.as_str(),
        model.producer_version.as_str(),
    ) {
        ("", _) => "an unnamed producer".to_string(),
        (n, "") => n.to_string(),
        (n, v) => format!("{n} {v}"),
    };
    im.text.header = vec![
        format!(
            "// Imported by `strata import` from {} ({producer}, ONNX opset {opset}, IR version {}).",
            options.source_name, model.ir_version
        ),
        format!(
            "// Its weights are in {}: `strata run FILE --weights {}` (also build, eval, train --weights).",
            options.weights_name, options.weights_name
        ),
    ];
    im.run()?;
    im.text.footer = im.train_template(&options.model_name);
    let source = im.text.render(&identifier(&options.model_name));
    Ok(Imported {
        source,
        weights: std::mem::take(&mut im.text.weights),
    })
}

/// How a model tensor's ONNX layout relates to its expression's.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum View {
    /// The expression is the tensor.
    Same,
    /// The tensor is the expression transposed by this permutation (ONNX `Transpose`'s
    /// meaning: axis `i` of the tensor is axis `perm[i]` of the expression).
    Perm(Vec<usize>),
    /// The tensor is the expression reshaped to this shape.
    Reshape(Vec<SymInt>),
}

/// A tensor of the model: an expression, its shape and how the ONNX value lays it out.
#[derive(Clone, Debug)]
pub(super) struct Dyn {
    pub expr: Expr,
    /// The expression's shape.
    pub actual: Vec<SymInt>,
    pub view: View,
    /// `f32` (else `i32`).
    pub float: bool,
}

impl Dyn {
    pub fn new(expr: Expr, actual: Vec<SymInt>) -> Dyn {
        Dyn {
            expr,
            actual,
            view: View::Same,
            float: true,
        }
    }

    /// The ONNX value's shape.
    pub fn shape(&self) -> Vec<SymInt> {
        match &self.view {
            View::Same => self.actual.clone(),
            View::Perm(p) => p.iter().map(|&i| self.actual[i]).collect(),
            View::Reshape(s) => s.clone(),
        }
    }
}

/// A value of the ONNX graph.
#[derive(Clone, Debug)]
pub(super) enum Val {
    Known(Known),
    /// `ConstantOfShape` of a shape that holds the batch.
    Fill {
        value: f32,
        shape: Vec<SymInt>,
    },
    Dyn(Dyn),
    /// A value inside a multi-head attention subgraph (see [`attention`]).
    Attn(attention::AttnVal),
    /// An output of a recurrent node (see [`recurrent`]).
    Rec(recurrent::RecVal),
    /// The carries a `Scan` stacks (see [`scan`]).
    Scan(scan::ScanVal),
    /// A part of a gather that guards its ids (see [`masked_gather`]).
    Guard(masked_gather::Guard),
}

pub(super) struct Importer<'g> {
    graph: &'g pb::GraphProto,
    vals: HashMap<String, Val>,
    /// How many node inputs and graph outputs read each value.
    uses: HashMap<String, usize>,
    /// The nodes that read each value.
    consumers: HashMap<String, Vec<usize>>,
    /// Nodes already written as part of an earlier node's layer.
    fused: Vec<bool>,
    pub text: ModelText,
    attention: Vec<attention::AttnCtx>,
    /// The output projection (weight `[d, d]`, bias) of each attention subgraph.
    attention_out: HashMap<usize, (Known, Known)>,
    recurrent: Vec<recurrent::RecLayer>,
    scans: Vec<scan::ScanLoop>,
    /// Whether this graph is a `Scan`'s body, written as a block: a weight it reads is
    /// a declared parameter of the block, and it runs no loop of its own.
    in_body: bool,
    /// The declared parameter each known tensor read as a model tensor became, by its
    /// ONNX name: read twice, declared once.
    declared: HashMap<String, Dyn>,
    /// Instance counters per layer kind, for names when the graph gives none.
    counters: HashMap<&'static str, usize>,
    /// The first input's name and whether it is float, for the train template.
    first_input: Option<(String, bool)>,
    first_output: Option<(String, Vec<SymInt>)>,
}

type R<T> = Result<T, String>;

impl<'g> Importer<'g> {
    fn new(graph: &'g pb::GraphProto) -> Importer<'g> {
        let mut uses: HashMap<String, usize> = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for x in n.input.iter().filter(|x| !x.is_empty()) {
                *uses.entry(x.clone()).or_default() += 1;
                consumers.entry(x.clone()).or_default().push(i);
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        Importer {
            graph,
            vals: HashMap::new(),
            uses,
            consumers,
            fused: vec![false; graph.node.len()],
            text: ModelText::default(),
            attention: Vec::new(),
            attention_out: HashMap::new(),
            recurrent: Vec::new(),
            scans: Vec::new(),
            in_body: false,
            declared: HashMap::new(),
            counters: HashMap::new(),
            first_input: None,
            first_output: None,
        }
    }

    fn run(&mut self) -> Result<(), ImportError> {
        let graph = self.graph;
        for t in &graph.initializer {
            let k = read_tensor(t).map_err(|e| ImportError::Model(format!("initializer: {e}")))?;
            self.vals.insert(t.name.clone(), Val::Known(k));
        }
        for input in &graph.input {
            if self.vals.contains_key(&input.name) {
                continue; // an initializer listed as an input too (IR < 4 style)
            }
            if self.uses(&input.name) == 0 {
                // Nothing is computed from it (Strata's export keeps `step` for a model
                // that draws): the model file leaves it out.
                continue;
            }
            self.input(input).map_err(ImportError::Model)?;
        }
        self.run_nodes()?;
        if graph.output.is_empty() {
            return Err(ImportError::Model("the graph has no outputs".into()));
        }
        for o in &graph.output {
            self.output(&o.name)
                .map_err(|e| ImportError::Model(format!("output `{}`: {e}", o.name)))?;
        }
        Ok(())
    }

    /// Every node of the graph, in order.
    fn run_nodes(&mut self) -> Result<(), ImportError> {
        let graph = self.graph;
        for (i, n) in graph.node.iter().enumerate() {
            if self.fused[i] {
                continue;
            }
            self.node(n).map_err(|what| ImportError::Node {
                node: if n.name.is_empty() {
                    n.output.first().cloned().unwrap_or_default()
                } else {
                    n.name.clone()
                },
                op: n.op_type.clone(),
                what,
            })?;
        }
        Ok(())
    }

    fn input(&mut self, input: &pb::ValueInfoProto) -> R<()> {
        use pb::tensor_shape_proto::dimension::Value as DimValue;
        use pb::type_proto::Value as TypeValue;
        let name = &input.name;
        let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(format!("input `{name}` is not a tensor"));
        };
        let float = match pb::tensor_proto::DataType::try_from(t.elem_type) {
            Ok(pb::tensor_proto::DataType::Float) => true,
            Ok(pb::tensor_proto::DataType::Int32 | pb::tensor_proto::DataType::Int64) => false,
            _ => {
                return Err(format!(
                    "input `{name}` has element type {}; Strata's inputs are f32 or i32",
                    t.elem_type
                ));
            }
        };
        let dims = t
            .shape
            .as_ref()
            .ok_or_else(|| format!("input `{name}` has no shape"))?;
        let mut shape = Vec::new();
        for (axis, d) in dims.dim.iter().enumerate() {
            shape.push(match &d.value {
                // A symbolic first dimension, or 1 (a model exported at batch 1), is the batch.
                Some(DimValue::DimParam(_)) | None if axis == 0 => SymInt::BATCH,
                Some(DimValue::DimValue(1)) if axis == 0 => SymInt::BATCH,
                Some(DimValue::DimValue(v)) if *v > 0 => SymInt::fixed(*v),
                other => {
                    return Err(format!(
                        "input `{name}` has dimension {axis} = {other:?}: Strata's one symbolic dimension is the batch, the first; the others are fixed positive sizes"
                    ));
                }
            });
        }
        if shape.first() != Some(&SymInt::BATCH) {
            return Err(format!(
                "input `{name}` has no batch dimension first; Strata's inputs are [batch, …]"
            ));
        }
        let id = self.text.take_name(name);
        let dims_text = dims_text(&shape)?;
        self.text.inputs.push(format!(
            "    input {id}: {}[{dims_text}]",
            if float { "f32" } else { "i32" }
        ));
        if self.first_input.is_none() {
            self.first_input = Some((id.clone(), float));
        }
        let mut d = Dyn::new(Expr::atom(id), shape);
        d.float = float;
        self.vals.insert(name.clone(), Val::Dyn(d));
        Ok(())
    }

    fn output(&mut self, name: &str) -> R<()> {
        let d = match self.vals.get(name).cloned() {
            Some(Val::Known(_)) | Some(Val::Fill { .. }) => {
                return Err("is a constant; Strata's outputs are computed from the inputs".into());
            }
            Some(v) => self.model_tensor(v, name)?,
            None => return Err("is computed by no node".into()),
        };
        let shape = d.shape();
        let e = self.materialize(d)?;
        let id = self.text.take_name(name);
        self.text
            .outputs
            .push(format!("    output {id} = {}", e.text));
        if self.first_output.is_none() {
            self.first_output = Some((id, shape));
        }
        Ok(())
    }

    /// A commented train section to start from.
    fn train_template(&self, model: &str) -> Vec<String> {
        let Some((out, shape)) = &self.first_output else {
            return Vec::new();
        };
        let label = match shape.len() {
            2 => format!("f32[batch, {}]", shape[1]),
            _ => "f32[batch, …]".into(),
        };
        let mut lines = vec![
            String::new(),
            "// To train or fine-tune it, a train section such as:".into(),
            format!("// train {} {{", identifier(model)),
        ];
        if let Some((x, _)) = &self.first_input {
            lines.push(format!("//     data   = npy(\"{x}.npy\", \"target.npy\")"));
        }
        lines.extend([
            format!("//     label  target: {label}     # or i32[batch] with cross_entropy({out}, target)"),
            format!("//     loss   = mse({out}, target)"),
            "//     epochs = 5".into(),
            "// }".into(),
        ]);
        lines
    }

    // ---- values ----

    fn val(&self, name: &str) -> R<Val> {
        self.vals
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input `{name}` is computed by no earlier node"))
    }

    fn input_val(&self, n: &pb::NodeProto, i: usize) -> R<Option<Val>> {
        match n.input.get(i) {
            None => Ok(None),
            Some(x) if x.is_empty() => Ok(None),
            Some(x) => self.val(x).map(Some),
        }
    }

    fn need(&self, n: &pb::NodeProto, i: usize) -> R<Val> {
        self.input_val(n, i)?
            .ok_or_else(|| format!("input {i} is missing"))
    }

    fn known(&self, n: &pb::NodeProto, i: usize, what: &str) -> R<Known> {
        match self.need(n, i)? {
            Val::Known(k) => Ok(k),
            _ => Err(format!(
                "{what} (input {i}) is computed by the model; Strata needs it known when importing"
            )),
        }
    }

    fn uses(&self, name: &str) -> usize {
        self.uses.get(name).copied().unwrap_or(0)
    }

    /// Sets output `i` of `n`, binding a tensor read more than once to a name.
    fn set(&mut self, n: &pb::NodeProto, i: usize, v: Val) {
        let Some(name) = n.output.get(i).filter(|s| !s.is_empty()) else {
            return;
        };
        let v = match v {
            Val::Dyn(mut d) if self.uses(name) > 1 => {
                d.expr = self.text.bind(d.expr);
                Val::Dyn(d)
            }
            Val::Rec(r) if self.uses(name) > 1 => Val::Rec(r.shared()),
            Val::Scan(s) if self.uses(name) > 1 => Val::Scan(s.shared()),
            v => v,
        };
        self.vals.insert(name.clone(), v);
    }

    /// A model tensor in the ONNX layout, as an expression.
    fn materialize(&mut self, d: Dyn) -> R<Expr> {
        match &d.view {
            View::Same => Ok(d.expr),
            View::Perm(p) => {
                let perm = axes_arg(p);
                let perm = if p.len() == 1 {
                    format!("[{perm}]")
                } else {
                    perm
                };
                Ok(self.text.pipe(d.expr, &format!("transpose({perm})")))
            }
            View::Reshape(s) => {
                if s.len() == 2 && s[0] == SymInt::BATCH && d.actual.first() == Some(&SymInt::BATCH)
                {
                    Ok(self.text.pipe(d.expr, "flatten"))
                } else {
                    let dims = dims_text(s)?;
                    Ok(self.text.pipe(d.expr, &format!("reshape([{dims}])")))
                }
            }
        }
    }

    /// A model tensor in the ONNX layout, with no lazy view left.
    fn plain(&mut self, d: Dyn) -> R<Dyn> {
        let shape = d.shape();
        let float = d.float;
        let e = self.materialize(d)?;
        Ok(Dyn {
            expr: e,
            actual: shape,
            view: View::Same,
            float,
        })
    }

    /// Input `i` as a model tensor, whatever it is.
    fn tensor(&mut self, n: &pb::NodeProto, i: usize) -> R<Dyn> {
        let v = self.need(n, i)?;
        self.model_tensor(v, &n.input[i])
    }

    /// The value `v` (named `name` in the graph) as a model tensor.
    fn model_tensor(&mut self, v: Val, name: &str) -> R<Dyn> {
        match v {
            Val::Dyn(d) => Ok(d),
            Val::Rec(r) => self.rec_dyn(&r),
            Val::Scan(s) => self.scan_dyn(&s),
            Val::Known(k) => {
                if let Some(d) = self.declared.get(name) {
                    return Ok(d.clone());
                }
                let d = self.constant_tensor(&k)?;
                self.declared.insert(name.to_string(), d.clone());
                Ok(d)
            }
            Val::Fill { value, shape } => {
                // Zeros (and a constant added) to a shape with the batch: a loop's first
                // carry, padding.
                let zeros = Expr::atom(format!("zeros([{}])", dims_text(&shape)?));
                let expr = if value == 0.0 {
                    zeros
                } else {
                    self.text
                        .operator(format!("{} + {}", zeros.text, number(value)))
                };
                Ok(Dyn::new(expr, shape))
            }
            Val::Attn(_) => Err(format!(
                "`{name}` is inside an attention subgraph that this op leaves unrecognized"
            )),
            Val::Guard(g) => Err(g.unfinished()),
        }
    }

    /// A known tensor used as a model tensor: a declared parameter, its value in the
    /// weights (an initializer is trainable like PyTorch's; a folded constant is not).
    /// In a loop's body it is the block's parameter, named after the initializer without
    /// its first part (`lstm0.weight_hh_l0` -> `weight_hh_l0`: the block's scope, after
    /// that layer, stands for it).
    fn constant_tensor(&mut self, k: &Known) -> R<Dyn> {
        let values = k.as_f32()?;
        let hint = match &k.origin {
            Some(o) if self.in_body => o
                .split_once('.')
                .map_or(o.as_str(), |(_, rest)| rest)
                .to_string(),
            Some(o) => o.clone(),
            None => "constant".into(),
        };
        let name = self.text.take_name(&hint);
        let dims: Vec<String> = k.dims.iter().map(|d| d.to_string()).collect();
        let frozen = if k.origin.is_some() {
            ""
        } else {
            ", trainable = false"
        };
        self.text.params.push(format!(
            "    param {name}: f32[{}] = zeros{frozen}",
            dims.join(", ")
        ));
        self.add_weight(&name, &k.dims, values)?;
        Ok(Dyn::new(
            Expr::atom(name),
            k.dims.iter().map(|&d| SymInt::fixed(d as i64)).collect(),
        ))
    }

    pub(super) fn add_weight(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> R<()> {
        let t = HostTensor::f32(dims.iter().map(|&d| d as u64).collect(), values)
            .map_err(|e| format!("weight `{name}`: {e}"))?;
        self.text.weights.push((name.to_string(), t));
        Ok(())
    }

    /// The instance name of a layer: from its weight's initializer (`fc1.weight` ->
    /// `fc1`), else from the node's module path (`/lstm/LSTM` -> `lstm`), else the
    /// kind and a counter.
    pub(super) fn instance_name(
        &mut self,
        n: &pb::NodeProto,
        weight: Option<&Known>,
        kind: &'static str,
    ) -> String {
        let from_weight = weight
            .and_then(|k| k.origin.as_deref())
            .filter(|o| !o.starts_with("onnx::") && o.contains('.'))
            .map(|o| o.rsplit_once('.').map_or(o, |(a, _)| a).to_string());
        let from_node = || {
            let parts: Vec<&str> = n.name.split('/').filter(|s| !s.is_empty()).collect();
            (parts.len() >= 2).then(|| parts[..parts.len() - 1].join("_"))
        };
        let hint = from_weight.or_else(from_node).unwrap_or_else(|| {
            let c = self.counters.entry(kind).or_default();
            *c += 1;
            format!("{kind}{}", *c - 1)
        });
        self.text.take_name(&hint)
    }

    // ---- nodes ----

    fn node(&mut self, n: &pb::NodeProto) -> R<()> {
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(format!("op of domain `{}`", n.domain));
        }
        if n.output.first().is_none_or(|o| o.is_empty()) {
            return Err("a node without an output".into());
        }
        let op = n.op_type.as_str();
        let mut a = Attrs::new(n);
        match op {
            "Identity" | "Dropout" => {
                if op == "Dropout" {
                    a.int("seed", 0)?;
                    if n.output.get(1).is_some_and(|m| self.uses(m) > 0) {
                        return Err("its mask output is read; import takes dropout as the identity of inference".into());
                    }
                }
                a.finish()?;
                let v = self.need(n, 0)?;
                self.set(n, 0, v);
            }
            "Constant" => {
                let k = if let Some(t) = a.tensor("value")? {
                    read_tensor(t)?
                } else if let Some(v) = a.floats("value_floats")? {
                    Known::f32(vec![v.len()], v)
                } else if let Some(v) = a.ints("value_ints")? {
                    Known::ints(vec![v.len()], v.into_iter().map(SymInt::fixed).collect())
                } else {
                    let f = a.float("value_float", f32::NAN)?;
                    let iv = a.int("value_int", i64::MIN)?;
                    if !f.is_nan() {
                        Known::f32(vec![], vec![f])
                    } else if iv != i64::MIN {
                        Known::ints(vec![], vec![SymInt::fixed(iv)])
                    } else {
                        return Err(
                            "a constant with no value import reads (tensor, float(s), int(s))"
                                .into(),
                        );
                    }
                };
                a.finish()?;
                // A folded constant is not an initializer: no weight name comes from it.
                let k = Known { origin: None, ..k };
                self.set(n, 0, Val::Known(k));
            }
            "Shape" => {
                let start = a.int("start", 0)?;
                let end = a.int("end", i64::MAX)?;
                a.finish()?;
                let shape = self.shape_of(&self.need(n, 0)?);
                let r = shape.len() as i64;
                let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                let (s, e) = (clamp(start), clamp(end));
                let v = shape.get(s..e.max(s)).unwrap_or(&[]).to_vec();
                self.set(n, 0, Val::Known(Known::ints(vec![v.len()], v)));
            }
            "ConstantOfShape" => {
                let value = match a.tensor("value")? {
                    Some(t) => read_tensor(t)?
                        .scalar_f32()
                        .ok_or("a fill value that is not one number")?,
                    None => 0.0,
                };
                a.finish()?;
                let shape = self.known(n, 0, "the shape")?.as_ints()?.to_vec();
                let v = match shape
                    .iter()
                    .map(|s| s.concrete())
                    .collect::<Option<Vec<i64>>>()
                {
                    Some(dims) => {
                        let dims = to_dims(&dims)?;
                        let count = known::numel(&dims)?;
                        Val::Known(Known::f32(dims, vec![value; count]))
                    }
                    None => Val::Fill { value, shape },
                };
                self.set(n, 0, v);
            }
            "Cast" => {
                let to = a.int("to", 1)?;
                a.int("saturate", 1)?;
                a.finish()?;
                use pb::tensor_proto::DataType as T;
                let float = to == T::Float as i32 as i64;
                let int = [T::Int64, T::Int32, T::Int16, T::Int8, T::Uint8, T::Bool]
                    .iter()
                    .any(|t| *t as i32 as i64 == to);
                if !float && !int {
                    return Err(format!(
                        "a cast to element type {to}; Strata has f32 and i32"
                    ));
                }
                let v = match self.need(n, 0)? {
                    Val::Guard(g) => self.guard_cast(&g, float)?,
                    Val::Known(k) => Val::Known(match (&k.elems, float) {
                        (Elems::F32(v), false) => Known {
                            elems: Elems::Int(v.iter().map(|&x| SymInt::fixed(x as i64)).collect()),
                            ..k
                        },
                        (Elems::Int(_), true) => Known {
                            elems: Elems::F32(k.as_f32()?),
                            ..k
                        },
                        _ => k,
                    }),
                    _ => {
                        let d = self.tensor(n, 0)?;
                        if d.float == float {
                            Val::Dyn(d)
                        } else {
                            let d = self.plain(d)?;
                            let call = if float { "float" } else { "int" };
                            Val::Dyn(Dyn {
                                expr: Expr::atom(format!("{call}({})", d.expr.arg())),
                                float,
                                ..d
                            })
                        }
                    }
                };
                self.set(n, 0, v);
            }
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Abs" | "Neg" | "Erf"
            | "Reciprocal" | "Softplus" | "LeakyRelu" | "Gelu" => self.unary(n, a)?,
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" | "Equal" => {
                a.int("fmod", 0).map(|f| f == 0).and_then(|ok| match ok {
                    true => Ok(()),
                    false => Err("`fmod = 1`".to_string()),
                })?;
                a.finish()?;
                self.binary(n)?
            }
            "Gather" => self.gather(n, a)?,
            "Unsqueeze" | "Squeeze" => self.squeeze(n, a)?,
            "Concat" => self.concat(n, a)?,
            "Slice" => self.slice(n, a)?,
            "Reshape" => {
                if a.int("allowzero", 0)? != 0 {
                    return Err("`allowzero = 1`".into());
                }
                a.finish()?;
                let target = self.known(n, 1, "the target shape")?.as_ints()?.to_vec();
                self.reshape(n, target)?
            }
            "Flatten" => {
                let axis = a.int("axis", 1)?;
                a.finish()?;
                let shape = self.shape_of(&self.need(n, 0)?);
                let axis = if axis < 0 {
                    axis + shape.len() as i64
                } else {
                    axis
                };
                if !(0..=shape.len() as i64).contains(&axis) {
                    return Err(format!("axis {axis} of a rank-{} tensor", shape.len()));
                }
                let axis = axis as usize;
                let prod = |s: &[SymInt]| s.iter().try_fold(SymInt::fixed(1), |a, &b| a.times(b));
                let target = vec![prod(&shape[..axis])?, prod(&shape[axis..])?];
                self.reshape(n, target)?
            }
            "Transpose" => {
                let perm = a.ints("perm")?;
                a.finish()?;
                let rank = self.shape_of(&self.need(n, 0)?).len();
                let perm: Vec<usize> = match perm {
                    Some(p) => p.iter().map(|&x| x as usize).collect(),
                    None => (0..rank).rev().collect(),
                };
                self.transpose(n, perm)?
            }
            "MatMul" => self.matmul(n)?,
            "Gemm" => self.gemm(n, a)?,
            "Conv" => self.conv(n, a)?,
            "ConvTranspose" => self.conv_transpose(n, a)?,
            "MaxPool" | "AveragePool" => self.pool(n, a)?,
            "GlobalAveragePool" => {
                a.finish()?;
                self.global_avg_pool(n)?
            }
            "BatchNormalization" => self.batch_norm(n, a)?,
            "LayerNormalization" => self.layer_norm(n, a)?,
            "Softmax" | "LogSoftmax" => {
                let axis = a.int("axis", -1)?;
                a.finish()?;
                if let (Val::Attn(at), "Softmax") = (self.need(n, 0)?, op) {
                    let v = self.attention_softmax(&at, axis)?;
                    self.set(n, 0, v);
                    return Ok(());
                }
                let d = self.tensor(n, 0)?;
                let d = self.plain(d)?;
                let axis = norm_axis(axis, d.actual.len())?;
                let f = if op == "Softmax" {
                    "softmax"
                } else {
                    "log_softmax"
                };
                let stage = if axis + 1 == d.actual.len() {
                    f.to_string()
                } else {
                    format!("{f}(axis = {axis})")
                };
                let e = self.text.pipe(d.expr.clone(), &stage);
                self.set(n, 0, Val::Dyn(Dyn { expr: e, ..d }));
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => self.reduce(n, a)?,
            "LSTM" | "GRU" | "RNN" => self.recurrent(n, a)?,
            "Loop" | "Scan" | "If" if self.in_body => {
                return Err(format!(
                    "nested control flow (`{op}` inside a scan's body): the language's loop cells run no loop of their own"
                ));
            }
            "Scan" => self.scan(n, a)?,
            "Loop" | "If" => {
                return Err(format!(
                    "control flow (`{op}`) is not imported: export the model with its loops unrolled, as a `Scan`, or as LSTM/GRU/RNN ops"
                ));
            }
            "Expand" => {
                a.finish()?;
                self.expand(n)?
            }
            "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Not"
            | "Where" => {
                a.finish()?;
                self.logical(n)?
            }
            "RandomUniform" | "RandomUniformLike" | "RandomNormal" | "RandomNormalLike"
            | "Bernoulli" | "Multinomial" => {
                return Err(format!(
                    "a random draw: import reads graphs that compute the same numbers every run, and `{op}` draws from the runtime's generator, which Strata's (keyed by the seed and the step) does not reproduce; declare the noise as an input"
                ));
            }
            _ => return Err(format!("Strata has no import for the op `{op}`")),
        }
        Ok(())
    }

    /// The ONNX shape of any value.
    fn shape_of(&self, v: &Val) -> Vec<SymInt> {
        match v {
            Val::Known(k) => k.dims.iter().map(|&d| SymInt::fixed(d as i64)).collect(),
            Val::Fill { shape, .. } => shape.clone(),
            Val::Dyn(d) => d.shape(),
            Val::Attn(a) => a.shape.clone(),
            Val::Rec(r) => self.rec_shape(r),
            Val::Scan(s) => self.scan_shape(s),
            Val::Guard(g) => g.shape.clone(),
        }
    }
}

/// Dimensions as the language writes them (`batch, 8, 32`).
fn dims_text(shape: &[SymInt]) -> R<String> {
    shape
        .iter()
        .map(|s| match (s.k, s.p) {
            (k, 0) if k > 0 => Ok(k.to_string()),
            (1, 1) => Ok("batch".to_string()),
            _ => Err(format!(
                "a tensor of shape [{}]: Strata keeps the batch as an axis of its own",
                dims_show(shape)
            )),
        })
        .collect::<R<Vec<_>>>()
        .map(|v| v.join(", "))
}

fn dims_show(shape: &[SymInt]) -> String {
    shape
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_dims(v: &[i64]) -> R<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
        .collect()
}
