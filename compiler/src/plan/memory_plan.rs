//! Memory planning: every scratch buffer gets an offset in one arena, buffers that are
//! never live at the same time share bytes.
//!
//! Sizes are [`Extent`]s, `fixed + per_batch * batch`. A buffer's shape holds the batch
//! at most once, so each buffer is either batch-independent or proportional to the
//! batch; the arena is split into a fixed region followed by a batch region, each planned
//! on its own in its own unit, so one plan serves every batch size.
//!
//! Placement is greedy by size (the "greedy by size" offset calculation of Pisarchyk &
//! Lee, "Efficient Memory Management for Deep Neural Net Inference", 2020): buffers in
//! decreasing size, each at the lowest offset that overlaps no already placed buffer
//! whose lifetime intersects its own.

use crate::lower::{BufferRole, Lowered};
use strata_kernels::ir::Dim;
use strata_runtime::artifact::manifest::Extent;

/// Offsets and sizes are multiples of this (per batch row, for the batch region), so
/// every buffer starts 16-byte aligned for any batch size.
pub const ALIGN: u64 = 16;

/// When a buffer is live: from the step that first writes it to the last that reads it.
/// Step 0 is "before the first launch" (inputs), launch `i` is step `i + 1`, and
/// `launches + 1` is "after the last launch" (outputs are read then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    fn overlaps(self, o: Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// The plan: an arena offset for every scratch buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Per buffer: its offset in the arena, or None for parameters.
    pub offsets: Vec<Option<Extent>>,
    pub lifetimes: Vec<Option<Lifetime>>,
    pub arena: Extent,
    /// Sum of all scratch buffer sizes: the arena without reuse.
    pub naive: Extent,
    /// The most bytes live at any one step: no plan can do better.
    pub lower_bound: Extent,
}

fn round_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// A scratch buffer's size in its region's unit (bytes, or bytes per batch row) and
/// whether it lives in the batch region.
fn size_of(shape: &[Dim]) -> (u64, bool) {
    let fixed: u64 = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Batch => 1,
        })
        .product::<u64>()
        * 4;
    (round_up(fixed), shape.contains(&Dim::Batch))
}

/// Computes every scratch buffer's lifetime over the launch order.
pub fn lifetimes(l: &Lowered) -> Vec<Option<Lifetime>> {
    let mut life: Vec<Option<Lifetime>> = vec![None; l.buffers.len()];
    let mut touch = |b: usize, step: usize| {
        let lt = life[b].get_or_insert(Lifetime {
            first: step,
            last: step,
        });
        lt.first = lt.first.min(step);
        lt.last = lt.last.max(step);
    };
    for (_, b) in &l.inputs {
        touch(*b, 0);
    }
    for (i, launch) in l.launches.iter().enumerate() {
        for b in &launch.bindings {
            touch(*b, i + 1);
        }
    }
    let end = l.launches.len() + 1;
    for (_, b) in &l.outputs {
        touch(*b, end);
    }
    for (b, buf) in l.buffers.iter().enumerate() {
        if matches!(buf.role, BufferRole::Param(_)) {
            life[b] = None;
        }
    }
    life
}

/// Plans the arena for `l`.
pub fn plan_memory(l: &Lowered) -> MemoryPlan {
    let lifetimes = lifetimes(l);
    let mut offsets: Vec<Option<u64>> = vec![None; l.buffers.len()];
    let mut region_size = [0u64; 2];
    let mut naive = [0u64; 2];
    for region in [false, true] {
        let mut items: Vec<(usize, u64, Lifetime)> = l
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(b, buf)| {
                let lt = lifetimes[b]?;
                let (size, batched) = size_of(&buf.shape);
                (batched == region).then_some((b, size, lt))
            })
            .collect();
        // Largest first; ties by earlier start, then id, so the plan is deterministic.
        items.sort_by_key(|(b, size, lt)| (std::cmp::Reverse(*size), lt.first, *b));
        let mut placed: Vec<(u64, u64, Lifetime)> = Vec::new();
        for (b, size, lt) in items {
            let mut conflicts: Vec<(u64, u64)> = placed
                .iter()
                .filter(|(_, _, plt)| plt.overlaps(lt))
                .map(|(off, sz, _)| (*off, *sz))
                .collect();
            conflicts.sort();
            let mut offset = 0u64;
            for (off, sz) in conflicts {
                if offset + size <= off {
                    break;
                }
                offset = offset.max(off + sz);
            }
            placed.push((offset, size, lt));
            offsets[b] = Some(offset);
            region_size[region as usize] = region_size[region as usize].max(offset + size);
            naive[region as usize] += size;
        }
    }
    let fixed_region = region_size[0];
    let offsets = offsets
        .iter()
        .enumerate()
        .map(|(b, o)| {
            o.map(|off| {
                if size_of(&l.buffers[b].shape).1 {
                    Extent {
                        fixed: fixed_region,
                        per_batch: off,
                    }
                } else {
                    Extent {
                        fixed: off,
                        per_batch: 0,
                    }
                }
            })
        })
        .collect();
    let lower_bound = live_lower_bound(l, &lifetimes);
    MemoryPlan {
        offsets,
        lifetimes,
        arena: Extent {
            fixed: region_size[0],
            per_batch: region_size[1],
        },
        naive: Extent {
            fixed: naive[0],
            per_batch: naive[1],
        },
        lower_bound,
    }
}

fn live_lower_bound(l: &Lowered, lifetimes: &[Option<Lifetime>]) -> Extent {
    let steps = l.launches.len() + 2;
    let mut best = Extent::default();
    for step in 0..steps {
        let mut live = Extent::default();
        for (b, lt) in lifetimes.iter().enumerate() {
            if let Some(lt) = lt
                && lt.first <= step
                && step <= lt.last
            {
                let (size, batched) = size_of(&l.buffers[b].shape);
                if batched {
                    live.per_batch += size;
                } else {
                    live.fixed += size;
                }
            }
        }
        best.fixed = best.fixed.max(live.fixed);
        best.per_batch = best.per_batch.max(live.per_batch);
    }
    best
}

/// Proves the plan safe: every scratch buffer lies inside the arena, and no two
/// buffers whose lifetimes intersect share a byte, for any batch size.
pub fn check_plan(l: &Lowered, plan: &MemoryPlan) -> Result<(), String> {
    let mut spans = Vec::new();
    for (b, buf) in l.buffers.iter().enumerate() {
        match (plan.lifetimes[b], plan.offsets[b]) {
            (Some(lt), Some(off)) => {
                let (size, batched) = size_of(&buf.shape);
                let (start, region) = if batched {
                    if off.fixed != plan.arena.fixed {
                        return Err(format!(
                            "`{}` is batched but outside the batch region",
                            buf.name
                        ));
                    }
                    (off.per_batch, plan.arena.per_batch)
                } else {
                    if off.per_batch != 0 {
                        return Err(format!(
                            "`{}` is fixed-size but has a batch offset",
                            buf.name
                        ));
                    }
                    (off.fixed, plan.arena.fixed)
                };
                if start % ALIGN != 0 || start + size > region {
                    return Err(format!(
                        "`{}` lies outside the arena or is misaligned",
                        buf.name
                    ));
                }
                spans.push((b, batched, start, size, lt));
            }
            (None, None) => {}
            _ => {
                return Err(format!(
                    "`{}` has a lifetime without an offset or the reverse",
                    buf.name
                ));
            }
        }
    }
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.1 == b.1 && a.4.overlaps(b.4) && a.2 < b.2 + b.3 && b.2 < a.2 + a.3 {
                return Err(format!(
                    "`{}` and `{}` are live at the same time and overlap",
                    l.buffers[a.0].name, l.buffers[b.0].name
                ));
            }
        }
    }
    Ok(())
}
