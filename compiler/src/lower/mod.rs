//! Graph IR -> kernel IR: one kernel per computing op (fusion, a later pass, merges
//! them), buffers for the values that need storage, and the launch order.
//!
//! Values that need no kernel: constants (inlined into the expressions that use them),
//! reshapes (a view of their operand's buffer: same elements, same order), and a
//! transpose of the last two dimensions that only feeds matrix products (folded into the
//! product's operand strides).

mod kernels_of;
pub mod print;

use crate::ir::{self, Graph, Op, ValueId};
use std::collections::HashMap;
use strata_kernels::ir::{Dim, Kernel, ScalarType};

/// Position of a buffer in [`Lowered::buffers`].
pub type BufferId = usize;

/// What a buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferRole {
    /// A model input, written by the runtime before the entry runs.
    Input(String),
    /// A parameter, persistent across runs, stored under its path.
    Param(String),
    /// An intermediate or output value.
    Temp,
}

/// A buffer of the lowered program.
#[derive(Clone, Debug, PartialEq)]
pub struct LoweredBuffer {
    pub name: String,
    pub dtype: ScalarType,
    pub shape: Vec<Dim>,
    pub role: BufferRole,
}

/// One launch: the kernel and, per kernel slot, the buffer bound to it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoweredLaunch {
    pub kernel: usize,
    pub bindings: Vec<BufferId>,
}

/// A graph turned into kernels over buffers, in execution order.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub buffers: Vec<LoweredBuffer>,
    pub kernels: Vec<Kernel>,
    pub launches: Vec<LoweredLaunch>,
    pub inputs: Vec<(String, BufferId)>,
    pub outputs: Vec<(String, BufferId)>,
}

/// A graph the lowering cannot handle (a compiler bug or an unsupported construct).
#[derive(Debug, Clone, thiserror::Error)]
#[error("lowering: {0}")]
pub struct LowerError(pub String);

pub fn kernel_dim(d: ir::Dim) -> Dim {
    match d {
        ir::Dim::Batch => Dim::Batch,
        ir::Dim::Fixed(n) => Dim::Fixed(n),
    }
}

pub fn kernel_dims(shape: &ir::Shape) -> Vec<Dim> {
    shape.dims().iter().map(|d| kernel_dim(*d)).collect()
}

fn scalar_type(d: ir::DType) -> ScalarType {
    match d {
        ir::DType::F32 => ScalarType::F32,
        ir::DType::I32 => ScalarType::I32,
    }
}

/// Where the elements of a value live.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Storage {
    /// In a buffer, row-major in the value's own shape.
    Buffer(BufferId),
    /// A scalar constant, inlined where used.
    Const(f64),
    /// The transpose (last two dims) of the value stored in this buffer.
    TransposedView(BufferId),
}

/// Lowers every value the outputs depend on.
pub fn lower(graph: &Graph) -> Result<Lowered, LowerError> {
    let mut l = Lowerer {
        graph,
        out: Lowered {
            buffers: Vec::new(),
            kernels: Vec::new(),
            launches: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        },
        storage: HashMap::new(),
    };
    for v in graph.topo_order() {
        l.value(v)?;
    }
    for &i in &graph.inputs {
        if let (Op::Input { name }, Some(Storage::Buffer(b))) =
            (&graph.node(i).op, l.storage.get(&i))
        {
            l.out.inputs.push((name.clone(), *b));
        }
    }
    for (name, v) in &graph.outputs {
        let b = l.output_buffer(*v)?;
        l.out.outputs.push((name.clone(), b));
    }
    // Updates last: every kernel that reads a parameter's old value has run by then.
    for (param, new) in &graph.updates {
        let Some(Storage::Buffer(target)) = l.storage.get(param).copied() else {
            return Err(LowerError(format!("update of {param}: not a parameter buffer")));
        };
        if l.out.buffers[target].role == BufferRole::Temp {
            return Err(LowerError(format!("update of {param}: not a parameter buffer")));
        }
        l.materialize(*new)?;
        kernels_of::emit_copy(&mut l, *new, target)?;
    }
    Ok(l.out)
}

struct Lowerer<'g> {
    graph: &'g Graph,
    out: Lowered,
    storage: HashMap<ValueId, Storage>,
}

impl<'g> Lowerer<'g> {
    fn new_buffer(&mut self, v: ValueId, role: BufferRole) -> BufferId {
        let node = self.graph.node(v);
        let name = match &role {
            BufferRole::Input(n) => n.clone(),
            BufferRole::Param(p) => p.clone(),
            BufferRole::Temp => format!("t{}", v.index()),
        };
        self.out.buffers.push(LoweredBuffer {
            name,
            dtype: scalar_type(node.ty.dtype),
            shape: kernel_dims(&node.ty.shape),
            role,
        });
        self.out.buffers.len() - 1
    }

    fn value(&mut self, v: ValueId) -> Result<(), LowerError> {
        let node = self.graph.node(v);
        let storage = match &node.op {
            Op::Input { name } => {
                Storage::Buffer(self.new_buffer(v, BufferRole::Input(name.clone())))
            }
            Op::Param { path, .. } => {
                Storage::Buffer(self.new_buffer(v, BufferRole::Param(path.clone())))
            }
            Op::Const { value } => Storage::Const(*value),
            Op::Reshape { .. } => {
                let src = self.graph.operands(v)[0];
                Storage::Buffer(self.materialize(src)?)
            }
            Op::Transpose { perm } if self.folds_into_matmuls(v, perm) => {
                let src = self.graph.operands(v)[0];
                Storage::TransposedView(self.materialize(src)?)
            }
            _ => {
                let out = self.new_buffer(v, BufferRole::Temp);
                self.storage.insert(v, Storage::Buffer(out));
                kernels_of::emit(self, v, out)?;
                return Ok(());
            }
        };
        self.storage.insert(v, storage);
        Ok(())
    }

    /// A transpose of the last two dims whose every user is a matmul can be read through
    /// strides instead of being computed.
    fn folds_into_matmuls(&self, v: ValueId, perm: &[usize]) -> bool {
        let r = perm.len();
        r >= 2
            && perm[..r - 2].iter().enumerate().all(|(i, p)| *p == i)
            && perm[r - 2] == r - 1
            && perm[r - 1] == r - 2
            && !self.graph.outputs.iter().any(|(_, o)| *o == v)
            && self
                .graph
                .users(v)
                .iter()
                .all(|u| matches!(self.graph.node(*u).op, Op::MatMul))
    }

    /// A scratch buffer holding exactly output `v` (its own shape), copying it out of an
    /// input, a parameter or a view of another shape if need be.
    fn output_buffer(&mut self, v: ValueId) -> Result<BufferId, LowerError> {
        let b = self.materialize(v)?;
        let buf = &self.out.buffers[b];
        if buf.role == BufferRole::Temp && buf.shape == kernel_dims(&self.graph.ty(v).shape) {
            return Ok(b);
        }
        let out = self.new_buffer(v, BufferRole::Temp);
        kernels_of::emit_copy(self, v, out)?;
        Ok(out)
    }

    /// The buffer holding `v` in its own layout, computing it with a copy kernel if it is
    /// only a constant or a view.
    fn materialize(&mut self, v: ValueId) -> Result<BufferId, LowerError> {
        match self.storage.get(&v).copied() {
            Some(Storage::Buffer(b)) => Ok(b),
            Some(_) => {
                let out = self.new_buffer(v, BufferRole::Temp);
                kernels_of::emit_copy(self, v, out)?;
                self.storage.insert(v, Storage::Buffer(out));
                Ok(out)
            }
            None => Err(LowerError(format!("{v} used before it is lowered"))),
        }
    }
}
