//! The reference interpreter: evaluates any graph in `f64`, the oracle for every pass and
//! both backends.
//!
//! Values are dense row-major [`Tensor`]s of `f64` whatever the IR dtype (`i32` inputs are
//! their integer values). Each op is evaluated straight from its typing rule in
//! [`super::op`], with no fusion or reordering, and every sum runs sequentially in
//! row-major order, so results are deterministic and differ from exact arithmetic only by
//! `f64` rounding.
//!
//! The symbolic batch is resolved from the inputs: every [`Dim::Batch`] of every input
//! must have one size, and every fixed dimension must match the declaration. After each
//! op the computed shape is checked against the type the graph records, so an ill-typed
//! graph is reported rather than evaluated.
//!
//! Element-wise ops and reduction steps compute `strata_kernels::scalar_op`'s `f64`
//! semantics, the same code the kernel IR's evaluator runs, which settles the choices
//! floating point leaves: `max`/`min` (binary and reductions) and `relu` propagate NaN and
//! order `-0 < +0`; `sigmoid` never overflows; a reduction over an empty extent gives 0,
//! -inf or +inf; comparisons of NaN give 0.

use super::graph::{Graph, ValueId};
use super::init::init_param;
use super::op::Op;
use super::types::{Dim, Shape};
use std::collections::{HashMap, HashSet};

mod ops;
mod scan_loop;

/// A dense row-major tensor of `f64`s.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, row-major.
    pub data: Vec<f64>,
}

/// Why a graph could not be evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpretError {
    /// The graph breaks an invariant of [`Graph::verify`].
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// No tensor was given for an input of the graph.
    #[error("missing input `{name}` of shape {declared}")]
    MissingInput { name: String, declared: Shape },
    /// No tensor was given for a parameter of the graph.
    #[error("missing parameter `{path}` of shape {declared}")]
    MissingParam { path: String, declared: Shape },
    /// An input's rank or a fixed dimension differs from the declaration.
    #[error("input `{name}` has shape {}, but the graph declares {declared}", dims_text(.actual))]
    InputShape {
        name: String,
        declared: Shape,
        actual: Vec<usize>,
    },
    /// Two batch dimensions (of one input or of two) have different sizes.
    #[error(
        "input `{name}` has shape {} (batch {batch}), but input `{first}` has shape {} (batch {first_batch}); every input must have the same batch size",
        dims_text(.shape),
        dims_text(.first_shape)
    )]
    BatchMismatch {
        name: String,
        shape: Vec<usize>,
        batch: usize,
        first: String,
        first_shape: Vec<usize>,
        first_batch: usize,
    },
    /// A parameter's shape differs from the declaration.
    #[error("parameter `{path}` has shape {}, but the graph declares {declared}", dims_text(.actual))]
    ParamShape {
        path: String,
        declared: Shape,
        actual: Vec<usize>,
    },
    /// A tensor's data does not have as many elements as its shape.
    #[error("a tensor of shape {} holds {len} elements", dims_text(.shape))]
    TensorSize { shape: Vec<usize>, len: usize },
    /// An op could not be applied to its operands' values.
    #[error("{value} ({op}): {message}")]
    Op {
        value: ValueId,
        op: &'static str,
        message: String,
    },
}

/// `[2, 3]`: a concrete shape as error messages print it.
fn dims_text(dims: &[usize]) -> String {
    format!("{dims:?}")
}

/// The number of elements of `shape`, or None if it overflows `usize`.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

impl Tensor {
    /// A tensor from its shape and row-major data, which must have the shape's size.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Result<Tensor, InterpretError> {
        let tensor = Tensor { shape, data };
        tensor.check_size()?;
        Ok(tensor)
    }

    /// A tensor from `f32` data (parameters, backend outputs).
    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Result<Tensor, InterpretError> {
        Tensor::new(shape, data.iter().map(|&x| f64::from(x)).collect())
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f64) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: vec![value],
        }
    }

    /// A tensor with every element `value`. The shape's size must fit in memory.
    pub fn full(shape: Vec<usize>, value: f64) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![value; n],
        }
    }

    /// A tensor of zeros. The shape's size must fit in memory.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// Checks that `data` has as many elements as `shape` (the fields are public, so a
    /// tensor built by hand may not).
    pub fn check_size(&self) -> Result<(), InterpretError> {
        if element_count(&self.shape) != Some(self.data.len()) {
            return Err(InterpretError::TensorSize {
                shape: self.shape.clone(),
                len: self.data.len(),
            });
        }
        Ok(())
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements (some extent is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements rounded to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }

    /// The largest element-wise `|self - reference|`. Infinite if the shapes differ or
    /// exactly one of a pair is NaN; a pair of NaNs or of equal infinities counts as 0.
    pub fn max_abs_error(&self, reference: &Tensor) -> f64 {
        self.max_error(reference, |_| 1.0)
    }

    /// The largest error relative to the reference's magnitude:
    ///
    /// ```text
    /// max_i |a_i - b_i| / max_j |b_j|      (b = reference)
    /// ```
    ///
    /// Errors are judged against the tensor's scale rather than each element's own
    /// magnitude: an f32 backend accumulates absolute rounding error on the scale of the
    /// values it sums, so an element that is near zero through cancellation (a logit, a
    /// small probability) carries error on the tensor's scale, and comparing it to its
    /// own tiny magnitude would measure cancellation, not correctness. If the reference is
    /// all zeros the error is absolute. Shapes and NaNs as in [`Tensor::max_abs_error`].
    pub fn max_relative_error(&self, reference: &Tensor) -> f64 {
        let scale = reference
            .data
            .iter()
            .filter(|x| x.is_finite())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        let scale = if scale > 0.0 { scale } else { 1.0 };
        self.max_error(reference, |_| scale)
    }

    fn max_error(&self, reference: &Tensor, denominator: impl Fn(f64) -> f64) -> f64 {
        if self.shape != reference.shape || self.data.len() != reference.data.len() {
            return f64::INFINITY;
        }
        self.data
            .iter()
            .zip(&reference.data)
            .map(|(&a, &b)| {
                if a == b || (a.is_nan() && b.is_nan()) {
                    0.0
                } else if a.is_nan() || b.is_nan() {
                    f64::INFINITY
                } else {
                    (a - b).abs() / denominator(b)
                }
            })
            .fold(0.0, f64::max)
    }
}

/// Evaluates one op on concrete operands (no batch needed): what constant folding uses,
/// so a folded constant is exactly what the interpreter would compute.
pub fn apply_op(op: &Op, operands: &[&Tensor]) -> Result<Tensor, String> {
    ops::apply(op, operands, None)
}

/// Evaluates `graph` and returns each of its outputs by name.
///
/// `inputs` are keyed by input name and `params` by parameter path; entries the graph
/// does not use are ignored. Values are dropped once their last user has run.
pub fn interpret(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    params: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, InterpretError> {
    let values = evaluate(graph, inputs, params, Retain::Outputs)?;
    graph
        .outputs
        .iter()
        .map(|(name, v)| match values.get(v) {
            Some(t) => Ok((name.clone(), t.clone())),
            None => Err(InterpretError::InvalidGraph(format!(
                "output `{name}` refers to {v}, which was not evaluated"
            ))),
        })
        .collect()
}

/// Evaluates `graph` and returns the value of every node, for checks that look inside a
/// graph (autodiff, pass-by-pass comparisons). Arguments as for [`interpret`].
pub fn interpret_values(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    params: &HashMap<String, Tensor>,
) -> Result<HashMap<ValueId, Tensor>, InterpretError> {
    evaluate(graph, inputs, params, Retain::All)
}

/// The batch size the inputs give, or None if no input has a batch dimension. Checks
/// every input's rank and fixed dimensions against its declaration.
pub fn resolve_batch(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
) -> Result<Option<usize>, InterpretError> {
    // (size, input name, its shape) of the first batch dimension seen.
    let mut batch: Option<(usize, &str, &[usize])> = None;
    for v in graph.values() {
        let node = graph.node(v);
        let Op::Input { name } = &node.op else {
            continue;
        };
        let declared = &node.ty.shape;
        let tensor = inputs
            .get(name)
            .ok_or_else(|| InterpretError::MissingInput {
                name: name.clone(),
                declared: declared.clone(),
            })?;
        let shape_error = || InterpretError::InputShape {
            name: name.clone(),
            declared: declared.clone(),
            actual: tensor.shape.clone(),
        };
        tensor.check_size()?;
        if tensor.shape.len() != declared.rank() {
            return Err(shape_error());
        }
        for (&extent, dim) in tensor.shape.iter().zip(declared.dims()) {
            match (dim, batch) {
                (Dim::Fixed(n), _) if *n != extent as u64 => return Err(shape_error()),
                (Dim::Fixed(_), _) => {}
                (Dim::Batch, None) => batch = Some((extent, name, &tensor.shape)),
                (Dim::Batch, Some((size, first, first_shape))) if size != extent => {
                    return Err(InterpretError::BatchMismatch {
                        name: name.clone(),
                        shape: tensor.shape.clone(),
                        batch: extent,
                        first: first.to_string(),
                        first_shape: first_shape.to_vec(),
                        first_batch: size,
                    });
                }
                (Dim::Batch, Some(_)) => {}
            }
        }
    }
    Ok(batch.map(|(size, _, _)| size))
}

/// Every parameter of `graph` at its initial value for `seed` (see [`init_param`]),
/// keyed by path: the `params` argument for interpreting an untrained model.
pub fn initial_params(graph: &Graph, seed: u64) -> Result<HashMap<String, Tensor>, InterpretError> {
    let mut params = HashMap::new();
    for (v, path) in graph.params() {
        let node = graph.node(v);
        let Op::Param { init, .. } = &node.op else {
            continue;
        };
        let dims: Option<Vec<u64>> = node.ty.shape.dims().iter().map(|d| d.fixed()).collect();
        let Some(dims) = dims else {
            return Err(InterpretError::InvalidGraph(format!(
                "parameter `{path}` has the batch dimension in {}",
                node.ty.shape
            )));
        };
        let values = init_param(path, init, &dims, seed);
        let shape = dims.iter().map(|&d| d as usize).collect();
        params.insert(path.to_string(), Tensor::from_f32(shape, &values)?);
    }
    Ok(params)
}

/// Which values [`evaluate`] keeps to the end.
#[derive(Clone, Copy, PartialEq)]
enum Retain {
    All,
    Outputs,
}

fn evaluate(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    params: &HashMap<String, Tensor>,
    retain: Retain,
) -> Result<HashMap<ValueId, Tensor>, InterpretError> {
    graph.verify().map_err(InterpretError::InvalidGraph)?;
    let batch = resolve_batch(graph, inputs)?;
    let outputs: HashSet<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let mut pending_users: HashMap<ValueId, usize> = graph
        .values()
        .into_iter()
        .map(|v| (v, graph.users(v).len()))
        .collect();
    let mut values: HashMap<ValueId, Tensor> = HashMap::new();

    for v in graph.topo_order() {
        let node = graph.node(v);
        let op_error = |message: String| InterpretError::Op {
            value: v,
            op: node.op.mnemonic(),
            message,
        };
        let declared = concrete_shape(&node.ty.shape, batch).ok_or_else(|| {
            op_error(format!(
                "type {} needs the batch size, but no input has a batch dimension",
                node.ty
            ))
        })?;
        let operand_ids = graph.operands(v);
        let result = match &node.op {
            Op::Input { name } => {
                inputs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| InterpretError::MissingInput {
                        name: name.clone(),
                        declared: node.ty.shape.clone(),
                    })?
            }
            Op::Param { path, .. } => {
                let t = params
                    .get(path)
                    .ok_or_else(|| InterpretError::MissingParam {
                        path: path.clone(),
                        declared: node.ty.shape.clone(),
                    })?;
                t.check_size()?;
                if t.shape != declared {
                    return Err(InterpretError::ParamShape {
                        path: path.clone(),
                        declared: node.ty.shape.clone(),
                        actual: t.shape.clone(),
                    });
                }
                t.clone()
            }
            op => {
                let operands = operand_ids
                    .iter()
                    .map(|o| {
                        values
                            .get(o)
                            .ok_or_else(|| op_error(format!("operand {o} has no value")))
                    })
                    .collect::<Result<Vec<&Tensor>, _>>()?;
                ops::apply(op, &operands, batch).map_err(op_error)?
            }
        };
        if result.shape != declared {
            return Err(op_error(format!(
                "computed shape {} but the graph records {}",
                dims_text(&result.shape),
                node.ty
            )));
        }
        if retain == Retain::Outputs {
            let mut distinct = operand_ids;
            distinct.sort();
            distinct.dedup();
            for o in distinct {
                if let Some(n) = pending_users.get_mut(&o) {
                    *n = n.saturating_sub(1);
                    if *n == 0 && !outputs.contains(&o) {
                        values.remove(&o);
                    }
                }
            }
            if pending_users.get(&v) == Some(&0) && !outputs.contains(&v) {
                continue;
            }
        }
        values.insert(v, result);
    }
    Ok(values)
}

/// The extents of `shape` for `batch`, or None if it needs a batch that is unknown.
fn concrete_shape(shape: &Shape, batch: Option<usize>) -> Option<Vec<usize>> {
    shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(*n as usize),
            Dim::Batch => batch,
        })
        .collect()
}

#[cfg(test)]
mod tests;
