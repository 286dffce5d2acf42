//! Graph IR -> kernel IR: the fused kernels, the buffers of the values that need
//! storage, and the launch order.
//!
//! [`fuse`] decides per value whether it gets a buffer, is computed inside its users'
//! expressions, or ends a product's or reduction's epilogue; [`kernels_of`] builds the
//! kernels. Values that need no kernel: constants and inlined values (substituted into
//! the expressions that use them), reshapes of stored values (a view of their operand's
//! buffer: same elements, same order), and a transpose of the last two dimensions that
//! only feeds matrix products (folded into the product's operand strides).
//!
//! Launch order is the graph's topological order of the kernel roots, except for the
//! optimizer updates: each update group (see [`fuse`], rule `update-group`) is launched
//! as soon as its inputs exist and every kernel reading the old values has run, so the
//! gradients it consumes die early. Then [`group`] launches kernels that do not depend
//! on each other together, as one kernel with parts (horizontal fusion).

pub mod fuse;
mod group;
pub mod json;
mod kernels_of;
pub mod print;
mod scan_loop;

use crate::ir::{self, Graph, Op, ValueId};
use fuse::{Fusion, Placement};
use std::collections::{BTreeMap, HashMap, HashSet};
use strata_artifact::manifest::Window;
use strata_kernels::ir::{Dim, ImageWindow, Kernel, ScalarType};

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
    /// A slice of another buffer that moves with the loop running the launch (a scan's
    /// carry or sequence element); it has no storage of its own.
    Window(Window),
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

/// Launches `start..end` repeated `count` times (a scan's body), with the sequence index
/// running down when `reverse`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoweredLoop {
    pub start: usize,
    pub end: usize,
    pub count: u64,
    pub reverse: bool,
}

impl Lowered {
    /// The buffer whose storage `b` uses: its parent if `b` is a window, else itself.
    pub fn root(&self, b: BufferId) -> BufferId {
        match self.buffers[b].role {
            BufferRole::Window(w) => w.parent,
            _ => b,
        }
    }

    /// Whether launch `i` runs inside a loop.
    pub fn in_loop(&self, i: usize) -> bool {
        self.loops.iter().any(|lp| (lp.start..lp.end).contains(&i))
    }
}

/// A graph turned into kernels over buffers, in execution order.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub buffers: Vec<LoweredBuffer>,
    pub kernels: Vec<Kernel>,
    pub launches: Vec<LoweredLaunch>,
    /// Ranges of `launches` that repeat (scans), disjoint and in order.
    pub loops: Vec<LoweredLoop>,
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

/// Where the elements of a value live once it is lowered.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Storage {
    /// In a buffer, row-major in the value's own shape.
    Buffer(BufferId),
    /// A scalar constant, inlined where used.
    Const(f64),
    /// The transpose (last two dims) of the value stored in this buffer.
    TransposedView(BufferId),
    /// Transpose `of` (another permutation) of its operand, stored row-major in this
    /// buffer; read only by products (fusion rule `view`).
    PermutedView { buf: BufferId, of: ValueId },
    /// A slice `[start, start + len)` along `axis` of value `of`, stored in this buffer
    /// in `of`'s layout; `transposed`: the transpose (last two dims) of that slice.
    SliceView {
        buf: BufferId,
        of: ValueId,
        axis: usize,
        start: u64,
        transposed: bool,
    },
    /// Rebuilt from its operands wherever it is used (an inlined value or an epilogue
    /// link).
    Inline,
    /// The im2col columns of the image stored in this buffer, or a reshape of them, read
    /// only by products through the window (fusion rule `window`).
    Im2ColView {
        image: BufferId,
        window: ImageWindow,
    },
}

/// Optimizer updates stored by one map kernel.
#[derive(Clone, Debug)]
struct UpdateGroup {
    members: Vec<(ValueId, ValueId)>,
    /// Values that must be lowered before the group runs: its new values and every
    /// kernel root (or output) that reads one of its parameters' old values.
    after: After,
    done: bool,
}

/// What an update group waits for.
#[derive(Clone, Debug)]
enum After {
    /// These values.
    Values(HashSet<ValueId>),
    /// Every value of the graph.
    Everything,
}

/// Lowers every value of the graph, fused by the rules of [`fuse`].
pub fn lower(graph: &Graph) -> Result<Lowered, LowerError> {
    let mut lowered = lower_without_parts(graph)?;
    group::group_independent(&mut lowered)?;
    Ok(lowered)
}

/// [`lower`] without [`group`]: each kernel its own launch (for comparisons).
pub fn lower_without_parts(graph: &Graph) -> Result<Lowered, LowerError> {
    // Projected sequences computed inside their loops, as terms of the steps' products
    // (`passes::scan_projection`): a schedule of the kernels, so made on a copy.
    let sunk = crate::passes::scan_projection::sunk(graph).map_err(LowerError)?;
    let graph = sunk.as_ref().unwrap_or(graph);
    let mut fusion = fuse::plan_fusion(graph);
    let groups = update_groups(graph, &mut fusion);
    lower_with(graph, fusion, groups)
}

/// Lowers with one kernel per op: no inlining, no epilogues (the reference the fused
/// lowering is compared against in `--stats`).
pub fn lower_unfused(graph: &Graph) -> Result<Lowered, LowerError> {
    let mut fusion = Fusion::default();
    for v in graph.values() {
        let p = match &graph.node(v).op {
            Op::Input { .. } | Op::Param { .. } => Placement::Leaf,
            Op::Const { .. } => Placement::Const,
            Op::Reshape { .. } => Placement::View,
            Op::Transpose { .. } if fuse::folds_into_matmuls(graph, v) => Placement::View,
            Op::Slice { .. } if fuse::slice_folds_into_matmuls(graph, v) => Placement::View,
            _ => Placement::Buffer,
        };
        fusion.placement.insert(v, p);
    }
    let groups = graph
        .updates
        .iter()
        .map(|&(p, n)| UpdateGroup {
            members: vec![(p, n)],
            after: After::Everything,
            done: false,
        })
        .collect();
    lower_with(graph, fusion, groups)
}

fn lower_with(
    graph: &Graph,
    fusion: Fusion,
    groups: Vec<UpdateGroup>,
) -> Result<Lowered, LowerError> {
    let mut l = Lowerer {
        graph,
        out: Lowered {
            buffers: Vec::new(),
            kernels: Vec::new(),
            launches: Vec::new(),
            loops: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        },
        storage: HashMap::new(),
        fusion,
        dest: HashMap::new(),
    };
    let mut groups = groups;
    let mut output_buffers: HashMap<ValueId, BufferId> = HashMap::new();
    let outputs: HashSet<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let order = graph.topo_order();
    let mut waits = UpdateWaits::new(&groups, &order);
    for v in order {
        l.value(v)?;
        // An output is copied out as soon as it exists, before an update may overwrite
        // the parameter it views.
        if outputs.contains(&v) {
            let b = l.output_buffer(v)?;
            output_buffers.insert(v, b);
        }
        for g in waits.lowered(v) {
            l.launch_update(&mut groups[g])?;
        }
    }
    for g in groups.iter_mut().filter(|g| !g.done) {
        l.launch_update(g)?;
    }
    for &i in &graph.inputs {
        if let (Op::Input { name }, Some(Storage::Buffer(b))) =
            (&graph.node(i).op, l.storage.get(&i))
        {
            l.out.inputs.push((name.clone(), *b));
        }
    }
    for (name, v) in &graph.outputs {
        let b = output_buffers
            .get(v)
            .copied()
            .ok_or_else(|| LowerError(format!("output `{name}` was not lowered")))?;
        l.out.outputs.push((name.clone(), b));
    }
    Ok(l.out)
}

/// Groups the updates (rule `update-group` of [`fuse`]) and gives a buffer to every new
/// value that cannot be stored in place safely.
fn update_groups(graph: &Graph, fusion: &mut Fusion) -> Vec<UpdateGroup> {
    let n = graph.updates.len();
    let param_of: HashMap<ValueId, usize> = graph
        .updates
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (*p, i))
        .collect();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, &(param, new)) in graph.updates.iter().enumerate() {
        if fusion.get(new) != Placement::Inline {
            continue;
        }
        // Walk the inlined tree; `aligned` says the path reads element for element.
        let mut stack = vec![(new, true)];
        let mut seen = HashSet::new();
        let mut unsafe_read = false;
        let mut joins = Vec::new();
        while let Some((v, aligned)) = stack.pop() {
            if !seen.insert((v, aligned)) {
                continue;
            }
            // Another update's new value is read through its tree (inlined) or its
            // buffer (a temp, no hazard); only parameter reads can race a store.
            if let Some(&j) = param_of.get(&v) {
                let same_shape = graph.ty(graph.updates[j].0).shape == graph.ty(param).shape;
                if aligned && same_shape {
                    joins.push(j);
                } else {
                    unsafe_read = true;
                }
            }
            if v != new && fusion.get(v) != Placement::Inline {
                continue;
            }
            let node = graph.node(v);
            let keeps = matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::StopGradient);
            for o in graph.operands(v) {
                let a = aligned && keeps && graph.ty(o).shape == node.ty.shape;
                stack.push((o, a));
            }
        }
        if unsafe_read {
            fusion.placement.insert(new, Placement::Buffer);
        } else {
            for j in joins {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    by_root
        .into_values()
        .map(|members| {
            let members: Vec<(ValueId, ValueId)> =
                members.iter().map(|&i| graph.updates[i]).collect();
            let mut after: HashSet<ValueId> = members.iter().map(|(_, v)| *v).collect();
            for (p, _) in &members {
                after.extend(old_value_readers(graph, fusion, *p));
            }
            UpdateGroup {
                members,
                after: After::Values(after),
                done: false,
            }
        })
        .collect()
}

/// The kernel roots (and outputs) whose kernels read `param`'s buffer.
fn old_value_readers(graph: &Graph, fusion: &Fusion, param: ValueId) -> HashSet<ValueId> {
    let outputs: HashSet<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let mut readers = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![param];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if outputs.contains(&v) {
            readers.insert(v);
        }
        for u in graph.users(v) {
            match fusion.get(u) {
                Placement::Inline | Placement::View | Placement::Const => stack.push(u),
                Placement::Epilogue { root } => {
                    readers.insert(root);
                }
                Placement::Buffer | Placement::Leaf => {
                    readers.insert(u);
                }
            }
        }
    }
    readers
}

/// When each update group becomes ready, counted instead of re-checked: a group is
/// launched right after the last of the values it waits for is lowered, groups that
/// become ready together in group order (an empty wait ends at the first value).
struct UpdateWaits {
    /// Per group, how many of its values are still to be lowered.
    pending: Vec<usize>,
    /// Per value, the groups waiting for it, in group order.
    waiting: HashMap<ValueId, Vec<usize>>,
}

impl UpdateWaits {
    fn new(groups: &[UpdateGroup], order: &[ValueId]) -> UpdateWaits {
        let mut pending = vec![0; groups.len()];
        let mut waiting: HashMap<ValueId, Vec<usize>> = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            let values: Vec<ValueId> = match &group.after {
                After::Values(values) if !values.is_empty() => values.iter().copied().collect(),
                After::Values(_) => order.first().copied().into_iter().collect(),
                After::Everything => order.last().copied().into_iter().collect(),
            };
            pending[g] = values.len();
            for v in values {
                waiting.entry(v).or_default().push(g);
            }
        }
        UpdateWaits { pending, waiting }
    }

    /// The groups that `v`, just lowered, makes ready.
    fn lowered(&mut self, v: ValueId) -> Vec<usize> {
        let Some(groups) = self.waiting.remove(&v) else {
            return Vec::new();
        };
        groups
            .into_iter()
            .filter(|&g| {
                self.pending[g] -= 1;
                self.pending[g] == 0
            })
            .collect()
    }
}

struct Lowerer<'g> {
    graph: &'g Graph,
    out: Lowered,
    storage: HashMap<ValueId, Storage>,
    fusion: Fusion,
    /// Values whose kernel writes a given buffer instead of a fresh one (a scan body's
    /// result, written into the next carry's window).
    dest: HashMap<ValueId, BufferId>,
}

impl<'g> Lowerer<'g> {
    fn new_buffer(&mut self, v: ValueId, role: BufferRole) -> BufferId {
        let node = self.graph.node(v);
        let name = match &role {
            BufferRole::Input(n) => n.clone(),
            BufferRole::Param(p) => p.clone(),
            BufferRole::Temp | BufferRole::Window(_) => format!("t{}", v.index()),
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
        let storage = match (&node.op, self.fusion.get(v)) {
            (Op::Input { name }, _) => {
                Storage::Buffer(self.new_buffer(v, BufferRole::Input(name.clone())))
            }
            (Op::Param { path, .. }, _) => {
                Storage::Buffer(self.new_buffer(v, BufferRole::Param(path.clone())))
            }
            (Op::Const { value }, _) => Storage::Const(*value),
            (_, Placement::Inline | Placement::Epilogue { .. }) => Storage::Inline,
            (Op::Im2Col { window }, Placement::View) => {
                let src = self.graph.operands(v)[0];
                let image = self.materialize(src)?;
                let window = image_window(self.graph, src, window).ok_or_else(|| {
                    LowerError(format!("{v}: a window over an image of unknown size"))
                })?;
                Storage::Im2ColView { image, window }
            }
            (Op::Reshape { .. }, _)
                if matches!(
                    self.storage.get(&self.graph.operands(v)[0]),
                    Some(Storage::Im2ColView { .. })
                ) =>
            {
                self.storage[&self.graph.operands(v)[0]]
            }
            (Op::Reshape { .. }, _) => {
                let src = self.graph.operands(v)[0];
                Storage::Buffer(self.materialize(src)?)
            }
            (Op::Transpose { perm }, Placement::View) if !ir::op::swaps_last_two(perm) => {
                let src = self.graph.operands(v)[0];
                Storage::PermutedView {
                    buf: self.materialize(src)?,
                    of: v,
                }
            }
            (Op::Transpose { .. }, Placement::View) => {
                let src = self.graph.operands(v)[0];
                match self.storage.get(&src).copied() {
                    Some(Storage::SliceView {
                        buf,
                        of,
                        axis,
                        start,
                        transposed: false,
                    }) => Storage::SliceView {
                        buf,
                        of,
                        axis,
                        start,
                        transposed: true,
                    },
                    _ => Storage::TransposedView(self.materialize(src)?),
                }
            }
            (Op::Slice { axis, start, .. }, Placement::View) => {
                let src = self.graph.operands(v)[0];
                Storage::SliceView {
                    buf: self.materialize(src)?,
                    of: src,
                    axis: *axis,
                    start: *start,
                    transposed: false,
                }
            }
            (Op::Scan(scan), _) => return self.lower_scan(v, scan),
            (Op::Slice { axis: 0, .. }, Placement::Buffer)
                if !self.dest.contains_key(&v) && self.slice_view_source(v).is_some() =>
            {
                Storage::Buffer(self.leading_slice_view(v)?)
            }
            _ => {
                let out = match self.dest.get(&v) {
                    Some(&b) => b,
                    None => self.new_buffer(v, BufferRole::Temp),
                };
                self.storage.insert(v, Storage::Buffer(out));
                match self.fusion.producer_of.get(&v).copied() {
                    Some(p) => kernels_of::emit_fused(self, p, v, out)?,
                    None => kernels_of::emit(self, v, out)?,
                }
                return Ok(());
            }
        };
        self.storage.insert(v, storage);
        Ok(())
    }

    fn launch_update(&mut self, g: &mut UpdateGroup) -> Result<(), LowerError> {
        let mut targets = Vec::new();
        for (param, _) in &g.members {
            let Some(Storage::Buffer(target)) = self.storage.get(param).copied() else {
                return Err(LowerError(format!(
                    "update of {param}: not a parameter buffer"
                )));
            };
            if self.out.buffers[target].role == BufferRole::Temp {
                return Err(LowerError(format!(
                    "update of {param}: not a parameter buffer"
                )));
            }
            targets.push(target);
        }
        kernels_of::emit_update(self, &g.members, &targets)?;
        g.done = true;
        Ok(())
    }

    /// A scratch buffer holding exactly output `v` (its own shape), copying it out of an
    /// input, a parameter or a view of another shape if need be.
    fn output_buffer(&mut self, v: ValueId) -> Result<BufferId, LowerError> {
        if let Some(Storage::Buffer(b)) = self.storage.get(&v).copied() {
            let buf = &self.out.buffers[b];
            if buf.role == BufferRole::Temp && buf.shape == kernel_dims(&self.graph.ty(v).shape) {
                return Ok(b);
            }
        }
        let out = self.new_buffer(v, BufferRole::Temp);
        kernels_of::emit_copy(self, v, out)?;
        Ok(out)
    }

    /// The buffer a slice along the first axis reads, when that buffer holds the
    /// operand in its own layout (and is no window itself): the slice is then a
    /// contiguous run of it, a window (see [`Lowerer::leading_slice_view`]). None for
    /// any other value.
    fn slice_view_source(&self, v: ValueId) -> Option<BufferId> {
        let Op::Slice { axis: 0, len, .. } = self.graph.node(v).op else {
            return None;
        };
        let src = self.graph.operands(v)[0];
        let Some(Storage::Buffer(b)) = self.storage.get(&src).copied() else {
            return None;
        };
        let buf = &self.out.buffers[b];
        let own_layout = buf.shape == kernel_dims(&self.graph.ty(src).shape);
        (!matches!(buf.role, BufferRole::Window(_)) && own_layout && len > 0).then_some(b)
    }

    /// The window of a slice along the first axis (no copy); `v` must have a
    /// [`Lowerer::slice_view_source`].
    fn leading_slice_view(&mut self, v: ValueId) -> Result<BufferId, LowerError> {
        let (Some(b), Op::Slice { start, len, .. }) =
            (self.slice_view_source(v), &self.graph.node(v).op)
        else {
            return Err(LowerError(format!("{v} is not a slice of a stored value")));
        };
        let buf = &self.out.buffers[b];
        let window = Window {
            parent: b,
            step: 0,
            shift: *start,
            modulus: 0,
            span: *len,
        };
        let buffer = LoweredBuffer {
            name: format!("{}_{start}_{}", buf.name, start + len),
            dtype: buf.dtype,
            shape: kernel_dims(&self.graph.ty(v).shape),
            role: BufferRole::Window(window),
        };
        self.out.buffers.push(buffer);
        Ok(self.out.buffers.len() - 1)
    }

    /// The buffer holding `v` in its own layout, computing it with a copy kernel if it is
    /// only a constant, an inlined value or a view.
    fn materialize(&mut self, v: ValueId) -> Result<BufferId, LowerError> {
        match self.storage.get(&v).copied() {
            Some(Storage::Buffer(b)) => Ok(b),
            Some(_) if self.slice_view_source(v).is_some() => {
                let b = self.leading_slice_view(v)?;
                self.storage.insert(v, Storage::Buffer(b));
                Ok(b)
            }
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

/// The kernel IR's window of `window` over `image`'s `[C, H, W]` (all fixed).
fn image_window(graph: &Graph, image: ValueId, window: &ir::ConvWindow) -> Option<ImageWindow> {
    let dims = graph.ty(image).shape.dims();
    let [_, c, h, w] = dims else {
        return None;
    };
    Some(ImageWindow {
        channels: c.fixed()?,
        height: h.fixed()?,
        width: w.fixed()?,
        kh: window.kh,
        kw: window.kw,
        stride: window.stride,
        padding: window.padding,
        dilation: window.dilation,
    })
}
