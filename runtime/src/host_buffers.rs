//! The host copy of a session's persistent buffers, each copied out of the artifact's
//! weights when it is first read or written.
//!
//! An executable's `infer` reads the parameters and nothing else: copying the optimizer's
//! state too (two thirds of an Adam-trained model's weights) at every start cost more
//! than the inference itself. So a session keeps the artifact's weights (a view of the
//! executable's own mapped file, or bytes in memory, shared, not copied) and copies a
//! buffer's initial value into owned, writable storage the first time anything asks for
//! it: a run binding it where a kernel writes it, [`crate::Session::weights`], a
//! checkpoint. Once every buffer is copied the artifact's bytes are let go.
//!
//! A launch that only reads a buffer not copied yet reads it where it lies
//! ([`HostBuffers::initial_bytes`]): an executable's `infer` copies no weight at all, so
//! its start neither copies the parameters nor faults in fresh pages for them.

use std::cell::OnceCell;
use std::ops::Range;

use strata_artifact::Bytes;
use strata_artifact::WeightsError;
use strata_artifact::manifest::{BufferId, Manifest};
use strata_artifact::tensor::HostTensor;
use strata_artifact::weights::{left_out, match_weights, tensor_from_le_bytes};
use strata_kernels::ir::ScalarType;

/// A buffer's initial value, checked against the manifest when the session was made.
enum Initial {
    /// These bytes of the artifact's weights.
    Stored {
        range: Range<usize>,
        dtype: ScalarType,
        shape: Vec<u64>,
    },
    /// Zero: optimizer state the weights leave out
    /// ([`strata_artifact::weight_keys::starts_at_zero`]).
    Zeros { dtype: ScalarType, shape: Vec<u64> },
}

/// Persistent buffers by buffer id: a value once read or set, else its initial value in
/// `bytes` (arena buffers have neither).
pub(crate) struct HostBuffers {
    slots: Vec<OnceCell<HostTensor>>,
    initial: Vec<Option<Initial>>,
    /// How many `initial` values no slot has taken over for good.
    pending: usize,
    /// The artifact's weights (a safetensors file), while some buffer still starts there.
    bytes: Option<Bytes>,
}

impl HostBuffers {
    /// Every persistent buffer of `manifest` from `weights` (checked: every key, dtype and
    /// shape; optimizer state the weights leave out is zero), none of them copied yet.
    pub(crate) fn lazy(manifest: &Manifest, weights: &Bytes) -> Result<Self, WeightsError> {
        let count = manifest.buffers.len();
        let mut initial: Vec<Option<Initial>> = (0..count).map(|_| None).collect();
        let base = weights.as_ptr() as usize;
        let views = match_weights(manifest, weights)?;
        for (id, view) in &views {
            let data = view.data();
            // The view is a slice of `weights` (safetensors borrows, never copies).
            let start = data.as_ptr() as usize - base;
            if let (Some(slot), Some(info)) = (initial.get_mut(*id), manifest.buffers.get(*id)) {
                *slot = Some(Initial::Stored {
                    range: start..start + data.len(),
                    dtype: info.dtype,
                    shape: view.shape().iter().map(|&d| d as u64).collect(),
                });
            }
        }
        for (id, dtype, shape) in left_out(manifest, &views) {
            if let Some(slot) = initial.get_mut(id) {
                *slot = Some(Initial::Zeros { dtype, shape });
            }
        }
        let stored = initial
            .iter()
            .flatten()
            .filter(|i| matches!(i, Initial::Stored { .. }))
            .count();
        let pending = initial.iter().flatten().count();
        Ok(HostBuffers {
            slots: (0..count).map(|_| OnceCell::new()).collect(),
            initial,
            pending,
            bytes: (stored > 0).then(|| weights.clone()),
        })
    }

    /// Buffers with these values, by buffer id (a GPU's read-back).
    pub(crate) fn from_values(values: Vec<Option<HostTensor>>) -> Self {
        let initial = values.iter().map(|_| None).collect();
        let slots = values
            .into_iter()
            .map(|v| v.map(OnceCell::from).unwrap_or_default())
            .collect();
        HostBuffers {
            slots,
            initial,
            pending: 0,
            bytes: None,
        }
    }

    /// Buffers with no values: each is set by [`HostBuffers::set`].
    pub(crate) fn empty(count: usize) -> Self {
        HostBuffers::from_values(vec![None; count])
    }

    /// The value of buffer `id`, copied from the artifact's weights if not yet; None for
    /// a buffer that is not persistent.
    pub(crate) fn get(&self, id: BufferId) -> Option<&HostTensor> {
        let slot = self.slots.get(id)?;
        if let Some(value) = slot.get() {
            return Some(value);
        }
        let value = match self.initial.get(id)?.as_ref()? {
            Initial::Stored {
                range,
                dtype,
                shape,
            } => {
                let bytes = self.bytes.as_ref()?.get(range.clone())?;
                tensor_from_le_bytes(*dtype, shape.clone(), bytes)
            }
            Initial::Zeros { dtype, shape } => HostTensor::zeros(*dtype, shape.clone()).ok()?,
        };
        Some(slot.get_or_init(|| value))
    }

    /// The little-endian bytes buffer `id` starts from, in the artifact's weights, while it
    /// has not been copied out and they can be read as its elements in place (this host
    /// is little-endian and they are aligned to its dtype); otherwise None, and a reader
    /// takes [`HostBuffers::get`]. For launches that only read the buffer.
    pub(crate) fn initial_bytes(&self, id: BufferId) -> Option<&[u8]> {
        if !cfg!(target_endian = "little") || self.slots.get(id)?.get().is_some() {
            return None;
        }
        let Initial::Stored { range, dtype, .. } = self.initial.get(id)?.as_ref()? else {
            return None;
        };
        let bytes = self.bytes.as_ref()?.get(range.clone())?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(dtype.size_bytes() as usize)
            .then_some(bytes)
    }

    /// How many buffers hold a value of their own (copied or set).
    pub(crate) fn copied(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }

    /// [`HostBuffers::get`], writable.
    pub(crate) fn get_mut(&mut self, id: BufferId) -> Option<&mut HostTensor> {
        self.get(id)?;
        self.forget_initial(id);
        self.slots.get_mut(id)?.get_mut()
    }

    /// Replaces the value of buffer `id`.
    pub(crate) fn set(&mut self, id: BufferId, value: HostTensor) {
        if let Some(slot) = self.slots.get_mut(id) {
            *slot = OnceCell::from(value);
        }
        self.forget_initial(id);
    }

    /// Every buffer's value, by buffer id (all copied out of the artifact now).
    pub(crate) fn values(&self) -> impl Iterator<Item = Option<&HostTensor>> {
        (0..self.slots.len()).map(|id| self.get(id))
    }

    /// Buffer `id` no longer starts from the artifact (its slot holds its value); the
    /// artifact's bytes go when no buffer does.
    fn forget_initial(&mut self, id: BufferId) {
        if self.initial.get_mut(id).and_then(Option::take).is_some() {
            self.pending -= 1;
            if self.pending == 0 {
                self.bytes = None;
            }
        }
    }
}
