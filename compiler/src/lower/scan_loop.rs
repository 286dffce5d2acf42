//! Lowering a `scan`: its body's kernels become a loop of the entry's launch list.
//!
//! The stacked carries `R` are one buffer (`[T + 1, ...]`, or `[2, ...]` double-buffered
//! for `keep = last`). Before the loop a copy writes `init` into its slot; each iteration
//! runs the body's kernels once, reading the carry through a window `R[read(t)]`, each
//! sequence through `seq[t]`, constants whole, and the body's result is written straight
//! into the window `R[write(t)]`, so no carry is ever copied. Time-major sequences make
//! every window one contiguous run of elements, whatever the batch size.

use super::{BufferId, BufferRole, LowerError, LoweredBuffer, LoweredLoop, Lowerer, Storage};
use super::{fuse, kernel_dims, kernels_of};
use crate::ir::{Op, Scan, ValueId};
use std::collections::HashMap;
use strata_artifact::manifest::Window;
use strata_kernels::ir::Dim;

impl Lowerer<'_> {
    /// Lowers scan `v`: the init copy, the loop, and (for `keep = last`) the final copy.
    pub(super) fn lower_scan(&mut self, v: ValueId, scan: &Scan) -> Result<(), LowerError> {
        let operands = self.graph.operands(v);
        let k = scan.sequences;
        let carry_ty = self.graph.ty(operands[0]).clone();
        let steps = match self.graph.ty(operands[1]).shape.dims().first() {
            Some(crate::ir::Dim::Fixed(t)) => *t,
            _ => {
                return Err(LowerError(format!(
                    "{v}: a scan's sequence has no fixed time axis"
                )));
            }
        };
        let carry_dims = kernel_dims(&carry_ty.shape);
        // All carries, or two slots used in turn (`keep = last`).
        let modulus = if scan.keep_all { 0 } else { 2 };
        let stack = if scan.keep_all {
            let r = self.new_buffer(v, BufferRole::Temp);
            self.storage.insert(v, Storage::Buffer(r));
            r
        } else {
            let mut shape = vec![Dim::Fixed(2)];
            shape.extend(&carry_dims);
            self.push_buffer(format!("t{}_carries", v.index()), shape)
        };
        // Slot indices: forward reads R[t] and writes R[t + 1]; reverse the other way.
        let (init_index, read_shift, write_shift, final_index) = if scan.reverse {
            (steps, 1, 0, 0)
        } else {
            (0, 0, 1, steps)
        };
        let window = |step: u64, shift: u64| Window {
            parent: stack,
            step,
            shift: if modulus == 0 { shift } else { shift % modulus },
            modulus,
            span: 1,
        };

        // Operands in storage: sequences and the initial carry as buffers, constants as
        // buffers or inlined scalars.
        let init = self.materialize(operands[0])?;
        let init_slot = self.window_buffer(&carry_dims, window(0, init_index), "init")?;
        kernels_of::emit_buffer_copy(self, init, init_slot)?;
        let mut inputs = vec![Storage::Buffer(self.window_buffer(
            &carry_dims,
            window(1, read_shift),
            "prev",
        )?)];
        for &seq in &operands[1..=k] {
            let b = self.materialize(seq)?;
            let dims = kernel_dims(&self.graph.ty(seq).shape)[1..].to_vec();
            let w = Window {
                parent: b,
                step: 1,
                shift: 0,
                modulus: 0,
                span: 1,
            };
            inputs.push(Storage::Buffer(self.window_buffer(&dims, w, "step")?));
        }
        for &c in &operands[1 + k..] {
            inputs.push(match self.storage.get(&c).copied() {
                Some(Storage::Const(x)) => Storage::Const(x),
                _ => Storage::Buffer(self.materialize(c)?),
            });
        }
        let next = self.window_buffer(&carry_dims, window(1, write_shift), "next")?;

        let start = self.out.launches.len();
        self.lower_body(&scan.body, inputs, next)?;
        let end = self.out.launches.len();
        if start == end {
            return Err(LowerError(format!("{v}: the scan body has no kernels")));
        }
        self.out.loops.push(LoweredLoop {
            start,
            end,
            count: steps,
            reverse: scan.reverse,
        });

        if !scan.keep_all {
            let last = self.window_buffer(&carry_dims, window(0, final_index), "last")?;
            let out = self.new_buffer(v, BufferRole::Temp);
            kernels_of::emit_buffer_copy(self, last, out)?;
            self.storage.insert(v, Storage::Buffer(out));
        }
        Ok(())
    }

    /// Lowers `body` into this program's launches, its inputs in `inputs` (in order) and
    /// its one output written into `dest`.
    fn lower_body(
        &mut self,
        body: &crate::ir::Graph,
        inputs: Vec<Storage>,
        dest: BufferId,
    ) -> Result<(), LowerError> {
        let out = std::mem::replace(
            &mut self.out,
            super::Lowered {
                buffers: Vec::new(),
                kernels: Vec::new(),
                launches: Vec::new(),
                loops: Vec::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
        );
        let mut storage: HashMap<ValueId, Storage> = HashMap::new();
        for (&i, s) in body.inputs.iter().zip(inputs) {
            storage.insert(i, s);
        }
        let result = body.outputs[0].1;
        let mut inner = Lowerer {
            graph: body,
            out,
            storage,
            fusion: fuse::plan_fusion(body),
            dest: HashMap::from([(result, dest)]),
        };
        let lowered = (|| {
            for v in body.topo_order() {
                if inner.storage.contains_key(&v) {
                    continue;
                }
                if matches!(body.node(v).op, Op::Input { .. } | Op::Param { .. }) {
                    return Err(LowerError(format!("{v}: a scan body input has no storage")));
                }
                inner.value(v)?;
            }
            // A result that is not its own kernel's output (an input, a constant, a view)
            // is copied into place.
            if inner.storage.get(&result) != Some(&Storage::Buffer(dest)) {
                kernels_of::emit_copy(&mut inner, result, dest)?;
            }
            Ok(())
        })();
        self.out = inner.out;
        lowered
    }

    /// A scratch buffer that is not a graph value's own (a double-buffered carry).
    fn push_buffer(&mut self, name: String, shape: Vec<Dim>) -> BufferId {
        self.out.buffers.push(LoweredBuffer {
            name,
            dtype: strata_kernels::ir::ScalarType::F32,
            shape,
            role: BufferRole::Temp,
        });
        self.out.buffers.len() - 1
    }

    /// A window of `shape` into `window.parent` (see [`Window`]).
    fn window_buffer(
        &mut self,
        shape: &[Dim],
        window: Window,
        what: &str,
    ) -> Result<BufferId, LowerError> {
        let mut window = window;
        // A step of a sequence that is itself a run of time steps of a buffer (a slice
        // view) is a step of that buffer, `view.shift` steps later.
        if let BufferRole::Window(view) = self.out.buffers[window.parent].role {
            let view_shape = &self.out.buffers[window.parent].shape;
            let composable = view.step == 0
                && view.modulus == 0
                && window.modulus == 0
                && window.span == 1
                && view_shape.get(1..) == Some(shape)
                && view_shape.first() == Some(&Dim::Fixed(view.span));
            assert!(
                composable,
                "a window of a window is always a time step of a slice view"
            );
            window = Window {
                parent: view.parent,
                shift: window.shift + view.shift,
                ..window
            };
        }
        let parent = &self.out.buffers[window.parent];
        let buffer = LoweredBuffer {
            name: format!("{}_{what}", parent.name),
            dtype: parent.dtype,
            shape: shape.to_vec(),
            role: BufferRole::Window(window),
        };
        self.out.buffers.push(buffer);
        Ok(self.out.buffers.len() - 1)
    }
}
