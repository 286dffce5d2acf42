//! A model on the GPU: its pipelines, its device memory, and the runs of its entries.
//!
//! # Device memory
//! All of a model's buffers live in one wgpu storage buffer (`mem`, see the binding
//! scheme in `strata_kernels::gpu`): the persistent buffers first, each at a 16-byte
//! aligned offset, then the arena at a 256-byte aligned base, laid out by the memory plan,
//! then the I/O block (the entry's inputs and outputs) at the next 256-byte boundary.
//! `mem` is sized for the largest batch run so far and re-created when a larger batch
//! needs more; the new `mem` gets the persistent buffers by a copy on the GPU from the old
//! one (or by an upload when the host holds newer values).
//!
//! # Persistent buffers: which copy is current
//! An entry whose kernels write a persistent buffer (a `train_step` updating parameters
//! and optimizer state, batch norm's running statistics) writes the device's copy only;
//! while a GPU session trains, the device holds the truth and nothing is read back per
//! run. The session keeps track of the host side (see [`crate::session`]): after such a
//! run ([`writes_persistent`]) its host copy is stale, and the first host read asks
//! [`GpuEngine::read_persistent`] for the whole persistent region, one copy. The other
//! direction is [`GpuEngine::weights_changed`]: new host values (loaded weights) are
//! uploaded before the next run.
//!
//! # A run
//! The inputs are written into their I/O regions, each launch's `Params` (the batch and
//! its slots' element offsets) into its own 256-byte window of a uniform buffer, and then
//! every launch of the entry is recorded into ONE command buffer, in order, followed by
//! copies of the I/O outputs into a staging buffer, which is the only thing read back.
//! Pipelines and bind groups are made once (bind groups again only when `mem` grows).
//! Waiting for the GPU is bounded by [`GpuOptions::timeout`](super::GpuOptions).

use std::collections::HashMap;
use std::num::NonZeroU64;

use strata_kernels::gpu as emit;
use strata_kernels::ir::{Access, Kernel};

use super::GpuError;
use super::device::{AdapterSummary, GpuDevice, GpuOptions};
use crate::host_buffers::HostBuffers;
use strata_artifact::manifest::{Entry, Location, Manifest};
use strata_artifact::tensor::{HostTensor, TensorData};

/// Alignment of the arena's base in `mem`.
const ARENA_ALIGN: u64 = 256;
/// Alignment of each persistent buffer in `mem`.
const PERSISTENT_ALIGN: u64 = 16;

/// Where each buffer lives in `mem`.
#[derive(Clone, Debug, PartialEq)]
struct MemoryLayout {
    /// Byte offset of each persistent buffer, by buffer id (None for arena buffers).
    persistent: Vec<Option<u64>>,
    /// Byte offset of the arena.
    arena_base: u64,
}

impl MemoryLayout {
    fn new(manifest: &Manifest) -> Option<MemoryLayout> {
        let mut next = 0u64;
        let mut persistent = Vec::with_capacity(manifest.buffers.len());
        for info in &manifest.buffers {
            match info.location {
                Location::Persistent { .. } => {
                    let size = info.byte_size()?.fixed;
                    persistent.push(Some(next));
                    next = next.checked_add(size)?.next_multiple_of(PERSISTENT_ALIGN);
                }
                Location::Arena { .. } | Location::Io { .. } | Location::Window(_) => {
                    persistent.push(None)
                }
            }
        }
        Some(MemoryLayout {
            persistent,
            arena_base: next.next_multiple_of(ARENA_ALIGN),
        })
    }

    /// Byte offset and length of buffer `id` at `batch`, in the iteration of its loop
    /// with sequence index `t` (a window moves with it; see `Window`).
    fn region(&self, manifest: &Manifest, id: usize, batch: u64, t: u64) -> Option<(u64, u64)> {
        let info = manifest.buffers.get(id)?;
        let len = info.elements(batch)?.checked_mul(info.dtype.size_bytes())?;
        let offset = match &info.location {
            Location::Persistent { .. } => (*self.persistent.get(id)?)?,
            Location::Arena { offset } => self.arena_base.checked_add(offset.resolve(batch)?)?,
            Location::Io { offset } => self
                .io_base(manifest, batch)?
                .checked_add(offset.resolve(batch)?)?,
            Location::Window(w) => {
                let (parent, parent_len) = match manifest.buffers.get(w.parent)?.location {
                    Location::Window(_) => return None,
                    _ => self.region(manifest, w.parent, batch, 0)?,
                };
                let skip = w.offset(t, len)?;
                if skip.checked_add(len)? > parent_len {
                    return None;
                }
                parent.checked_add(skip)?
            }
        };
        Some((offset, len))
    }

    /// Byte offset of the I/O block at `batch`: after the arena.
    fn io_base(&self, manifest: &Manifest, batch: u64) -> Option<u64> {
        self.arena_base
            .checked_add(manifest.arena.resolve(batch)?)?
            .checked_next_multiple_of(ARENA_ALIGN)
    }

    /// Bytes of `mem` at `batch` (a multiple of 4, at least 4).
    fn bytes(&self, manifest: &Manifest, batch: u64) -> Option<u64> {
        let io = manifest.io.resolve(batch)?;
        Some(
            self.io_base(manifest, batch)?
                .checked_add(io)?
                .next_multiple_of(4)
                .max(4),
        )
    }
}

/// `mem` and what is bound to it.
struct Memory {
    buffer: wgpu::Buffer,
    bytes: u64,
    /// Bind groups of each entry's launches, made on first use.
    bind_groups: HashMap<usize, Vec<wgpu::BindGroup>>,
}

/// The uniform buffer of one entry: one `Params` window per launch.
struct Uniforms {
    buffer: wgpu::Buffer,
    stride: u64,
}

/// A model ready to run on a GPU.
pub struct GpuEngine {
    gpu: GpuDevice,
    layout: MemoryLayout,
    bind_group_layout: wgpu::BindGroupLayout,
    /// One pipeline per kernel, by kernel position.
    pipelines: Vec<wgpu::ComputePipeline>,
    uniforms: HashMap<usize, Uniforms>,
    memory: Option<Memory>,
    /// Whether `mem` lacks the current persistent values (the host has newer ones).
    weights_stale: bool,
}

impl GpuEngine {
    /// Opens a device and creates a pipeline for every kernel from its WGSL module.
    pub fn new(manifest: &Manifest, wgsl: &str, options: &GpuOptions) -> Result<Self, GpuError> {
        if wgsl.trim().is_empty() {
            return Err(GpuError::NoGpuCode);
        }
        let layout = MemoryLayout::new(manifest)
            .ok_or_else(|| too_large("the model's parameters", u64::MAX, 0))?;
        let gpu = GpuDevice::open(options)?;
        let modules: HashMap<&str, &str> = emit::split_modules(wgsl).into_iter().collect();
        let device = &gpu.device;
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("strata kernel bindings"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("strata kernels"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let mut pipelines = Vec::with_capacity(manifest.kernels.len());
        for kernel in &manifest.kernels {
            let source =
                modules
                    .get(kernel.name.as_str())
                    .ok_or_else(|| GpuError::MissingModule {
                        kernel: kernel.name.clone(),
                    })?;
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&kernel.name),
                source: wgpu::ShaderSource::Wgsl((*source).into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&kernel.name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(GpuError::Pipeline {
                    kernel: kernel.name.clone(),
                    message: e.to_string(),
                });
            }
            pipelines.push(pipeline);
        }
        if let Some(e) = gpu.take_error() {
            return Err(GpuError::Device(e));
        }
        Ok(GpuEngine {
            gpu,
            layout,
            bind_group_layout,
            pipelines,
            uniforms: HashMap::new(),
            memory: None,
            weights_stale: true,
        })
    }

    /// The adapter this engine runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.gpu.adapter
    }

    /// Marks the device's copy of the persistent buffers out of date: the next run uploads
    /// them again.
    pub fn weights_changed(&mut self) {
        self.weights_stale = true;
    }

    /// Makes `mem` large enough for `batch` and current in its persistent buffers.
    /// `persistent` is the host copy, None when the device's copy is the newer one (then
    /// the device's copy must be current: only the host has the values to upload).
    fn prepare_memory(
        &mut self,
        manifest: &Manifest,
        persistent: Option<&HostBuffers>,
        batch: u64,
    ) -> Result<(), GpuError> {
        let bytes = self
            .layout
            .bytes(manifest, batch)
            .ok_or_else(|| too_large("the arena", u64::MAX, 0))?;
        let limits = &self.gpu.limits;
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(4 * i32::MAX as u64);
        if bytes > limit {
            return Err(too_large("the model's device memory", bytes, limit));
        }
        if self.memory.as_ref().is_none_or(|m| m.bytes < bytes) {
            let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("strata memory"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            match &self.memory {
                // The device's persistent values move along, on the device: they may be
                // newer than the host's. Queue order puts this copy before the run's
                // writes and launches.
                Some(old) if !self.weights_stale && self.layout.arena_base > 0 => {
                    let mut encoder =
                        self.gpu
                            .device
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                label: Some("strata grow memory"),
                            });
                    let persistent_bytes = self.layout.arena_base;
                    encoder.copy_buffer_to_buffer(&old.buffer, 0, &buffer, 0, persistent_bytes);
                    self.gpu.queue.submit([encoder.finish()]);
                }
                Some(_) => {}
                None => self.weights_stale = true,
            }
            self.memory = Some(Memory {
                buffer,
                bytes,
                bind_groups: HashMap::new(),
            });
        }
        if self.weights_stale {
            let Some(memory) = &self.memory else {
                return Err(GpuError::Device("device memory vanished".into()));
            };
            let Some(persistent) = persistent else {
                return Err(GpuError::Device(
                    "neither the host nor the device holds the current weights".into(),
                ));
            };
            for (id, tensor) in persistent.values().enumerate() {
                let (Some(tensor), Some(Some(offset))) = (tensor, self.layout.persistent.get(id))
                else {
                    continue;
                };
                let data = tensor.data.as_bytes();
                if !data.is_empty() {
                    self.gpu.queue.write_buffer(&memory.buffer, *offset, data);
                }
            }
            self.weights_stale = false;
        }
        Ok(())
    }

    /// Runs `entry` (number `entry_index` of the manifest) on `inputs` (one per input port,
    /// in order) and returns the outputs that live in the arena, by output port (None for
    /// persistent outputs, which the caller holds). `persistent` is the host copy of the
    /// persistent buffers, None when the device's copy is newer (see the module docs).
    pub(crate) fn run(
        &mut self,
        manifest: &Manifest,
        entry_index: usize,
        inputs: &[&HostTensor],
        batch: u64,
        persistent: Option<&HostBuffers>,
    ) -> Result<Vec<Option<HostTensor>>, GpuError> {
        let entry = manifest
            .entries
            .get(entry_index)
            .ok_or_else(|| GpuError::Device(format!("no entry #{entry_index}")))?;
        self.prepare_memory(manifest, persistent, batch)?;
        let params = self.launch_params(manifest, entry, batch)?;
        self.prepare_uniforms(entry_index, entry, &params);
        self.prepare_bind_groups(entry_index, entry)?;
        let (Some(memory), Some(uniforms)) = (&self.memory, self.uniforms.get(&entry_index)) else {
            return Err(GpuError::Device("device memory vanished".into()));
        };
        let queue = &self.gpu.queue;

        for (port, tensor) in entry.inputs.iter().zip(inputs) {
            let (offset, len) = self
                .layout
                .region(manifest, port.buffer, batch, 0)
                .ok_or_else(|| too_large(&port.name, u64::MAX, 0))?;
            let data = tensor.data.as_bytes();
            if data.len() as u64 != len {
                return Err(GpuError::Device(format!(
                    "input `{}` has the wrong size",
                    port.name
                )));
            }
            if !data.is_empty() {
                queue.write_buffer(&memory.buffer, offset, data);
            }
        }
        for (i, words) in params.iter().enumerate() {
            queue.write_buffer(
                &uniforms.buffer,
                i as u64 * uniforms.stride,
                bytemuck::cast_slice(&words.words),
            );
        }

        let device = &self.gpu.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("strata run"),
        });
        let bind_groups = memory
            .bind_groups
            .get(&entry_index)
            .ok_or_else(|| GpuError::Device("bind groups missing".into()))?;
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&entry.name),
                timestamp_writes: None,
            });
            for (((index, _), p), group) in entry.schedule().zip(&params).zip(bind_groups) {
                let launch = &entry.launches[index];
                let Some((x, y)) = p.grid else { continue };
                let pipeline = self.pipelines.get(launch.kernel).ok_or_else(|| {
                    GpuError::Device(format!("no pipeline for kernel #{}", launch.kernel))
                })?;
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
        }

        // I/O outputs are copied into one staging buffer, each at a 4-aligned offset.
        let mut copies = Vec::with_capacity(entry.outputs.len());
        let mut staging_bytes = 0u64;
        for port in &entry.outputs {
            match manifest.buffers.get(port.buffer).map(|b| &b.location) {
                Some(Location::Arena { .. } | Location::Io { .. }) => {
                    let (offset, len) = self
                        .layout
                        .region(manifest, port.buffer, batch, 0)
                        .ok_or_else(|| too_large(&port.name, u64::MAX, 0))?;
                    copies.push(Some((offset, staging_bytes, len)));
                    staging_bytes += len.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
                }
                _ => copies.push(None),
            }
        }
        let staging = (staging_bytes > 0).then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("strata outputs"),
                size: staging_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        if let Some(staging) = &staging {
            for &(src, dst, len) in copies.iter().flatten() {
                if len > 0 {
                    encoder.copy_buffer_to_buffer(&memory.buffer, src, staging, dst, len);
                }
            }
        }
        let submission = queue.submit([encoder.finish()]);
        self.gpu.wait(submission)?;

        let bytes = match &staging {
            Some(staging) => self.map_and_read(staging)?,
            None => Vec::new(),
        };

        let mut outputs = Vec::with_capacity(entry.outputs.len());
        for (port, copy) in entry.outputs.iter().zip(&copies) {
            let Some((_, at, len)) = *copy else {
                outputs.push(None);
                continue;
            };
            let info = manifest
                .buffers
                .get(port.buffer)
                .ok_or_else(|| GpuError::Device(format!("no buffer #{}", port.buffer)))?;
            let data = bytes
                .get(at as usize..(at + len) as usize)
                .ok_or_else(|| GpuError::Device("short read of the outputs".into()))?;
            outputs.push(Some(HostTensor {
                shape: info.shape.iter().map(|d| d.resolve(batch)).collect(),
                data: TensorData::from_ne_bytes(info.dtype, data),
            }));
        }
        Ok(outputs)
    }

    /// The device's copy of every persistent buffer, by buffer id (None for arena
    /// buffers): the whole persistent region in one copy.
    pub fn read_persistent(
        &self,
        manifest: &Manifest,
    ) -> Result<Vec<Option<HostTensor>>, GpuError> {
        let mut values = vec![None; manifest.buffers.len()];
        let persistent_bytes = self.layout.arena_base;
        let Some(memory) = self.memory.as_ref().filter(|_| persistent_bytes > 0) else {
            return Err(GpuError::Device(
                "the device holds no weights to read back".into(),
            ));
        };
        let device = &self.gpu.device;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("strata weights"),
            size: persistent_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("strata read weights"),
        });
        encoder.copy_buffer_to_buffer(&memory.buffer, 0, &staging, 0, persistent_bytes);
        let submission = self.gpu.queue.submit([encoder.finish()]);
        self.gpu.wait(submission)?;
        let bytes = self.map_and_read(&staging)?;
        for (id, info) in manifest.buffers.iter().enumerate() {
            let Some(Some(offset)) = self.layout.persistent.get(id) else {
                continue;
            };
            let (_, len) = self
                .layout
                .region(manifest, id, 1, 0)
                .ok_or_else(|| too_large(&info.name, u64::MAX, 0))?;
            let data = bytes
                .get(*offset as usize..(offset + len) as usize)
                .ok_or_else(|| GpuError::Device("short read of the weights".into()))?;
            values[id] = Some(HostTensor {
                shape: info.shape.iter().map(|d| d.resolve(1)).collect(),
                data: TensorData::from_ne_bytes(info.dtype, data),
            });
        }
        Ok(values)
    }

    /// Maps `staging` (whose copies the GPU has finished) and returns its bytes.
    fn map_and_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        let polled = self.gpu.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.gpu.timeout),
        });
        if let Some(e) = self.gpu.take_error() {
            return Err(GpuError::Device(e));
        }
        match polled {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                return Err(GpuError::Timeout {
                    seconds: self.gpu.timeout.as_secs(),
                });
            }
            Err(e) => return Err(GpuError::Device(e.to_string())),
        }
        match receiver.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Device(format!("reading back: {e}"))),
            Err(_) => {
                return Err(GpuError::Device(
                    "the data was not ready after the GPU finished".into(),
                ));
            }
        }
        let view = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Device(format!("reading back: {e}")))?;
        let bytes = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(bytes)
    }

    /// Each launch's `Params` and workgroup grid at `batch`.
    fn launch_params(
        &self,
        manifest: &Manifest,
        entry: &Entry,
        batch: u64,
    ) -> Result<Vec<LaunchParams>, GpuError> {
        let batch32 = u32::try_from(batch).map_err(|_| too_large("the batch", batch, 0))?;
        let max_dim = self.gpu.limits.max_compute_workgroups_per_dimension;
        let mut all = Vec::with_capacity(entry.launches.len());
        for (index, t) in entry.schedule() {
            let launch = &entry.launches[index];
            let kernel = manifest
                .kernels
                .get(launch.kernel)
                .ok_or_else(|| GpuError::Device(format!("no kernel #{}", launch.kernel)))?;
            let mut offsets = Vec::with_capacity(launch.bindings.len());
            for &id in &launch.bindings {
                let (offset, _) = self
                    .layout
                    .region(manifest, id, batch, t)
                    .ok_or_else(|| too_large(&kernel.name, u64::MAX, 0))?;
                offsets.push(
                    u32::try_from(offset / 4).map_err(|_| too_large(&kernel.name, offset, 0))?,
                );
            }
            let fits_u32 = emit::points(kernel, batch).is_some_and(|n| n <= u64::from(u32::MAX));
            let groups = emit::workgroups(kernel, batch).filter(|_| fits_u32);
            let groups = groups.ok_or_else(|| too_large(&kernel.name, u64::MAX, 0))?;
            all.push(LaunchParams {
                words: emit::params(kernel, batch32, &offsets),
                grid: fold_grid(groups, max_dim, kernel)?,
            });
        }
        Ok(all)
    }

    fn prepare_uniforms(&mut self, entry_index: usize, entry: &Entry, params: &[LaunchParams]) {
        if self.uniforms.contains_key(&entry_index) {
            return;
        }
        let align = u64::from(self.gpu.limits.min_uniform_buffer_offset_alignment).max(16);
        let largest = params.iter().map(|p| p.words.len() as u64 * 4).max();
        let stride = largest.unwrap_or(16).next_multiple_of(align);
        let buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&entry.name),
            size: stride * (params.len().max(1) as u64),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.uniforms
            .insert(entry_index, Uniforms { buffer, stride });
    }

    fn prepare_bind_groups(&mut self, entry_index: usize, entry: &Entry) -> Result<(), GpuError> {
        let (Some(memory), Some(uniforms)) =
            (self.memory.as_mut(), self.uniforms.get(&entry_index))
        else {
            return Err(GpuError::Device("device memory vanished".into()));
        };
        if memory.bind_groups.contains_key(&entry_index) {
            return Ok(());
        }
        let groups = (0..entry.schedule().count())
            .map(|i| {
                self.gpu
                    .device
                    .create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&entry.name),
                        layout: &self.bind_group_layout,
                        entries: &[
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &uniforms.buffer,
                                    offset: i as u64 * uniforms.stride,
                                    size: NonZeroU64::new(uniforms.stride),
                                }),
                            },
                            wgpu::BindGroupEntry {
                                binding: 1,
                                resource: memory.buffer.as_entire_binding(),
                            },
                        ],
                    })
            })
            .collect();
        memory.bind_groups.insert(entry_index, groups);
        Ok(())
    }
}

/// Whether a launch of `entry` writes a persistent buffer: a slot bound to one that its
/// kernel declares written.
pub fn writes_persistent(manifest: &Manifest, entry: &Entry) -> bool {
    entry.launches.iter().any(|launch| {
        let Some(kernel) = manifest.kernels.get(launch.kernel) else {
            return false;
        };
        launch
            .bindings
            .iter()
            .zip(&kernel.buffers)
            .any(|(&id, decl)| {
                decl.access != Access::Read
                    && manifest
                        .buffers
                        .get(id)
                        .is_some_and(|b| matches!(b.location, Location::Persistent { .. }))
            })
    })
}

/// One launch's uniform words and its workgroup grid (None: nothing to run).
struct LaunchParams {
    words: Vec<u32>,
    grid: Option<(u32, u32)>,
}

/// Folds `groups` linear workgroups into an `(x, y)` grid with both sides at most
/// `max_dim` (the shaders recover `y * x_count + x` and skip the surplus).
fn fold_grid(groups: u64, max_dim: u32, kernel: &Kernel) -> Result<Option<(u32, u32)>, GpuError> {
    if groups == 0 {
        return Ok(None);
    }
    let max = u64::from(max_dim.max(1));
    let x = groups.min(max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(too_large(&kernel.name, groups, max * max));
    }
    // Both fit in u32: each is at most `max_dim`.
    Ok(Some((x as u32, y as u32)))
}

/// `what` does not fit: `bytes` (or workgroups) against the adapter's `limit`; a zero
/// limit means it overflows the GPU's 32-bit addressing at this batch size.
fn too_large(what: &str, amount: u64, limit: u64) -> GpuError {
    GpuError::TooLarge(if limit == 0 {
        format!("{what} does not fit the GPU's 32-bit addressing at this batch size")
    } else {
        format!("{what} needs {amount}, more than the adapter's limit of {limit}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Kernel {
        Kernel {
            name: "k".into(),
            buffers: vec![],
            body: strata_kernels::ir::KernelBody::Map {
                space: vec![],
                stores: vec![],
            },
        }
    }

    #[test]
    fn folds_large_grids_into_two_dimensions() {
        let k = kernel();
        assert_eq!(fold_grid(0, 65535, &k).unwrap(), None);
        assert_eq!(fold_grid(10, 65535, &k).unwrap(), Some((10, 1)));
        assert_eq!(fold_grid(65536, 65535, &k).unwrap(), Some((65535, 2)));
        assert_eq!(fold_grid(60, 8, &k).unwrap(), Some((8, 8)));
        assert!(fold_grid(65, 8, &k).is_err());
    }
}
