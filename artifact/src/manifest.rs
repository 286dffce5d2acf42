//! The manifest: everything the runtime needs to know about a compiled model, apart
//! from the generated code and the weights.
//!
//! The compiler writes it (serde JSON inside the artifact); the runtime reads and
//! validates it before running anything. Buffers are referred to by [`BufferId`] (their
//! position in [`Manifest::buffers`]), kernels by their position in [`Manifest::kernels`].

use serde::{Deserialize, Serialize};
use strata_kernels::ir::{Dim, Kernel, ScalarType};

/// Position of a buffer in [`Manifest::buffers`].
pub type BufferId = usize;

/// A byte size or offset that may grow with the batch: `fixed + per_batch * batch`.
///
/// Every buffer whose shape holds the batch dimension has a size proportional to it, so a
/// memory plan made in these units is valid for every batch size at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    pub fixed: u64,
    pub per_batch: u64,
}

impl Extent {
    pub fn resolve(self, batch: u64) -> Option<u64> {
        self.per_batch.checked_mul(batch)?.checked_add(self.fixed)
    }
}

/// Where a buffer's storage lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// Scratch memory at this byte offset of the arena (valid during one entry run).
    Arena { offset: Extent },
    /// An entry's input or output at this byte offset of the I/O block: the runtime
    /// writes the input there before the entry runs and reads the output after. The
    /// block is apart from the arena, so the memory plan's scratch never competes with
    /// the caller's data; its buffers never share bytes.
    Io { offset: Extent },
    /// Persistent state (a parameter, later optimizer state) stored under this key in the
    /// weights (safetensors) section.
    Persistent { key: String },
    /// A slice of another buffer that can move with the loop running the launch: see
    /// [`Window`].
    Window(Window),
}

/// A buffer that is a slice of its `parent`, starting `index` units in, where a unit is
/// the window's own element count divided by `span`, `index = step * t + shift` taken
/// modulo `modulus` unless it is 0, and `t` is the sequence index of the current
/// iteration of the enclosing [`Loop`] (0 outside loops). A scan's step reads `R[t]` and
/// writes `R[t + 1]` of its stacked carries through two windows of one buffer (span 1);
/// `R[1..T + 1]` is a window of span `T` at index 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub parent: BufferId,
    pub step: u64,
    pub shift: u64,
    pub modulus: u64,
    /// How many units the window covers (its element count is a multiple of it).
    #[serde(default = "one")]
    pub span: u64,
}

fn one() -> u64 {
    1
}

impl Window {
    /// The slice index at sequence index `t`.
    pub fn index(&self, t: u64) -> u64 {
        let i = self.step * t + self.shift;
        if self.modulus == 0 {
            i
        } else {
            i % self.modulus
        }
    }

    /// Where the window starts in its parent, in bytes, at sequence index `t`, for a
    /// window of `bytes` bytes (None on overflow or a zero span).
    pub fn offset(&self, t: u64, bytes: u64) -> Option<u64> {
        self.index(t).checked_mul(bytes.checked_div(self.span)?)
    }
}

/// Launches `start..end` of an entry run `count` times, with the sequence index `t`
/// going `0..count`, or `count - 1` down to 0 when `reverse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loop {
    pub start: usize,
    pub end: usize,
    pub count: u64,
    pub reverse: bool,
}

impl Loop {
    /// The sequence index of iteration `i`.
    pub fn index(&self, i: u64) -> u64 {
        if self.reverse { self.count - 1 - i } else { i }
    }
}

/// One buffer of the compiled model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferInfo {
    pub name: String,
    pub dtype: ScalarType,
    pub shape: Vec<Dim>,
    pub location: Location,
}

impl BufferInfo {
    /// Number of elements for a batch size (None on overflow).
    pub fn elements(&self, batch: u64) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.resolve(batch)))
    }

    /// The buffer's size in bytes as an [`Extent`] (None if the batch appears twice or the
    /// size overflows `u64`).
    pub fn byte_size(&self) -> Option<Extent> {
        let mut fixed = self.dtype.size_bytes();
        let mut batch_dims = 0;
        for d in &self.shape {
            match d {
                Dim::Fixed(n) => fixed = fixed.checked_mul(*n)?,
                Dim::Batch => batch_dims += 1,
            }
        }
        match batch_dims {
            0 => Some(Extent {
                fixed,
                per_batch: 0,
            }),
            1 => Some(Extent {
                fixed: 0,
                per_batch: fixed,
            }),
            _ => None,
        }
    }
}

/// A named input or output of an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryPort {
    pub name: String,
    pub buffer: BufferId,
}

/// One kernel launch: the kernel and, for each of its buffer slots, the buffer it binds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub kernel: usize,
    pub bindings: Vec<BufferId>,
}

/// An entry point of the model (`infer`; later `train_step`, `eval`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub inputs: Vec<EntryPort>,
    pub outputs: Vec<EntryPort>,
    /// Kernels in the order they run.
    pub launches: Vec<Launch>,
    /// Ranges of `launches` that repeat (scans), disjoint and in order.
    #[serde(default)]
    pub loops: Vec<Loop>,
}

impl Entry {
    /// The launches in the order they run, each with its loop's sequence index `t` (0
    /// outside loops): a loop's range repeats `count` times. Lazy, so running an entry
    /// allocates nothing for it.
    pub fn schedule(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let n = self.launches.len();
        // Each loop with the straight run of launches before it, then the tail.
        let mut next = 0;
        let parts = self.loops.iter().map(move |lp| {
            let before = (next..lp.start.min(n)).map(|i| (i, 0));
            next = next.max(lp.end);
            let body = (0..lp.count).flat_map(move |i| {
                let t = lp.index(i);
                (lp.start..lp.end.min(n)).map(move |j| (j, t))
            });
            before.chain(body)
        });
        let last = self.loops.iter().map(|lp| lp.end).max().unwrap_or(0);
        parts.flatten().chain((last..n).map(|i| (i, 0)))
    }
}

/// Everything about a compiled model except its code text and its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name in its source file.
    pub model: String,
    /// Version of the compiler that wrote it, for messages.
    pub compiler: String,
    pub buffers: Vec<BufferInfo>,
    /// The kernel IR of every kernel; the generated CPU code for kernel `k` is the CLIF
    /// functions named by `kernels[k].function_names()` (one per part).
    pub kernels: Vec<Kernel>,
    pub entries: Vec<Entry>,
    /// Size of the scratch arena.
    pub arena: Extent,
    /// Size of the I/O block (the largest entry's inputs and outputs).
    #[serde(default)]
    pub io: Extent,
    /// How to train the model, if its source has a `train` section.
    #[serde(default)]
    pub train: Option<super::train_config::TrainConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_repeats_each_loop_with_its_sequence_index() {
        let launch = |kernel| Launch {
            kernel,
            bindings: vec![],
        };
        let entry = Entry {
            name: "e".into(),
            inputs: vec![],
            outputs: vec![],
            launches: (0..6).map(launch).collect(),
            loops: vec![
                Loop {
                    start: 1,
                    end: 3,
                    count: 2,
                    reverse: true,
                },
                Loop {
                    start: 4,
                    end: 5,
                    count: 3,
                    reverse: false,
                },
            ],
        };
        let got: Vec<(usize, u64)> = entry.schedule().collect();
        let want = vec![
            (0, 0),
            (1, 1),
            (2, 1),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (4, 1),
            (4, 2),
            (5, 0),
        ];
        assert_eq!(got, want);
    }
}
