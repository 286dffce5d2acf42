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
//! chains (`x |> fc1 |> relu |> fc2`).
//!
//! Layout changes are kept lazy ([`View`]): PyTorch's recurrent and attention exports
//! move the batch to the second axis and back, which the language never needs to
//! write, so a transpose or reshape is written only when a value is used in that form.
//!
//! What the language cannot express is an [`ImportError::Node`] naming the node, its op
//! and what is missing; malformed bytes are an [`ImportError::Decode`].

mod attention;
mod known;
mod layers;
mod recurrent;
mod source;
mod tensor;

use crate::proto::{DecodeError, decode_model, pb};
use known::{BinOp, Elems, broadcast, check_perm, norm_axis};
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
            self.input(input).map_err(ImportError::Model)?;
        }
        for (i, n) in graph.node.iter().enumerate() {
            if self.fused[i] {
                continue;
            }
            self.node(i, n).map_err(|what| ImportError::Node {
                node: if n.name.is_empty() {
                    n.output.first().cloned().unwrap_or_default()
                } else {
                    n.name.clone()
                },
                op: n.op_type.clone(),
                what,
            })?;
        }
        if graph.output.is_empty() {
            return Err(ImportError::Model("the graph has no outputs".into()));
        }
        for o in &graph.output {
            self.output(&o.name)
                .map_err(|e| ImportError::Model(format!("output `{}`: {e}", o.name)))?;
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
                Some(DimValue::DimValue(v)) if *v > 0 => SymInt::fixed(*v),
                Some(DimValue::DimParam(_)) | None if axis == 0 => SymInt::BATCH,
                Some(DimValue::DimValue(v)) if axis == 0 && *v == 1 => SymInt::BATCH,
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
            Some(Val::Dyn(d)) => d,
            Some(Val::Rec(r)) => self.rec_dyn(&r)?,
            Some(Val::Known(_)) | Some(Val::Fill { .. }) => {
                return Err("is a constant; Strata's outputs are computed from the inputs".into());
            }
            Some(Val::Attn(_)) => return Err("is inside an attention subgraph".into()),
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
        match self.need(n, i)? {
            Val::Dyn(d) => Ok(d),
            Val::Rec(r) => self.rec_dyn(&r),
            Val::Known(k) => self.constant_tensor(&k),
            Val::Fill { .. } => Err(format!(
                "input {i} is a constant filled to a shape that holds the batch, which Strata writes only as a recurrent layer's zero state"
            )),
            Val::Attn(_) => Err(format!(
                "input {i} is inside an attention subgraph that this op leaves unrecognized"
            )),
        }
    }

    /// A known tensor used as a model tensor: a declared parameter, its value in the
    /// weights (an initializer is trainable like PyTorch's; a folded constant is not).
    fn constant_tensor(&mut self, k: &Known) -> R<Dyn> {
        let values = k.as_f32()?;
        let hint = k.origin.clone().unwrap_or_else(|| "constant".into());
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

    fn node(&mut self, i: usize, n: &pb::NodeProto) -> R<()> {
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
                self.binary(i, n)?
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
            "MatMul" => self.matmul(i, n)?,
            "Gemm" => self.gemm(n, a)?,
            "Conv" => self.conv(n, a)?,
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
            "Loop" | "Scan" | "If" => {
                return Err(format!(
                    "control flow (`{op}`) is not imported: export the model with its loops unrolled or as LSTM/GRU/RNN ops"
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
        }
    }

    fn unary(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let op = n.op_type.as_str();
        let alpha = if op == "LeakyRelu" {
            a.float("alpha", 0.01)?
        } else {
            0.0
        };
        let approx = if op == "Gelu" {
            a.string("approximate")?.unwrap_or_else(|| "none".into())
        } else {
            String::new()
        };
        a.finish()?;
        if let Val::Known(k) = self.need(n, 0)? {
            let f: fn(f32) -> f32 = match op {
                "Relu" => |x| x.max(0.0),
                "Sqrt" => f32::sqrt,
                "Exp" => f32::exp,
                "Log" => f32::ln,
                "Abs" => f32::abs,
                "Neg" => |x| -x,
                "Tanh" => f32::tanh,
                "Reciprocal" => f32::recip,
                _ => return Err("an op on a constant that import does not fold".into()),
            };
            self.set(n, 0, Val::Known(k.unary_f32(f)?));
            return Ok(());
        }
        let d = self.tensor(n, 0)?;
        // Element-wise ops keep any lazy layout.
        let expr = match op {
            "Neg" => self.text.operator(format!("-{}", d.expr.operand())),
            "Reciprocal" => self.text.operator(format!("1 / {}", d.expr.operand())),
            _ => {
                let stage = match op {
                    "LeakyRelu" => format!("leaky_relu(slope = {})", number(alpha)),
                    "Gelu" if approx == "tanh" => "gelu(approximate = \"tanh\")".into(),
                    "Gelu" => "gelu".into(),
                    _ => op.to_lowercase(),
                };
                self.text.pipe(d.expr.clone(), &stage)
            }
        };
        self.set(n, 0, Val::Dyn(Dyn { expr, ..d }));
        Ok(())
    }

    fn binary(&mut self, i: usize, n: &pb::NodeProto) -> R<()> {
        let op = match n.op_type.as_str() {
            "Add" => BinOp::Add,
            "Sub" => BinOp::Sub,
            "Mul" => BinOp::Mul,
            "Div" => BinOp::Div,
            "Pow" => BinOp::Pow,
            "Max" => BinOp::Max,
            "Min" => BinOp::Min,
            "Mod" => BinOp::Mod,
            _ => BinOp::Equal,
        };
        if n.input.len() != 2 {
            return Err(format!("{} inputs; import reads two", n.input.len()));
        }
        let (x, y) = (self.need(n, 0)?, self.need(n, 1)?);
        if let (Val::Known(a), Val::Known(b)) = (&x, &y) {
            let k = a.binary(b, op)?;
            self.set(n, 0, Val::Known(k));
            return Ok(());
        }
        if let (Val::Attn(a), Val::Known(k)) = (&x, &y)
            && let (Some(c), BinOp::Mul | BinOp::Div) = (k.scalar_f32(), op)
        {
            let v = self.attention_scale(a, c, op == BinOp::Div);
            self.set(n, 0, v);
            return Ok(());
        }
        if let (Val::Known(k), Val::Attn(a)) = (&x, &y)
            && let (Some(c), BinOp::Mul) = (k.scalar_f32(), op)
        {
            let v = self.attention_scale(a, c, false);
            self.set(n, 0, v);
            return Ok(());
        }
        if matches!(op, BinOp::Mod | BinOp::Equal) {
            return Err("on model tensors; Strata has no such element-wise op".into());
        }
        let _ = i;
        // A scalar constant is a number; a model tensor in a lazy layout keeps it.
        let scalar = |v: &Val| match v {
            Val::Known(k) if k.elems.len() == 1 && k.dims.len() <= 1 => k.scalar_f32(),
            _ => None,
        };
        let (sx, sy) = (scalar(&x), scalar(&y));
        let (expr_text, d) = if let Some(c) = sy {
            let d = self.tensor(n, 0)?;
            (bin_text(op, &d.expr.operand(), &number(c)), d)
        } else if let Some(c) = sx {
            let d = self.tensor(n, 1)?;
            (bin_text(op, &number(c), &d.expr.operand()), d)
        } else {
            let a = self.tensor(n, 0)?;
            let b = self.tensor(n, 1)?;
            let (a, b) = if a.view == b.view
                && a.actual.len() == b.actual.len()
                && a.view != View::Same
                && matches!(a.view, View::Perm(_))
            {
                (a, b)
            } else {
                (self.plain(a)?, self.plain(b)?)
            };
            let actual = broadcast(&a.actual, &b.actual)?;
            let text = bin_text(op, &a.expr.operand(), &b.expr.operand());
            (text, Dyn { actual, ..a })
        };
        let expr = self.text.operator(expr_text);
        self.set(n, 0, Val::Dyn(Dyn { expr, ..d }));
        Ok(())
    }

    fn gather(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let axis = a.int("axis", 0)?;
        a.finish()?;
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

    fn squeeze(&mut self, n: &pb::NodeProto, a: Attrs) -> R<()> {
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

    fn concat(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
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
        let mut parts = Vec::new();
        for i in 0..n.input.len() {
            let d = self.tensor(n, i)?;
            parts.push(self.plain(d)?);
        }
        let rank = parts[0].actual.len();
        let axis = norm_axis(axis, rank)?;
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
                ..Dyn::new(e, shape)
            }),
        );
        Ok(())
    }

    fn slice(&mut self, n: &pb::NodeProto, a: Attrs) -> R<()> {
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
        match v {
            Val::Known(mut k) => {
                for (ax, s, e, step, _) in cuts {
                    k = k.slice_axis(ax, s, e, step)?;
                }
                self.set(n, 0, Val::Known(k));
            }
            _ => {
                let d = self.tensor(n, 0)?;
                let mut d = self.plain(d)?;
                for (ax, s, e, step, dim) in cuts {
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
    fn reshape(&mut self, n: &pb::NodeProto, target: Vec<SymInt>) -> R<()> {
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
        if let Val::Attn(a) = &v {
            let out = self.attention_reshape(a, out)?;
            self.set(n, 0, out);
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
    fn reshape_to(&mut self, n: &pb::NodeProto, target: Vec<SymInt>) -> R<()> {
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

    fn transpose(&mut self, n: &pb::NodeProto, perm: Vec<usize>) -> R<()> {
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

    fn reduce(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
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
}

fn bin_text(op: BinOp, a: &str, b: &str) -> String {
    match op {
        BinOp::Add => format!("{a} + {b}"),
        BinOp::Sub => format!("{a} - {b}"),
        BinOp::Mul => format!("{a} * {b}"),
        BinOp::Div => format!("{a} / {b}"),
        BinOp::Pow => format!("pow({a}, {b})"),
        BinOp::Max => format!("maximum({a}, {b})"),
        BinOp::Min => format!("minimum({a}, {b})"),
        BinOp::Mod | BinOp::Equal => unreachable!("refused before"),
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
