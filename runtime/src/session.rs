//! A loaded model, ready to run: compiled kernels, persistent buffers, and an arena.
//!
//! A session runs on a [`Backend`]: the CPU (CLIF generated from the kernel IR and
//! JIT-compiled, the rest of this page) or a GPU (WGSL generated from the kernel IR,
//! through wgpu; see [`crate::gpu`]). The code texts an artifact carries are never run.
//!
//! # Persistent buffers on a GPU
//! A CPU session's kernels update the host storage of the persistent buffers in place. A
//! GPU session's kernels update the device's copy; there, after a run of an entry that
//! writes a persistent buffer (`train_step`), the host copy is dropped as stale and the
//! device holds the only current values. The first host read afterwards
//! ([`Session::weights`], [`Session::save_weights`], a persistent output of a later run)
//! reads the whole persistent region back in one copy and keeps it until the next such
//! run; [`Session::load_weights`] replaces the host copy, which is uploaded before the
//! next run. So training on the GPU copies no weights across per step, and checkpoints
//! still see the values the device trained.
//!
//! A [`Session`] owns everything a run touches. Building one validates the artifact
//! (again: an artifact built in memory may not have been; not an executable's own,
//! validated as it was parsed) and checks its weights against
//! the manifest; an entry's CPU code is generated from the kernel IR and JIT-compiled
//! when the entry first runs (or mapped, for an executable carrying machine code), and a
//! persistent buffer's initial value is copied into owned storage when first written or
//! read whole; a launch that only reads it reads the artifact's bytes in place
//! (`host_buffers.rs`). [`Session::run`] then checks the inputs against the entry,
//! sizes the arena and the I/O block for their batch, copies them into the I/O block,
//! launches the entry's kernels in order and copies the outputs out of it.
//!
//! # Safety argument
//! Kernels get raw pointers. Validation guarantees that every launch binds, per kernel
//! slot, a buffer of exactly the slot's dtype and shape, and that every arena (I/O)
//! buffer lies inside the arena (I/O block) for every batch size; both are allocated for
//! the run's batch and
//! persistent buffers hold exactly their elements (one read in place is its own range of
//! the artifact's weights, checked against its dtype and shape when the session was made,
//! and bound only to slots its kernel never stores to). So every pointer handed to a kernel
//! points at storage as large as the kernel's declaration of that slot. That the
//! generated code stays inside its declared buffers is proven from the kernel IR at each
//! batch size before the first run at that size ([`validate_bounds`]: every index
//! expression's range, every `gemm` operand's extent).
//!
//! The arena and, after it, the I/O block are one 64-byte aligned allocation, which grows
//! when a larger batch needs it and is kept between runs; it is not cleared between runs
//! (kernels write before they read).

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use strata_kernels::ir::{Dim, Kernel};

use crate::cpu::{self, JitCode, KernelFn, MappedCode};
use crate::error::{RunError, SessionError};
use crate::gpu::engine::writes_persistent;
use crate::gpu::{AdapterSummary, GpuEngine, GpuError, GpuOptions};
use strata_artifact::Backend;
use strata_artifact::WeightsError;
use strata_artifact::manifest::{Entry, Location, Manifest};
use strata_artifact::tensor::{HostTensor, TensorData, type_string};
use strata_artifact::validate::validate_bounds;
use strata_artifact::weights::{encode_weights, left_out, match_weights, to_host_tensor};

use crate::arena::{Arena, Blocks};
use crate::host_buffers::HostBuffers;
use crate::launches::{AloneTimer, CpuLaunches, RowMajorKey};
use strata_artifact::{Artifact, MachineCode, ModelInfo};

/// What runs the kernels.
enum Engine {
    Cpu {
        /// Code of each kernel (one function per part), by kernel position: set for the
        /// kernels the executable carries, and for the others when an entry that
        /// launches them first runs; valid while `code` lives.
        functions: Vec<Option<Vec<KernelFn>>>,
        code: CpuCode,
        arena: Arena,
        /// What the runs prepare once for the ones after them.
        prepared: Box<Prepared>,
        /// Per kernel: time spent in its launches and their count, while profiling.
        profile: Option<Vec<(std::time::Duration, u64)>>,
    },
    // Boxed: a GPU engine (device, queue, pipelines) is far larger than the CPU's fields.
    Gpu(Box<GpuEngine>),
}

/// What a CPU session's runs prepare once for the runs after them.
struct Prepared {
    /// Per kernel: how its launches are cut at the batch size last run.
    plans: Vec<Option<cpu::LaunchPlan>>,
    /// Per entry: whether it changes a parameter (a training step).
    changes_weights: Vec<bool>,
    /// Row-major copies of the parameters that products read through their transpose,
    /// by buffer and matrix (its offset and shape: one buffer may be read as several), for
    /// the entries that change no parameter: made when first needed, dropped when the
    /// weights change (as onnxruntime packs a model's weights once per session).
    row_major: HashMap<RowMajorKey, Box<[f32]>>,
    /// Row-major copies made afresh for one launch of an entry that changes parameters
    /// (their storage reused from launch to launch): `gemm` packs a transposed operand
    /// again for every call, and a product of many rows is several calls.
    launch_copies: Vec<Vec<f32>>,
    /// How each seated loop of barriers, and each entry's whole run, went with several
    /// threads and alone.
    alone_timers: Vec<AloneTimer>,
}

/// A CPU session's code: the machine code an executable carries, mapped at its start,
/// and the kernels compiled from their validated IR when an entry first needs them.
pub struct CpuCode {
    carried: Option<MappedCode>,
    /// Why machine code the executable carries could not be used, if it could not.
    carried_unusable: Option<String>,
    compiled: Vec<JitCode>,
}

impl CpuCode {
    /// The function named `name`; valid while this code lives.
    fn get(&self, name: &str) -> Option<KernelFn> {
        let carried = self.carried.as_ref().and_then(|code| code.get(name));
        carried.or_else(|| self.compiled.iter().find_map(|code| code.get(name)))
    }

    /// How many modules of kernels have been JIT-compiled so far (one per entry's first
    /// run or [`Session::prepare`] that found kernels without code).
    pub fn compiled_modules(&self) -> usize {
        self.compiled.len()
    }

    /// Where the code came from, for a person: `compiled from the kernel IR when first
    /// run`, `machine code carried by the executable`, with the reason when carried code
    /// could not run here.
    pub fn origin(&self) -> String {
        match (&self.carried, &self.carried_unusable) {
            (Some(code), _) => format!(
                "machine code carried by the executable ({} bytes); kernels it lacks are compiled when first run",
                code.len()
            ),
            (None, None) => "compiled from the kernel IR when first run".into(),
            (None, Some(why)) => format!(
                "compiled from the kernel IR when first run (the executable's machine code is unusable: {why})"
            ),
        }
    }

    /// True when the executable's machine code is mapped.
    pub fn is_carried(&self) -> bool {
        self.carried.is_some()
    }
}

/// Whether a session may run the machine code its artifact carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarriedCode {
    /// Never: the kernels are compiled from their validated IR. For every artifact that
    /// is not part of the running executable itself.
    Compile,
    /// When this host can run it: for an executable running the artifact appended to
    /// itself, whose code is as trusted as the executable file. That artifact was
    /// validated as it was parsed ([`strata_artifact::Artifact::from_shared`]), so the
    /// session does not validate it a second time (a tenth of a small model's start).
    UseIfRunnable,
}

/// A model ready to run, on the CPU or a GPU.
///
/// A CPU session keeps the persistent buffers' values on the host; a GPU session keeps
/// them on the device and a host copy that is read back when asked for (see the module
/// docs).
pub struct Session {
    manifest: Manifest,
    engine: Engine,
    /// Host storage of the persistent buffers (None on a GPU whose copy is newer).
    /// Always set on the CPU; unset on a GPU while the device holds newer values.
    persistent: OnceCell<HostBuffers>,
    /// The batch sizes at which every kernel's accesses are proven inside its buffers
    /// ([`validate_bounds`]); a run at any other batch size proves it first.
    bounds_checked: HashSet<u64>,
}

impl Session {
    /// Validates `artifact`, compiles its code for the CPU and loads its initial weights.
    pub fn new(artifact: &Artifact) -> Result<Session, SessionError> {
        Session::new_with(artifact, Backend::Cpu)
    }

    /// [`Session::new`] on a chosen backend; the GPU's adapter comes from
    /// [`GpuOptions::from_env`].
    pub fn new_with(artifact: &Artifact, backend: Backend) -> Result<Session, SessionError> {
        Session::new_with_options(artifact, backend, &GpuOptions::from_env())
    }

    /// [`Session::new_with`] with explicit GPU options.
    pub fn new_with_options(
        artifact: &Artifact,
        backend: Backend,
        gpu: &GpuOptions,
    ) -> Result<Session, SessionError> {
        Session::new_with_code(artifact, backend, gpu, CarriedCode::Compile)
    }

    /// [`Session::new_with_options`], running the artifact's machine code when `carried`
    /// allows it and this host can ([`cpu::machine_code`]); otherwise the kernels are
    /// compiled as always.
    pub fn new_with_code(
        artifact: &Artifact,
        backend: Backend,
        gpu: &GpuOptions,
        carried: CarriedCode,
    ) -> Result<Session, SessionError> {
        if carried == CarriedCode::Compile {
            artifact.validate()?;
        }
        let manifest = artifact.manifest.clone();
        // Copied out of the artifact buffer by buffer, as runs first need them.
        let persistent = HostBuffers::lazy(&manifest, &artifact.weights)?;
        let engine = match backend {
            Backend::Cpu => {
                let machine_code = match carried {
                    CarriedCode::UseIfRunnable => artifact.machine_code.as_ref(),
                    CarriedCode::Compile => None,
                };
                cpu_engine(&manifest, machine_code)?
            }
            Backend::Gpu => {
                // A build for the CPU carries no GPU code; one for the GPU is run from
                // WGSL generated here from the validated kernel IR, not from its text.
                if artifact.wgsl.trim().is_empty() {
                    return Err(GpuError::NoGpuCode.into());
                }
                let wgsl = strata_kernels::gpu::emit_wgsl(&manifest.kernels).map_err(|e| {
                    GpuError::Pipeline {
                        kernel: e.kernel,
                        message: format!("generating its WGSL: {}", e.message),
                    }
                })?;
                Engine::Gpu(Box::new(GpuEngine::new(&manifest, &wgsl, gpu)?))
            }
        };
        Ok(Session {
            manifest,
            engine,
            persistent: OnceCell::from(persistent),
            // `Artifact::validate` proves batch size 1.
            bounds_checked: HashSet::from([1]),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Cpu { .. } => Backend::Cpu,
            Engine::Gpu(_) => Backend::Gpu,
        }
    }

    /// The GPU adapter a GPU session runs on.
    pub fn adapter(&self) -> Option<&AdapterSummary> {
        match &self.engine {
            Engine::Cpu { .. } => None,
            Engine::Gpu(g) => Some(g.adapter()),
        }
    }
}

/// Maps `carried` machine code when there is some and this host can run it; otherwise
/// generates the CPU code from the validated kernel IR and JIT-compiles it. The
/// artifact's CLIF text is never run: compiled code comes only from this binary's
/// emitter, fed the IR that validation (bounds included) has checked.
fn cpu_engine(manifest: &Manifest, carried: Option<&MachineCode>) -> Result<Engine, SessionError> {
    let (carried, carried_unusable) = match carried.map(MappedCode::map) {
        Some(Ok(code)) => (Some(code), None),
        Some(Err(why)) => (None, Some(why.to_string())),
        None => (None, None),
    };
    let code = CpuCode {
        carried,
        carried_unusable,
        compiled: Vec::new(),
    };
    // A kernel is carried when every one of its functions is.
    let functions = manifest
        .kernels
        .iter()
        .map(|k| k.function_names().iter().map(|n| code.get(n)).collect())
        .collect();
    Ok(Engine::Cpu {
        functions,
        code,
        arena: Arena::default(),
        prepared: Box::new(Prepared {
            plans: manifest.kernels.iter().map(|_| None).collect(),
            changes_weights: manifest
                .entries
                .iter()
                .map(|e| writes_persistent(manifest, e))
                .collect(),
            row_major: HashMap::new(),
            launch_copies: Vec::new(),
            alone_timers: Vec::new(),
        }),
        profile: None,
    })
}

/// Compiles the kernels `entry` launches that have no code yet, in one module: a session
/// compiles what it runs, when it first runs it (an executable's `infer` never compiles
/// the train step).
fn compile_missing(
    manifest: &Manifest,
    entry: &Entry,
    functions: &mut [Option<Vec<KernelFn>>],
    code: &mut CpuCode,
) -> Result<(), RunError> {
    let mut missing: Vec<usize> = entry
        .launches
        .iter()
        .map(|l| l.kernel)
        .filter(|&k| functions.get(k).is_some_and(Option::is_none))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    let kernels: Vec<Kernel> = missing
        .iter()
        .map(|&k| manifest.kernels[k].clone())
        .collect();
    // Kernels that differ only in names are compiled once (`cpu::distinct_kernels`).
    let (distinct, same_as) = cpu::distinct_kernels(&kernels);
    let compiled = JitCode::from_kernels(&distinct).map_err(|e| RunError::Compile {
        entry: entry.name.clone(),
        message: e.0,
    })?;
    for ((&k, kernel), &d) in missing.iter().zip(&kernels).zip(&same_as) {
        let fns = distinct[d]
            .function_names()
            .iter()
            .map(|name| compiled.get(name))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| internal(format!("no code for kernel `{}`", kernel.name)))?;
        functions[k] = Some(fns);
    }
    code.compiled.push(compiled);
    Ok(())
}

impl Session {
    /// Starts (or restarts from zero) timing every kernel launch, on the CPU; false on
    /// a GPU session, whose launches run asynchronously in one command buffer.
    pub fn start_profiling(&mut self) -> bool {
        match &mut self.engine {
            Engine::Cpu { profile, .. } => {
                *profile = Some(vec![Default::default(); self.manifest.kernels.len()]);
                true
            }
            Engine::Gpu(_) => false,
        }
    }

    /// Per kernel, in manifest order: its name, the time its launches took and their
    /// count since [`Session::start_profiling`] (empty if not profiling).
    pub fn kernel_times(&self) -> Vec<(&str, std::time::Duration, u64)> {
        match &self.engine {
            Engine::Cpu {
                profile: Some(times),
                ..
            } => self
                .manifest
                .kernels
                .iter()
                .zip(times)
                .map(|(k, (t, n))| (k.name.as_str(), *t, *n))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The compiled CPU code (kept alive as long as the session); None on the GPU.
    pub fn code(&self) -> Option<&CpuCode> {
        match &self.engine {
            Engine::Cpu { code, .. } => Some(code),
            Engine::Gpu(_) => None,
        }
    }

    pub fn info(&self) -> ModelInfo {
        ModelInfo::from_manifest(&self.manifest)
    }

    /// How many persistent buffers the host holds in storage of their own, rather than
    /// still reading them from the artifact: a run copies a buffer when it writes it,
    /// not when it only reads it (an executable's `infer` copies none).
    pub fn weights_copied(&self) -> usize {
        self.persistent.get().map_or(0, HostBuffers::copied)
    }

    /// The current value of every persistent buffer, by weight key, in buffer order. On
    /// a GPU whose copy is newer than the host's, this reads the weights back first.
    ///
    /// # Panics
    /// If that read-back fails (the GPU was lost or does not answer). Call
    /// [`Session::sync_weights`] first to have that failure as an error.
    pub fn weights(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        let host = self
            .host_weights()
            .unwrap_or_else(|e| panic!("cannot read the weights back from the GPU: {e}"));
        self.manifest
            .buffers
            .iter()
            .enumerate()
            .filter_map(move |(id, info)| match &info.location {
                Location::Persistent { key } => Some((key.as_str(), host.get(id)?)),
                _ => None,
            })
    }

    /// Brings the host copy of the persistent buffers up to date: on a GPU whose copy is
    /// newer, reads the weights back (one copy); otherwise does nothing.
    pub fn sync_weights(&self) -> Result<(), GpuError> {
        self.host_weights().map(|_| ())
    }

    /// The host copy of the persistent buffers, read back from the GPU if stale.
    fn host_weights(&self) -> Result<&HostBuffers, GpuError> {
        if let Some(host) = self.persistent.get() {
            return Ok(host);
        }
        let Engine::Gpu(gpu) = &self.engine else {
            return Err(GpuError::Device(
                "the host copy of the weights is missing".into(),
            ));
        };
        let values = gpu.read_persistent(&self.manifest)?;
        Ok(self
            .persistent
            .get_or_init(|| HostBuffers::from_values(values)))
    }

    /// Replaces every persistent buffer with the tensor of the same key in a safetensors
    /// file. The file must hold every key of the model, with the same dtype and shape,
    /// and no other, except optimizer state, which is zero when left out; on error
    /// nothing is replaced.
    pub fn load_weights(&mut self, safetensors_bytes: &[u8]) -> Result<(), WeightsError> {
        let views = match_weights(&self.manifest, safetensors_bytes)?;
        // Every persistent buffer gets a new value, so a stale host copy needs no read-back.
        if self.persistent.get().is_none() {
            let _ = self
                .persistent
                .set(HostBuffers::empty(self.manifest.buffers.len()));
        }
        if let Some(host) = self.persistent.get_mut() {
            for (id, dtype, shape) in left_out(&self.manifest, &views) {
                if let Ok(zeros) = HostTensor::zeros(dtype, shape) {
                    host.set(id, zeros);
                }
            }
            for (id, view) in views {
                host.set(id, to_host_tensor(&view));
            }
        }
        match &mut self.engine {
            Engine::Gpu(gpu) => gpu.weights_changed(),
            Engine::Cpu { prepared, .. } => prepared.row_major.clear(),
        }
        Ok(())
    }

    /// The current weights as a safetensors file (loadable by [`Session::load_weights`]).
    pub fn save_weights(&self) -> Result<Vec<u8>, SessionError> {
        self.sync_weights()?;
        Ok(encode_weights(self.weights())?)
    }

    /// Readies entry `entry` for runs at batch size `batch` without running it: proves
    /// its kernels' accesses in bounds at that size and compiles the CPU code it lacks,
    /// as its first run at that size would. A training loop calls this before its clock
    /// starts, so that an epoch's time is the time its steps take.
    pub fn prepare(&mut self, entry: &str, batch: u64) -> Result<(), RunError> {
        let entry_index = self.entry_index(entry)?;
        self.ready(entry_index, batch)
    }

    /// The index of entry `entry` in the manifest.
    fn entry_index(&self, entry: &str) -> Result<usize, RunError> {
        let entries = &self.manifest.entries;
        entries
            .iter()
            .position(|e| e.name == entry)
            .ok_or_else(|| RunError::UnknownEntry {
                name: entry.to_string(),
                available: entries.iter().map(|e| e.name.clone()).collect(),
            })
    }

    /// Proves the kernels' accesses in bounds at `batch` (once per size) and compiles the
    /// CPU code entry `entry_index` lacks.
    fn ready(&mut self, entry_index: usize, batch: u64) -> Result<(), RunError> {
        if !self.bounds_checked.contains(&batch) {
            validate_bounds(&self.manifest, batch)
                .map_err(|e| RunError::OutOfBounds(Box::new(e)))?;
            self.bounds_checked.insert(batch);
        }
        if let Engine::Cpu {
            functions, code, ..
        } = &mut self.engine
        {
            let entry = &self.manifest.entries[entry_index];
            compile_missing(&self.manifest, entry, functions, code)?;
        }
        Ok(())
    }

    /// Runs entry `entry` on `inputs` (each input of the entry exactly once, by name) and
    /// returns its outputs in the entry's order.
    pub fn run(
        &mut self,
        entry: &str,
        inputs: &[(&str, HostTensor)],
    ) -> Result<Vec<(String, HostTensor)>, RunError> {
        let entry_index = self.entry_index(entry)?;
        let bound = bind_inputs(&self.manifest, &self.manifest.entries[entry_index], inputs)?;
        let batch = bound.batch;
        self.ready(entry_index, batch)?;
        let entry = &self.manifest.entries[entry_index];
        let (functions, arena_storage, plans, row_major, changes_weights, profile) = match &mut self
            .engine
        {
            Engine::Cpu {
                functions,
                arena,
                prepared,
                profile,
                ..
            } => {
                let Prepared {
                    plans,
                    changes_weights,
                    row_major,
                    launch_copies,
                    alone_timers,
                } = &mut **prepared;
                let changes = changes_weights.get(entry_index).copied().unwrap_or(true);
                (
                    &*functions,
                    arena,
                    plans,
                    (row_major, launch_copies, alone_timers),
                    changes,
                    profile.as_mut(),
                )
            }
            Engine::Gpu(gpu) => {
                let results = gpu
                    .run(
                        &self.manifest,
                        entry_index,
                        &bound.tensors,
                        batch,
                        self.persistent.get(),
                    )
                    .map_err(RunError::Gpu)?;
                if writes_persistent(&self.manifest, entry) {
                    self.persistent.take();
                }
                let mut outputs = Vec::with_capacity(entry.outputs.len());
                for (port, result) in entry.outputs.iter().zip(results) {
                    let tensor = match result {
                        Some(t) => t,
                        None => self
                            .host_weights()
                            .map_err(RunError::Gpu)?
                            .get(port.buffer)
                            .cloned()
                            .ok_or_else(|| internal(format!("no storage for `{}`", port.name)))?,
                    };
                    outputs.push((port.name.clone(), tensor));
                }
                return Ok(outputs);
            }
        };

        let too_large = |what: &str| RunError::TooLarge {
            batch,
            what: what.to_string(),
        };
        let blocks = Blocks::new(&self.manifest, batch).ok_or_else(|| too_large("the arena"))?;
        let arena = arena_storage
            .reserve(blocks.bytes)
            .map_err(|_| too_large("the arena"))?;

        for (port, tensor) in entry.inputs.iter().zip(&bound.tensors) {
            let region = blocks
                .region(&self.manifest, port.buffer, batch)
                .and_then(|(offset, len)| arena.get_mut(offset..offset.checked_add(len)?))
                .ok_or_else(|| {
                    internal(format!("input `{}` is outside the I/O block", port.name))
                })?;
            let bytes = tensor.data.as_bytes();
            if region.len() != bytes.len() {
                return Err(internal(format!(
                    "input `{}` has the wrong size",
                    port.name
                )));
            }
            region.copy_from_slice(bytes);
        }

        // Until the launches are done (or one fails): see `cpu::denormals`.
        let _flush = cpu::denormals::FlushDenormals::enable();
        let (row_major, launch_copies, alone_timers) = row_major;
        if changes_weights {
            row_major.clear();
        }
        CpuLaunches {
            manifest: &self.manifest,
            functions,
            blocks: &blocks,
            base: arena.as_mut_ptr(),
            arena_len: arena.len(),
            batch,
            host: self.persistent.get_mut(),
            plans,
            changes_weights,
            row_major,
            launch_copies,
            profile,
            alone_timers,
        }
        .run(entry)?;

        let arena = arena_storage.bytes();
        let mut outputs = Vec::with_capacity(entry.outputs.len());
        for port in &entry.outputs {
            let info = self
                .manifest
                .buffers
                .get(port.buffer)
                .ok_or_else(|| internal(format!("no buffer #{}", port.buffer)))?;
            let shape: Vec<u64> = info.shape.iter().map(|d| d.resolve(batch)).collect();
            let tensor = match &info.location {
                Location::Arena { .. } | Location::Io { .. } => {
                    let bytes = blocks
                        .region(&self.manifest, port.buffer, batch)
                        .and_then(|(offset, len)| arena.get(offset..offset.checked_add(len)?))
                        .ok_or_else(|| {
                            internal(format!("output `{}` is outside its block", port.name))
                        })?;
                    HostTensor {
                        shape,
                        data: TensorData::from_ne_bytes(info.dtype, bytes),
                    }
                }
                Location::Persistent { .. } => self
                    .persistent
                    .get()
                    .and_then(|host| host.get(port.buffer))
                    .cloned()
                    .ok_or_else(|| internal(format!("no storage for `{}`", info.name)))?,
                Location::Window(_) => {
                    return Err(internal(format!("output `{}` is a window", port.name)));
                }
            };
            outputs.push((port.name.clone(), tensor));
        }
        Ok(outputs)
    }
}

fn internal(message: String) -> RunError {
    RunError::Internal(message)
}

/// An entry's inputs, matched to its ports.
struct BoundInputs<'a> {
    batch: u64,
    /// One tensor per input port, in the entry's order.
    tensors: Vec<&'a HostTensor>,
}

/// Checks that `inputs` give every input of `entry` exactly once, with its dtype and
/// shape, and one batch size across all inputs (1 if no input has a batch dimension).
fn bind_inputs<'a>(
    manifest: &Manifest,
    entry: &Entry,
    inputs: &'a [(&str, HostTensor)],
) -> Result<BoundInputs<'a>, RunError> {
    let mut given: Vec<Option<&HostTensor>> = vec![None; entry.inputs.len()];
    for (name, tensor) in inputs {
        let Some(index) = entry.inputs.iter().position(|p| p.name == *name) else {
            return Err(RunError::UnknownInput {
                entry: entry.name.clone(),
                name: name.to_string(),
                expected: entry.inputs.iter().map(|p| p.name.clone()).collect(),
            });
        };
        if given[index].replace(tensor).is_some() {
            return Err(RunError::DuplicateInput {
                name: name.to_string(),
            });
        }
    }
    let missing: Vec<String> = entry
        .inputs
        .iter()
        .zip(&given)
        .filter(|(_, t)| t.is_none())
        .map(|(p, _)| p.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(RunError::MissingInputs { names: missing });
    }

    let mut batch: Option<(&str, u64)> = None;
    let mut tensors = Vec::with_capacity(given.len());
    for (port, tensor) in entry.inputs.iter().zip(given) {
        let Some(tensor) = tensor else { continue };
        let info = manifest
            .buffers
            .get(port.buffer)
            .ok_or_else(|| internal(format!("no buffer #{}", port.buffer)))?;
        let type_error = || RunError::InputType {
            name: port.name.clone(),
            expected: type_string(info.dtype, &info.shape),
            found: tensor.type_string(),
        };
        if tensor.dtype() != info.dtype || tensor.shape.len() != info.shape.len() {
            return Err(type_error());
        }
        for (dim, &extent) in info.shape.iter().zip(&tensor.shape) {
            match dim {
                Dim::Fixed(n) if *n != extent => return Err(type_error()),
                Dim::Fixed(_) => {}
                Dim::Batch => match batch {
                    None => batch = Some((&port.name, extent)),
                    Some((first, expected)) if expected != extent => {
                        return Err(RunError::BatchMismatch {
                            name: port.name.clone(),
                            first: first.to_string(),
                            expected,
                            found: extent,
                        });
                    }
                    Some(_) => {}
                },
            }
        }
        tensor.check_len().map_err(|source| RunError::InputData {
            name: port.name.clone(),
            source,
        })?;
        tensors.push(tensor);
    }
    let batch = batch.map_or(1, |(_, b)| b);
    if batch == 0 {
        return Err(RunError::EmptyBatch);
    }
    Ok(BoundInputs { batch, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_artifact::manifest::{BufferInfo, EntryPort, Extent};
    use strata_kernels::ir::ScalarType;

    fn manifest() -> Manifest {
        let io = |fixed, per_batch| Location::Io {
            offset: Extent { fixed, per_batch },
        };
        Manifest {
            model: "M".into(),
            compiler: "test".into(),
            buffers: vec![
                BufferInfo {
                    name: "x".into(),
                    dtype: ScalarType::F32,
                    shape: vec![Dim::Batch, Dim::Fixed(64)],
                    location: io(0, 0),
                },
                BufferInfo {
                    name: "labels".into(),
                    dtype: ScalarType::I32,
                    shape: vec![Dim::Batch],
                    location: io(0, 256),
                },
            ],
            kernels: vec![],
            entries: vec![Entry {
                name: "infer".into(),
                inputs: vec![
                    EntryPort {
                        name: "x".into(),
                        buffer: 0,
                    },
                    EntryPort {
                        name: "labels".into(),
                        buffer: 1,
                    },
                ],
                outputs: vec![],
                launches: vec![],
                loops: vec![],
            }],
            arena: Extent::default(),
            io: Extent {
                fixed: 0,
                per_batch: 260,
            },
            train: None,
        }
    }

    fn x(rows: u64, cols: u64) -> HostTensor {
        HostTensor::zeros(ScalarType::F32, vec![rows, cols]).unwrap()
    }

    fn labels(rows: u64) -> HostTensor {
        HostTensor::zeros(ScalarType::I32, vec![rows]).unwrap()
    }

    fn bind(inputs: &[(&str, HostTensor)]) -> Result<u64, String> {
        let m = manifest();
        bind_inputs(&m, &m.entries[0], inputs)
            .map(|b| b.batch)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn takes_the_batch_size_from_the_inputs() {
        assert_eq!(bind(&[("labels", labels(5)), ("x", x(5, 64))]), Ok(5));
    }

    #[test]
    fn names_the_input_and_both_types_on_a_shape_mismatch() {
        let err = bind(&[("x", x(5, 63)), ("labels", labels(5))]).unwrap_err();
        assert_eq!(err, "input `x`: expected f32[batch, 64], got f32[5, 63]");
    }

    #[test]
    fn refuses_a_wrong_dtype() {
        let wrong = HostTensor::zeros(ScalarType::F32, vec![5]).unwrap();
        let err = bind(&[("x", x(5, 64)), ("labels", wrong)]).unwrap_err();
        assert_eq!(err, "input `labels`: expected i32[batch], got f32[5]");
    }

    #[test]
    fn refuses_different_batch_sizes() {
        let err = bind(&[("x", x(5, 64)), ("labels", labels(4))]).unwrap_err();
        assert!(err.contains("batch size 4"), "{err}");
    }

    #[test]
    fn refuses_missing_unknown_and_repeated_inputs() {
        let err = bind(&[("x", x(5, 64))]).unwrap_err();
        assert_eq!(err, "missing inputs `labels`");
        let err = bind(&[("x", x(5, 64)), ("y", labels(5))]).unwrap_err();
        assert!(err.starts_with("entry `infer` has no input `y`"), "{err}");
        let err = bind(&[("x", x(5, 64)), ("x", x(5, 64))]).unwrap_err();
        assert_eq!(err, "input `x` is given twice");
    }

    #[test]
    fn refuses_an_empty_batch() {
        let err = bind(&[("x", x(0, 64)), ("labels", labels(0))]).unwrap_err();
        assert_eq!(err, "batch size must be at least 1");
    }

    #[test]
    fn refuses_data_that_does_not_fill_the_shape() {
        let mut bad = x(2, 64);
        bad.data = TensorData::F32(vec![0.0; 5]);
        let err = bind(&[("x", bad), ("labels", labels(2))]).unwrap_err();
        assert!(err.starts_with("input `x`: shape [2, 64]"), "{err}");
    }
}
