//! The `infer` entry of a compiled model as an ONNX model.
//!
//! Every value of the graph (after the passes) becomes one ONNX value named as `strata ir`
//! prints it (`%12`), an input or output keeps the model file's name, and a parameter's
//! initializer is named by its path (`dense0.weight`), so the exported file reads side by
//! side with `strata ir --stage optimized`. Each node's `doc_string` is its source
//! location (`mlp.strata:4:14`).
//!
//! Invariants of the written graph: opset [`OPSET`] of the default domain only; every
//! name is assigned once in the whole model (scan bodies prefix their values with the
//! scan's name); the batch dimension is the symbol [`BATCH_DIM`] in every input and
//! output type.

use crate::proto::{
    Attr, BATCH_DIM, DimSpec, IR_VERSION, OPSET, attribute, f32_tensor, i32_tensor, i64_tensor,
    node, pb, value_info,
};
use conv::{ConvMatch, find_convolutions};
use conv_transpose::{ConvTransposeMatch, find_conv_transposes};
use pb::tensor_proto::DataType;
use std::collections::{HashMap, HashSet};
use strata_artifact::weights::WeightsReader;
use strata_artifact::{HostTensor, TensorData};
use strata_compiler::ir::print::location;
use strata_compiler::ir::scan::Scan;
use strata_compiler::ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Shape, UnaryOp, ValueId};
use strata_compiler::source::SourceFile;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An op with no ONNX counterpart in this export.
    #[error("{at}: `{op}` cannot be exported to ONNX: {reason}")]
    Unsupported {
        op: &'static str,
        /// Where the value comes from: `file:line:col`, or its IR name without a source.
        at: String,
        reason: String,
    },
    /// A parameter the weights do not hold, or hold with another type.
    #[error("{at}: parameter `{name}`: {reason}")]
    Weight {
        name: String,
        at: String,
        reason: String,
    },
    /// The weights file is not a safetensors file of `f32`/`i32` tensors.
    #[error("the weights: {0}")]
    Weights(String),
    /// A graph that breaks the IR's invariants (a compiler bug, not the user's mistake).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What goes into the model besides the graph.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// The model file the graph was compiled from: node locations and error messages
    /// name its lines.
    pub source: Option<SourceFile>,
    /// Free text for the model's `doc_string` (where the weights came from).
    pub doc: String,
    /// Write every Strata op on its own, without recognizing layer patterns (a
    /// convolution's `im2col` chain as one `Conv`, [`conv`]).
    pub no_layer_patterns: bool,
}

/// The `infer` graph `graph` (after the passes) with its parameters' values from
/// `weights` (a safetensors file holding at least every parameter the graph reads, as
/// `strata train` writes them or an artifact carries them) as an ONNX model.
pub fn export_infer(
    graph: &Graph,
    weights: &[u8],
    options: &ExportOptions,
) -> Result<pb::ModelProto, ExportError> {
    // Each parameter is decoded when the graph reads it: decoding the whole file first
    // held an Adam-trained model's weights three times over (a 1,024-block model's
    // build peaked on it).
    let tensors = WeightsReader::new(weights).map_err(|e| ExportError::Weights(e.to_string()))?;
    let mut writer = Writer {
        source: options.source.as_ref(),
        layer_patterns: !options.no_layer_patterns,
        tensors: &tensors,
        batch: None,
        batch_needed: false,
        fresh: 0,
    };
    let graph_proto = writer.main_graph(graph)?;
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "strata".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: options.doc.clone(),
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// A parameter's initializer: `tensor` (from the weights) as `name`, which the graph
/// declares of shape `dims` and ONNX element type `data_type`; or why it does not fit.
pub(crate) fn parameter_tensor(
    name: &str,
    dims: &[u64],
    data_type: i32,
    tensor: &HostTensor,
) -> Result<pb::TensorProto, String> {
    let declared = match DataType::try_from(data_type) {
        Ok(DataType::Float) => "f32",
        Ok(DataType::Int32) => "i32",
        _ => return Err(format!("an initializer of ONNX type {data_type}")),
    };
    let list: Vec<String> = dims.iter().map(u64::to_string).collect();
    let declared = format!("{declared}[{}]", list.join(", "));
    if tensor.shape != dims {
        return Err(format!(
            "the model declares {declared} but the weights hold shape {:?}",
            tensor.shape
        ));
    }
    match (&tensor.data, DataType::try_from(data_type)) {
        (TensorData::F32(values), Ok(DataType::Float)) => Ok(f32_tensor(name, dims, values)),
        (TensorData::I32(values), Ok(DataType::Int32)) => Ok(i32_tensor(name, dims, values)),
        _ => Err(format!(
            "the model declares {declared} but the weights hold {}",
            tensor.type_string()
        )),
    }
}

/// What to tell the user of an exported model that draws random numbers (the nodes'
/// source locations): the runtime's generator draws them, from the same law as
/// Strata's but not the same numbers. `None` for a model without draws.
pub fn draws_note(model: &pb::ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    let draws: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "RandomUniformLike")
        .map(|n| n.doc_string.as_str())
        .collect();
    if draws.is_empty() {
        return None;
    }
    Some(format!(
        "`infer` draws random numbers ({}): the ONNX model draws them with the runtime's generator, from the same distribution but not the numbers Strata draws for a step",
        draws.join(", ")
    ))
}

/// The ONNX element type of a Strata dtype.
fn elem_type(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::Float,
        DType::I32 => DataType::Int32,
    }
}

fn dims_of(shape: &Shape) -> Vec<DimSpec> {
    shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => DimSpec::Fixed(*n),
            Dim::Batch => DimSpec::Symbol(BATCH_DIM),
        })
        .collect()
}

/// The graph being written: its nodes and initializers. A scan body is one too, nested
/// in its scan's node.
#[derive(Default)]
struct GraphOut {
    nodes: Vec<pb::NodeProto>,
    /// Constants: initializers of the main graph, `Constant` nodes in a body (a body's
    /// own initializers are legal ONNX but not read by every runtime).
    initializers: Vec<pb::TensorProto>,
    is_body: bool,
    /// The ONNX name of each Strata value written so far.
    names: HashMap<ValueId, String>,
    /// Prefix of the names of this graph's values (`%12/` in the body of scan `%12`).
    prefix: String,
}

struct Writer<'a> {
    source: Option<&'a SourceFile>,
    /// Whether chains of ops that make a layer ONNX has are written as that op.
    layer_patterns: bool,
    tensors: &'a WeightsReader<'a>,
    /// Where the batch size comes from: the first input with a batch dimension, and the
    /// axis it is on.
    batch: Option<(String, usize)>,
    /// Whether some op needs the batch size as a tensor ([`BATCH_SIZE`]).
    batch_needed: bool,
    /// Counter of fresh names (`onnx.N`) for the values between a Strata value's ONNX ops.
    fresh: usize,
}

/// The name of the `int64[1]` batch size, computed once in the main graph (bodies read
/// it from the outer scope).
const BATCH_SIZE: &str = "batch_size";

impl Writer<'_> {
    fn at(&self, graph: &Graph, v: ValueId) -> String {
        match self.source {
            Some(source) => location(source, graph.node(v).span),
            None => v.to_string(),
        }
    }

    fn fresh(&mut self) -> String {
        self.fresh += 1;
        format!("onnx.{}", self.fresh)
    }

    fn main_graph(&mut self, graph: &Graph) -> Result<pb::GraphProto, ExportError> {
        let mut out = GraphOut::default();
        let mut inputs = Vec::new();
        for &i in &graph.inputs {
            let Op::Input { name } = &graph.node(i).op else {
                return Err(ExportError::Internal(format!(
                    "input {i} is not an input op"
                )));
            };
            let ty = graph.ty(i);
            if self.batch.is_none()
                && let Some(axis) = ty.shape.dims().iter().position(|d| *d == Dim::Batch)
            {
                self.batch = Some((name.clone(), axis));
            }
            inputs.push(value_info(name, elem_type(ty.dtype), &dims_of(&ty.shape)));
            out.names.insert(i, name.clone());
        }
        self.write_values(graph, &mut out)?;
        let mut outputs = Vec::new();
        for (name, v) in &graph.outputs {
            let ty = graph.ty(*v);
            // An Identity per output: the output keeps the model file's name whatever
            // produced it (an input, a parameter, a value that is two outputs).
            let mut n = node("Identity", &[&out.names[v]], &[name], vec![]);
            n.name = name.clone();
            out.nodes.push(n);
            outputs.push(value_info(name, elem_type(ty.dtype), &dims_of(&ty.shape)));
        }
        let mut nodes = Vec::new();
        if self.batch_needed {
            let Some((input, axis)) = self.batch.clone() else {
                return Err(ExportError::Internal(
                    "a shape holds the batch but no input has it".into(),
                ));
            };
            let axis = axis as i64;
            nodes.push(node(
                "Shape",
                &[&input],
                &[BATCH_SIZE],
                vec![
                    attribute("start", Attr::Int(axis)),
                    attribute("end", Attr::Int(axis + 1)),
                ],
            ));
        }
        nodes.append(&mut out.nodes);
        check_unique_names(&nodes, &out.initializers, &inputs)?;
        Ok(pb::GraphProto {
            name: graph.name.clone(),
            node: nodes,
            initializer: out.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        })
    }

    /// Writes every value of `graph` not yet named (inputs are) in topological order.
    fn write_values(&mut self, graph: &Graph, out: &mut GraphOut) -> Result<(), ExportError> {
        let mut layers: HashMap<ValueId, LayerMatch> = HashMap::new();
        if self.layer_patterns {
            let convolutions = find_convolutions(graph).into_iter();
            layers.extend(convolutions.map(|(v, m)| (v, LayerMatch::Conv(m))));
            let transposed = find_conv_transposes(graph).into_iter();
            layers.extend(transposed.map(|(v, m)| (v, LayerMatch::ConvTranspose(m))));
        }
        let replaced = replaced_values(graph, &layers);
        for v in graph.topo_order() {
            if out.names.contains_key(&v) || replaced.contains(&v) {
                continue;
            }
            let name = match layers.get(&v) {
                Some(LayerMatch::Conv(m)) => self.write_conv(graph, v, m, out)?,
                Some(LayerMatch::ConvTranspose(m)) => {
                    self.write_conv_transpose(graph, v, m, out)?
                }
                None => self.write_value(graph, v, out)?,
            };
            out.names.insert(v, name);
        }
        Ok(())
    }

    /// The ONNX names of `values`, written before `v` reads them.
    fn names_of(
        out: &GraphOut,
        v: ValueId,
        values: impl IntoIterator<Item = ValueId>,
    ) -> Result<Vec<String>, ExportError> {
        values
            .into_iter()
            .map(|x| {
                out.names.get(&x).cloned().ok_or_else(|| {
                    ExportError::Internal(format!("{v} reads {x} before it is written"))
                })
            })
            .collect()
    }

    /// The name of a `Reshape`'s target `shape`, or why ONNX cannot say it.
    fn reshape_target(&mut self, out: &mut GraphOut, shape: &Shape) -> Result<String, String> {
        // The batch is the one unknown extent, so -1 stands for it.
        let values: Vec<i64> = shape
            .dims()
            .iter()
            .map(|d| d.fixed().map_or(-1, |n| n as i64))
            .collect();
        if values.contains(&0) {
            return Err("a reshape to an empty shape (ONNX reads a 0 extent as `copy`)".into());
        }
        Ok(self.i64s(out, &values))
    }

    /// One `Conv` for a convolution's chain of ops ending at `v`.
    fn write_conv(
        &mut self,
        graph: &Graph,
        v: ValueId,
        m: &ConvMatch,
        out: &mut GraphOut,
    ) -> Result<String, ExportError> {
        let at = self.at(graph, v);
        let inputs = Self::names_of(out, v, [m.input, m.weight].into_iter().chain(m.bias))?;
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let w = &m.window;
        let (s, d, axes) = (w.stride as i64, w.dilation as i64, m.kernel.len());
        let ints = |values: &[u64]| Attr::Ints(values.iter().map(|&x| x as i64).collect());
        let result = format!("{}{v}", out.prefix);
        // The image: `result`, unless a reshape to another shape follows.
        let image = match m.reshape_to {
            Some(_) => format!("{result}_image"),
            None => result.clone(),
        };
        // The `Conv`, then each activation, the last of them writing the image.
        let conv_out = match m.activations.is_empty() {
            true => image.clone(),
            false => format!("{image}_conv"),
        };
        let mut conv = node(
            "Conv",
            &inputs,
            &[&conv_out],
            vec![
                attribute("kernel_shape", ints(&m.kernel)),
                attribute("pads", ints(&m.pads)),
                attribute("strides", Attr::Ints(vec![s; axes])),
                attribute("dilations", Attr::Ints(vec![d; axes])),
            ],
        );
        conv.name = conv_out.clone();
        out.nodes.push(with_doc(conv, &at));
        let mut operand = conv_out;
        for (i, (a, u)) in m.activations.iter().enumerate() {
            let name = match i + 1 == m.activations.len() {
                true => image.clone(),
                false => format!("{}{a}", out.prefix),
            };
            let mut activation = node(unary_op(*u), &[&operand], &[&name], vec![]);
            activation.name = name.clone();
            out.nodes.push(with_doc(activation, &at));
            operand = name;
        }
        if let Some(shape) = &m.reshape_to {
            let target =
                self.reshape_target(out, shape)
                    .map_err(|reason| ExportError::Unsupported {
                        op: graph.node(v).op.mnemonic(),
                        at: at.clone(),
                        reason,
                    })?;
            let mut reshape = node("Reshape", &[&image, &target], &[&result], vec![]);
            reshape.name = result.clone();
            out.nodes.push(with_doc(reshape, &at));
        }
        Ok(result)
    }

    /// One `ConvTranspose` for a transposed convolution's chain of ops ending at `v`.
    fn write_conv_transpose(
        &mut self,
        graph: &Graph,
        v: ValueId,
        m: &ConvTransposeMatch,
        out: &mut GraphOut,
    ) -> Result<String, ExportError> {
        let at = self.at(graph, v);
        let inputs = Self::names_of(out, v, [m.input, m.weight].into_iter().chain(m.bias))?;
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let ints = |values: &[u64]| Attr::Ints(values.iter().map(|&x| x as i64).collect());
        let result = format!("{}{v}", out.prefix);
        let mut conv = node(
            "ConvTranspose",
            &inputs,
            &[&result],
            vec![
                attribute("kernel_shape", ints(&m.kernel)),
                attribute("pads", ints(&m.pads)),
                attribute("output_padding", ints(&m.output_padding)),
                attribute("strides", ints(&[m.stride; 2])),
                attribute("dilations", ints(&[m.dilation; 2])),
            ],
        );
        conv.name = result.clone();
        out.nodes.push(with_doc(conv, &at));
        Ok(result)
    }

    /// A constant tensor: an initializer of the main graph, a `Constant` node in a body.
    fn constant(&mut self, out: &mut GraphOut, mut tensor: pb::TensorProto) -> String {
        let name = self.fresh();
        tensor.name = name.clone();
        if out.is_body {
            out.nodes.push(node(
                "Constant",
                &[],
                &[&name],
                vec![attribute("value", Attr::Tensor(tensor))],
            ));
        } else {
            out.initializers.push(tensor);
        }
        name
    }

    fn i64s(&mut self, out: &mut GraphOut, values: &[i64]) -> String {
        self.constant(out, i64_tensor("", &[values.len() as u64], values))
    }

    /// A shape as an `int64[rank]` tensor; the batch is read from the input that has it.
    fn shape_tensor(&mut self, out: &mut GraphOut, shape: &Shape, at: &str) -> String {
        let fixed = |d: &Dim| d.fixed().map_or(0, |n| n as i64);
        let Some(b) = shape.dims().iter().position(|d| *d == Dim::Batch) else {
            let values: Vec<i64> = shape.dims().iter().map(fixed).collect();
            return self.i64s(out, &values);
        };
        self.batch_needed = true;
        let mut parts = Vec::new();
        let before: Vec<i64> = shape.dims()[..b].iter().map(fixed).collect();
        let after: Vec<i64> = shape.dims()[b + 1..].iter().map(fixed).collect();
        if !before.is_empty() {
            parts.push(self.i64s(out, &before));
        }
        parts.push(BATCH_SIZE.to_string());
        if !after.is_empty() {
            parts.push(self.i64s(out, &after));
        }
        let name = self.fresh();
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        out.nodes.push(with_doc(
            node(
                "Concat",
                &inputs,
                &[&name],
                vec![attribute("axis", Attr::Int(0))],
            ),
            at,
        ));
        name
    }

    /// Writes the ops of one value and returns the ONNX name of its result.
    fn write_value(
        &mut self,
        graph: &Graph,
        v: ValueId,
        out: &mut GraphOut,
    ) -> Result<String, ExportError> {
        let n = graph.node(v);
        let at = self.at(graph, v);
        let operands: Vec<String> = graph
            .operands(v)
            .iter()
            .map(|o| {
                out.names.get(o).cloned().ok_or_else(|| {
                    ExportError::Internal(format!("{v} reads {o} before it is written"))
                })
            })
            .collect::<Result<_, _>>()?;
        let a = |i: usize| operands[i].as_str();
        let result = format!("{}{v}", out.prefix);
        let unsupported = |reason: &str| ExportError::Unsupported {
            op: n.op.mnemonic(),
            at: at.clone(),
            reason: reason.to_string(),
        };
        // One ONNX node computing the whole value.
        let single = |op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>| {
            let mut nd = node(op, inputs, &[&result], attrs);
            nd.name = result.clone();
            with_doc(nd, &at)
        };
        match &n.op {
            Op::Input { name } => {
                // Inputs are named before the walk; an input here is a body's, which a
                // scan names too.
                return Err(ExportError::Internal(format!("input `{name}` not named")));
            }
            Op::Param { path, .. } => {
                if out.is_body {
                    return Err(unsupported("a scan body holds no parameters"));
                }
                let tensor = self
                    .tensors
                    .get(path)
                    .map_err(|e| ExportError::Weights(e.to_string()))?
                    .ok_or_else(|| ExportError::Weight {
                        name: path.clone(),
                        at: at.clone(),
                        reason: "the weights have no tensor of this name".into(),
                    })?;
                let want: Vec<u64> = n.ty.shape.dims().iter().filter_map(|d| d.fixed()).collect();
                let weight = |reason| ExportError::Weight {
                    name: path.clone(),
                    at: at.clone(),
                    reason,
                };
                if want.len() != n.ty.shape.rank() {
                    return Err(weight(format!("the model declares {}", n.ty)));
                }
                let data_type = elem_type(n.ty.dtype) as i32;
                let proto = parameter_tensor(path, &want, data_type, &tensor).map_err(weight)?;
                out.initializers.push(proto);
                return Ok(path.clone());
            }
            Op::Const { value } => {
                let t = f32_tensor("", &[], &[*value as f32]);
                let name = self.constant(out, t);
                return Ok(name);
            }
            Op::Unary(u) => {
                out.nodes.push(single(unary_op(*u), &[a(0)], vec![]));
            }
            Op::Binary(b) => {
                let (op, compares) = match b {
                    BinaryOp::Add => ("Add", false),
                    BinaryOp::Sub => ("Sub", false),
                    BinaryOp::Mul => ("Mul", false),
                    BinaryOp::Div => ("Div", false),
                    BinaryOp::Max => ("Max", false),
                    BinaryOp::Min => ("Min", false),
                    BinaryOp::Pow => ("Pow", false),
                    BinaryOp::Lt => ("Less", true),
                    BinaryOp::Le => ("LessOrEqual", true),
                    BinaryOp::Gt => ("Greater", true),
                    BinaryOp::Ge => ("GreaterOrEqual", true),
                    BinaryOp::Eq => ("Equal", true),
                };
                if compares {
                    // ONNX comparisons give booleans; Strata's give 1.0 or 0.0.
                    let truth = self.fresh();
                    out.nodes
                        .push(with_doc(node(op, &[a(0), a(1)], &[&truth], vec![]), &at));
                    out.nodes.push(single(
                        "Cast",
                        &[&truth],
                        vec![attribute("to", Attr::Int(DataType::Float as i64))],
                    ));
                } else {
                    out.nodes.push(single(op, &[a(0), a(1)], vec![]));
                }
            }
            // ONNX's MatMul has NumPy's semantics: a rank-2 right operand is shared by
            // every leading index, as Strata's is.
            Op::MatMul => out.nodes.push(single("MatMul", &[a(0), a(1)], vec![])),
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => {
                let axes: Vec<i64> = axes.iter().map(|&x| x as i64).collect();
                let keep = attribute("keepdims", Attr::Int(i64::from(*keep_dims)));
                match op {
                    // Opset 13 moved ReduceSum's axes to an input; the others follow in 18.
                    ReduceOp::Sum => {
                        let axes = self.i64s(out, &axes);
                        out.nodes
                            .push(single("ReduceSum", &[a(0), &axes], vec![keep]));
                    }
                    ReduceOp::Max | ReduceOp::Min => {
                        let op = if *op == ReduceOp::Max {
                            "ReduceMax"
                        } else {
                            "ReduceMin"
                        };
                        out.nodes.push(single(
                            op,
                            &[a(0)],
                            vec![keep, attribute("axes", Attr::Ints(axes))],
                        ));
                    }
                }
            }
            Op::Reshape { shape } => {
                let target = self
                    .reshape_target(out, shape)
                    .map_err(|reason| unsupported(&reason))?;
                out.nodes.push(single("Reshape", &[a(0), &target], vec![]));
            }
            Op::Transpose { perm } => {
                let perm = perm.iter().map(|&p| p as i64).collect();
                out.nodes.push(single(
                    "Transpose",
                    &[a(0)],
                    vec![attribute("perm", Attr::Ints(perm))],
                ));
            }
            Op::Concat { axis } => {
                let inputs: Vec<&str> = operands.iter().map(String::as_str).collect();
                out.nodes.push(single(
                    "Concat",
                    &inputs,
                    vec![attribute("axis", Attr::Int(*axis as i64))],
                ));
            }
            Op::Slice { axis, start, len } => {
                let starts = self.i64s(out, &[*start as i64]);
                let ends = self.i64s(out, &[(*start + *len) as i64]);
                let axes = self.i64s(out, &[*axis as i64]);
                out.nodes
                    .push(single("Slice", &[a(0), &starts, &ends, &axes], vec![]));
            }
            Op::StopGradient => out.nodes.push(single("Identity", &[a(0)], vec![])),
            // f32 -> i32 truncates toward zero in both; Strata also saturates and sends
            // NaN to 0, where ONNX leaves out-of-range values undefined.
            Op::Cast { to } => out.nodes.push(single(
                "Cast",
                &[a(0)],
                vec![attribute("to", Attr::Int(elem_type(*to) as i64))],
            )),
            Op::Broadcast { shape } => {
                let target = self.shape_tensor(out, shape, &at);
                out.nodes.push(single("Expand", &[a(0), &target], vec![]));
            }
            Op::OneHot { classes } => {
                // Equality with 0..classes rather than ONNX's OneHot, which counts a
                // negative label from the end where Strata's gives a row of zeros.
                let Ok(classes) = i32::try_from(*classes) else {
                    return Err(unsupported("more classes than an i32 label can name"));
                };
                let all: Vec<i32> = (0..classes).collect();
                let range = self.constant(out, i32_tensor("", &[classes as u64], &all));
                let last = self.i64s(out, &[-1]);
                let column = self.fresh();
                let equal = self.fresh();
                out.nodes.push(with_doc(
                    node("Unsqueeze", &[a(0), &last], &[&column], vec![]),
                    &at,
                ));
                out.nodes.push(with_doc(
                    node("Equal", &[&column, &range], &[&equal], vec![]),
                    &at,
                ));
                out.nodes.push(single(
                    "Cast",
                    &[&equal],
                    vec![attribute("to", Attr::Int(DataType::Float as i64))],
                ));
            }
            Op::Gather => {
                // ONNX's Gather counts a negative id from the end and leaves one past the
                // rows undefined, where Strata's gives a row of zeros: the ids outside
                // `0..rows` are replaced by 0 and their rows multiplied by 0.
                let rows = graph.ty(graph.operands(v)[0]).shape.dims()[0]
                    .fixed()
                    .and_then(|r| i32::try_from(r).ok())
                    .ok_or_else(|| unsupported("more rows than an i32 id can name"))?;
                let zero = self.constant(out, i32_tensor("", &[], &[0]));
                let bound = self.constant(out, i32_tensor("", &[], &[rows]));
                let [not_negative, below, inside, safe, picked, last, column] =
                    [(); 7].map(|_| self.fresh());
                for (op, inputs, output) in [
                    ("GreaterOrEqual", [a(1), zero.as_str()], &not_negative),
                    ("Less", [a(1), bound.as_str()], &below),
                    ("And", [not_negative.as_str(), below.as_str()], &inside),
                ] {
                    out.nodes
                        .push(with_doc(node(op, &inputs, &[output], vec![]), &at));
                }
                out.nodes.push(with_doc(
                    node("Where", &[&inside, a(1), &zero], &[&safe], vec![]),
                    &at,
                ));
                out.nodes.push(with_doc(
                    node(
                        "Gather",
                        &[a(0), &safe],
                        &[&picked],
                        vec![attribute("axis", Attr::Int(0))],
                    ),
                    &at,
                ));
                let minus_one = self.i64s(out, &[-1]);
                out.nodes.push(with_doc(
                    node("Unsqueeze", &[&inside, &minus_one], &[&last], vec![]),
                    &at,
                ));
                out.nodes.push(with_doc(
                    node(
                        "Cast",
                        &[&last],
                        &[&column],
                        vec![attribute("to", Attr::Int(DataType::Float as i64))],
                    ),
                    &at,
                ));
                out.nodes.push(single("Mul", &[&picked, &column], vec![]));
            }
            Op::ScatterAdd { .. } => {
                return Err(unsupported(
                    "scatter_add is the gradient of a gather and has no place in `infer`",
                ));
            }
            Op::RandomUniform { shape, .. } => {
                // ONNX's generator, not Strata's Philox stream: the same distribution
                // (uniform in [0, 1)), other numbers, fresh at every run as Strata's are
                // at every step; the step input is left unread. `RandomUniformLike` of
                // zeros of the shape, since the batch is known only at run time.
                let target = self.shape_tensor(out, shape, &at);
                let zero = self.constant(out, f32_tensor("", &[], &[0.0]));
                let like = self.fresh();
                out.nodes.push(with_doc(
                    node("Expand", &[&zero, &target], &[&like], vec![]),
                    &at,
                ));
                let mut draw = single(
                    "RandomUniformLike",
                    &[&like],
                    vec![
                        attribute("dtype", Attr::Int(DataType::Float as i64)),
                        attribute("low", Attr::Float(0.0)),
                        attribute("high", Attr::Float(1.0)),
                    ],
                );
                // tract (0.23) tells `RandomUniformLike` from `RandomUniform` by the node's
                // name; naming the node after its op costs nothing elsewhere.
                draw.name = format!("{result}/RandomUniformLike");
                out.nodes.push(draw);
            }
            Op::Im2Col { window } => {
                let result = result.clone();
                self.write_im2col(graph, v, window, a(0), &result, out, &at)?;
            }
            Op::Col2Im {
                window,
                channels,
                height,
                width,
            } => {
                let result = result.clone();
                let image = [*channels, *height, *width];
                self.write_col2im(v, window, image, a(0), &result, out, &at)?;
            }
            Op::Scan(scan) => {
                let result = result.clone();
                self.write_scan(graph, v, scan, &operands, &result, out, &at)?;
            }
        }
        Ok(result)
    }

    /// `scan` as ONNX `Scan`: Strata's carry is the Scan's one state variable, its
    /// sequences the scan inputs (reversed together for a reverse scan), its constants
    /// read from the outer scope by name. With `keep = all` the body also emits the new
    /// carry as a scan output, and the initial carry is joined to the stacked ones
    /// (before them forward, after them in reverse) to give Strata's `[T + 1, ...]`.
    #[allow(clippy::too_many_arguments)]
    fn write_scan(
        &mut self,
        graph: &Graph,
        v: ValueId,
        scan: &Scan,
        operands: &[String],
        result: &str,
        out: &mut GraphOut,
        at: &str,
    ) -> Result<(), ExportError> {
        if out.is_body {
            return Err(ExportError::Internal(format!("nested scan {v}")));
        }
        let body = &scan.body;
        let prefix = format!("{result}/");
        let mut inner = GraphOut {
            is_body: true,
            prefix: prefix.clone(),
            ..Default::default()
        };
        let mut body_inputs = Vec::new();
        for (i, &input) in body.inputs.iter().enumerate() {
            if i <= scan.sequences {
                let name = format!("{prefix}{input}");
                let ty = body.ty(input);
                body_inputs.push(value_info(&name, elem_type(ty.dtype), &dims_of(&ty.shape)));
                inner.names.insert(input, name);
            } else {
                // A constant: the outer value itself, visible in the body's scope.
                let outer = operands
                    .get(i)
                    .ok_or_else(|| ExportError::Internal(format!("scan {v} has no operand {i}")))?;
                inner.names.insert(input, outer.clone());
            }
        }
        self.write_values(body, &mut inner)?;
        let [(_, next)] = body.outputs.as_slice() else {
            return Err(ExportError::Internal(format!(
                "scan {v}'s body has {} outputs",
                body.outputs.len()
            )));
        };
        let carry_ty = body.ty(*next);
        let carry_dims = dims_of(&carry_ty.shape);
        let state_out = format!("{prefix}carry");
        let step_out = format!("{prefix}step");
        inner.nodes.push(node(
            "Identity",
            &[&inner.names[next]],
            &[&state_out],
            vec![],
        ));
        let mut body_outputs = vec![value_info(
            &state_out,
            elem_type(carry_ty.dtype),
            &carry_dims,
        )];
        if scan.keep_all {
            inner.nodes.push(node(
                "Identity",
                &[&inner.names[next]],
                &[&step_out],
                vec![],
            ));
            body_outputs.push(value_info(
                &step_out,
                elem_type(carry_ty.dtype),
                &carry_dims,
            ));
        }
        let body_graph = pb::GraphProto {
            name: format!("{}_scan{}", graph.name, v.index()),
            node: inner.nodes,
            input: body_inputs,
            output: body_outputs,
            ..Default::default()
        };
        let direction = i64::from(scan.reverse);
        let mut attrs = vec![
            attribute("body", Attr::Graph(body_graph)),
            attribute("num_scan_inputs", Attr::Int(scan.sequences as i64)),
        ];
        if scan.reverse {
            attrs.push(attribute(
                "scan_input_directions",
                Attr::Ints(vec![direction; scan.sequences]),
            ));
        }
        let inputs: Vec<&str> = operands[..=scan.sequences]
            .iter()
            .map(String::as_str)
            .collect();
        if !scan.keep_all {
            let mut n = node("Scan", &inputs, &[result], attrs);
            n.name = result.to_string();
            out.nodes.push(with_doc(n, at));
            return Ok(());
        }
        if scan.reverse {
            attrs.push(attribute("scan_output_directions", Attr::Ints(vec![1])));
        }
        let last = self.fresh();
        let stacked = self.fresh();
        let mut n = node("Scan", &inputs, &[&last, &stacked], attrs);
        n.name = format!("{result}/scan");
        out.nodes.push(with_doc(n, at));
        let zero = self.i64s(out, &[0]);
        let first = self.fresh();
        out.nodes.push(with_doc(
            node("Unsqueeze", &[&operands[0], &zero], &[&first], vec![]),
            at,
        ));
        let parts: [&str; 2] = match scan.reverse {
            false => [&first, &stacked],
            true => [&stacked, &first],
        };
        let mut concat = node(
            "Concat",
            &parts,
            &[result],
            vec![attribute("axis", Attr::Int(0))],
        );
        concat.name = result.to_string();
        out.nodes.push(with_doc(concat, at));
        Ok(())
    }
}

fn with_doc(mut n: pb::NodeProto, at: &str) -> pb::NodeProto {
    n.doc_string = at.to_string();
    n
}

/// Every value is assigned once: ONNX's graphs are in single static assignment form.
/// Strata's names cannot collide by construction (inputs are identifiers, parameters
/// dotted paths, values `%N`), so a collision is a bug.
fn check_unique_names(
    nodes: &[pb::NodeProto],
    initializers: &[pb::TensorProto],
    inputs: &[pb::ValueInfoProto],
) -> Result<(), ExportError> {
    let mut seen = HashSet::new();
    let names = inputs
        .iter()
        .map(|i| &i.name)
        .chain(initializers.iter().map(|t| &t.name))
        .chain(nodes.iter().flat_map(|n| &n.output));
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(ExportError::Internal(format!(
                "the name `{name}` is assigned twice"
            )));
        }
    }
    Ok(())
}

/// The values the layers in `layers` replace: their chains, and what only those chains
/// read (a reshape of an image that several transposed convolutions share, the zeros
/// of their output padding).
fn replaced_values(graph: &Graph, layers: &HashMap<ValueId, LayerMatch>) -> HashSet<ValueId> {
    let mut replaced: HashSet<ValueId> = HashSet::new();
    let mut read: HashSet<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    for m in layers.values() {
        let (inner, reads) = match m {
            LayerMatch::Conv(m) => (&m.inner, [Some(m.input), Some(m.weight), m.bias]),
            LayerMatch::ConvTranspose(m) => (&m.inner, [Some(m.input), Some(m.weight), m.bias]),
        };
        replaced.extend(inner.iter().copied());
        read.extend(reads.into_iter().flatten());
    }
    if replaced.is_empty() {
        return replaced;
    }
    // Backwards through the topological order, so a value's readers are settled first.
    for v in graph.topo_order().into_iter().rev() {
        let users = graph.users(v);
        let dead = !users.is_empty() && users.iter().all(|u| replaced.contains(u));
        if dead && !read.contains(&v) && !matches!(graph.node(v).op, Op::Input { .. }) {
            replaced.insert(v);
        }
    }
    replaced
}

/// The ONNX op of an element-wise unary op.
fn unary_op(u: UnaryOp) -> &'static str {
    match u {
        UnaryOp::Neg => "Neg",
        UnaryOp::Abs => "Abs",
        UnaryOp::Exp => "Exp",
        UnaryOp::Log => "Log",
        UnaryOp::Sqrt => "Sqrt",
        UnaryOp::Recip => "Reciprocal",
        UnaryOp::Tanh => "Tanh",
        UnaryOp::Erf => "Erf",
        UnaryOp::Sigmoid => "Sigmoid",
        UnaryOp::Relu => "Relu",
    }
}

/// A chain of ops written as the one ONNX op of the layer it is.
enum LayerMatch {
    Conv(ConvMatch),
    ConvTranspose(ConvTransposeMatch),
}

mod columns;
mod conv;
mod conv_transpose;
#[cfg(test)]
mod tests;
