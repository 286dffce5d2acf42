//! Memory planning: every scratch buffer gets an offset in one arena, buffers that are
//! never live at the same time share bytes.
//!
//! Parameters and optimizer state are persistent (outside the plan); the entry's inputs
//! and outputs get their own bytes in an I/O block apart from the arena ([`is_io`]): the
//! caller writes and reads them around the run, so they never constrain the scratch.
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

use super::lifetime_index::LifetimeIndex;
use crate::lower::{BufferRole, Lowered};
use std::collections::BTreeMap;
use strata_artifact::manifest::Extent;
use strata_kernels::ir::{Dim, KernelBody};

/// Offsets and sizes are multiples of this (per batch row, for the batch region), so
/// every buffer starts 16-byte aligned for any batch size.
pub const ALIGN: u64 = 16;

/// When a buffer is live, in half-steps. Step 0 is "before the first launch" (inputs),
/// launch `i` is step `i + 1`, and `launches + 1` is "after the last launch" (outputs are
/// read then). Step `s` covers half-steps `2s` (its reads) and `2s + 1` (its writes): a
/// buffer touched at step `s` is live over both, except that an element-wise map's input
/// that dies there ends at `2s` and the map's outputs start at `2s + 1`, so the output
/// may take the input's bytes (in-place reuse, see [`in_place_inputs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

/// The plan: an arena offset for every scratch buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Per buffer: its offset in the arena, or None for parameters, windows and I/O.
    pub offsets: Vec<Option<Extent>>,
    /// Per buffer: its offset in the I/O block, for inputs and outputs.
    pub io_offsets: Vec<Option<Extent>>,
    /// Size of the I/O block.
    pub io: Extent,
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

/// The buffers a launch may overwrite in place: its kernel is a map whose stores all
/// write one index, and every load of the buffer reads exactly that index, so each
/// element is read before it is written, by the same point (on the CPU, a point computes
/// every store's value before writing any; on the GPU, one invocation is one point).
pub fn in_place_inputs(l: &Lowered, launch: usize) -> Vec<usize> {
    let launch_ = &l.launches[launch];
    let kernel = &l.kernels[launch_.kernel];
    let KernelBody::Map { stores, .. } = &kernel.body else {
        return Vec::new();
    };
    let index = &stores[0].index;
    if stores.iter().any(|s| &s.index != index) {
        return Vec::new();
    }
    let written: Vec<usize> = stores.iter().map(|s| s.buf).collect();
    let mut ok = vec![true; kernel.buffers.len()];
    for s in stores {
        s.value.visit_loads(&mut |slot, ix| {
            if ix != Some(index) {
                ok[slot] = false;
            }
        });
    }
    (0..kernel.buffers.len())
        .filter(|slot| ok[*slot] && !written.contains(slot))
        .map(|slot| launch_.bindings[slot])
        .collect()
}

/// Whether buffer `b` is an entry input or output: it lives in the I/O block.
pub fn is_io(l: &Lowered, b: usize) -> bool {
    matches!(l.buffers[b].role, BufferRole::Input(_)) || l.outputs.iter().any(|(_, o)| *o == b)
}

/// Lays out the inputs then the outputs, each once, in an I/O block: fixed-size buffers
/// first, then the batched ones (per batch row), as in the arena.
fn plan_io(l: &Lowered) -> (Vec<Option<Extent>>, Extent) {
    let mut offsets: Vec<Option<(u64, bool)>> = vec![None; l.buffers.len()];
    let mut size = [0u64; 2];
    for (_, b) in l.inputs.iter().chain(&l.outputs) {
        if offsets[*b].is_some() {
            continue;
        }
        let (bytes, batched) = size_of(&l.buffers[*b].shape);
        offsets[*b] = Some((size[batched as usize], batched));
        size[batched as usize] += bytes;
    }
    let offsets = offsets
        .into_iter()
        .map(|o| {
            o.map(|(off, batched)| match batched {
                true => Extent {
                    fixed: size[0],
                    per_batch: off,
                },
                false => Extent {
                    fixed: off,
                    per_batch: 0,
                },
            })
        })
        .collect();
    let io = Extent {
        fixed: size[0],
        per_batch: size[1],
    };
    (offsets, io)
}

/// Computes every scratch buffer's lifetime over the launch order (see [`Lifetime`]).
/// Buffers outside the arena (parameters, windows, inputs and outputs) have none.
pub fn lifetimes(l: &Lowered) -> Vec<Option<Lifetime>> {
    let mut life: Vec<Option<Lifetime>> = vec![None; l.buffers.len()];
    let mut touch = |b: usize, first: usize, last: usize| {
        let lt = life[b].get_or_insert(Lifetime { first, last });
        lt.first = lt.first.min(first);
        lt.last = lt.last.max(last);
    };
    for (_, b) in &l.inputs {
        touch(*b, 0, 1);
    }
    for (i, launch) in l.launches.iter().enumerate() {
        let s = i + 1;
        for b in &launch.bindings {
            touch(l.root(*b), 2 * s, 2 * s + 1);
        }
    }
    let end = l.launches.len() + 1;
    for (_, b) in &l.outputs {
        touch(*b, 2 * end, 2 * end + 1);
    }
    // A buffer a loop uses that also lives outside it (a carry stack, a sequence, a
    // weight) is live for the whole loop: the next iteration reads it again.
    for lp in &l.loops {
        let (first, last) = (2 * (lp.start + 1), 2 * lp.end + 1);
        for lt in life.iter_mut().flatten() {
            let inside = first <= lt.first && lt.last <= last;
            if !inside && lt.first <= last && first <= lt.last {
                lt.first = lt.first.min(first);
                lt.last = lt.last.max(last);
            }
        }
    }
    for (b, buf) in l.buffers.iter().enumerate() {
        if matches!(buf.role, BufferRole::Param(_) | BufferRole::Window(_)) || is_io(l, b) {
            life[b] = None;
        }
    }
    // In place: an input read for the last time by an in-place map ends at the map's
    // reads; then the map's fresh outputs start at its writes. Not inside loops.
    for i in 0..l.launches.len() {
        let s = i + 1;
        if l.in_loop(i) {
            continue;
        }
        let dying: Vec<usize> = in_place_inputs(l, i)
            .into_iter()
            .filter(|b| life[*b].is_some_and(|lt| lt.last == 2 * s + 1))
            .collect();
        if dying.is_empty() {
            continue;
        }
        for b in dying {
            if let Some(lt) = life[b].as_mut() {
                lt.last = 2 * s;
            }
        }
        let launch = &l.launches[i];
        let kernel = &l.kernels[launch.kernel];
        if let KernelBody::Map { stores, .. } = &kernel.body {
            for st in stores {
                let b = launch.bindings[st.buf];
                if let Some(lt) = life[b].as_mut()
                    && lt.first == 2 * s
                {
                    lt.first = 2 * s + 1;
                }
            }
        }
    }
    life
}

/// Whether one lifetime ends at a map's reads (half-step `2s`, an in-place input dying
/// there) and the other starts at that map's writes (`2s + 1`): they do not overlap, but
/// their bytes may be shared only at the same offset (see [`plan_memory`]).
fn in_place_adjacent(a: Lifetime, b: Lifetime) -> bool {
    (b.first % 2 == 1 && a.last + 1 == b.first) || (a.first % 2 == 1 && b.last + 1 == a.first)
}

/// The lowest offset at which `size` bytes overlap none of `conflicts` (the placed
/// buffers live at the same time, as `(offset, size)`) and share bytes with an
/// `in_place` partner only at its own offset. That offset is 0, the end of a placed
/// buffer or a partner's offset: from any other valid offset, moving down stays valid
/// until one of those.
fn lowest_offset(size: u64, mut conflicts: Vec<(u64, u64)>, in_place: &[(u64, u64)]) -> u64 {
    conflicts.sort_unstable();
    if in_place.is_empty() {
        // A sweep up the address range: `top` is the highest end below the next
        // conflict; the first gap of `size` bytes above it is the answer.
        let mut top = 0;
        for &(off, sz) in &conflicts {
            if off >= top + size {
                break;
            }
            top = top.max(off + sz);
        }
        return top;
    }
    // `reach[k]`: the highest end among the `k + 1` lowest conflicts.
    let reach: Vec<u64> = conflicts
        .iter()
        .scan(0, |top, (off, sz)| {
            *top = (*top).max(off + sz);
            Some(*top)
        })
        .collect();
    let clear = |o: u64, (off, sz): (u64, u64)| o + size <= off || off + sz <= o;
    let valid = |o: u64| {
        let below_end = conflicts.partition_point(|(off, _)| *off < o + size);
        (below_end == 0 || reach[below_end - 1] <= o)
            && in_place.iter().all(|c| c.0 == o || clear(o, *c))
    };
    let mut candidates: Vec<u64> = std::iter::once(0)
        .chain(conflicts.iter().chain(in_place).map(|(off, sz)| off + sz))
        .chain(in_place.iter().map(|(off, _)| *off))
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|o| valid(*o))
        .expect("the end of every placed buffer is past them all, or one is valid")
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
        let index = LifetimeIndex::new(&items.iter().map(|(_, _, lt)| *lt).collect::<Vec<_>>());
        // Per item, its offset once placed.
        let mut placed: Vec<Option<u64>> = vec![None; items.len()];
        for (item, &(b, size, lt)) in items.iter().enumerate() {
            let mut conflicts: Vec<(u64, u64)> = Vec::new();
            index.overlapping(lt, |other| {
                if let Some(off) = placed[other] {
                    conflicts.push((off, items[other].1));
                }
            });
            // An in-place pair (an input dying at a map's reads, an output of that map
            // starting at its writes) may share bytes only element for element: at the
            // same offset, or not at all. A partial overlap would let the map's store of
            // one element overwrite another element of the input not yet read.
            let mut in_place: Vec<(u64, u64)> = Vec::new();
            let mut adjacent = |other: usize| {
                if let Some(off) = placed[other]
                    && in_place_adjacent(items[other].2, lt)
                {
                    in_place.push((off, items[other].1));
                }
            };
            if lt.first > 0 {
                index.ending_at(lt.first - 1).for_each(&mut adjacent);
            }
            index.starting_at(lt.last + 1).for_each(&mut adjacent);
            let offset = lowest_offset(size, conflicts, &in_place);
            placed[item] = Some(offset);
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
    let (io_offsets, io) = plan_io(l);
    MemoryPlan {
        offsets,
        io_offsets,
        io,
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

/// The most bytes live at one half-step, by a sweep over the steps: each lifetime adds
/// its size where it starts and takes it away after it ends.
fn live_lower_bound(l: &Lowered, lifetimes: &[Option<Lifetime>]) -> Extent {
    let steps = 2 * (l.launches.len() + 2);
    // Per step, per region (fixed, batched): bytes that start, bytes that end.
    let mut starts = vec![[0u64; 2]; steps];
    let mut ends = vec![[0u64; 2]; steps];
    for (b, lt) in lifetimes.iter().enumerate() {
        if let Some(lt) = lt
            && lt.first < steps
        {
            let (size, batched) = size_of(&l.buffers[b].shape);
            starts[lt.first][batched as usize] += size;
            if lt.last < steps {
                ends[lt.last][batched as usize] += size;
            }
        }
    }
    let (mut live, mut best) = ([0u64; 2], [0u64; 2]);
    for step in 0..steps {
        for r in 0..2 {
            live[r] += starts[step][r];
            best[r] = best[r].max(live[r]);
            live[r] -= ends[step][r];
        }
    }
    Extent {
        fixed: best[0],
        per_batch: best[1],
    }
}

/// Proves the plan safe: every scratch buffer lies inside the arena, and two buffers
/// that share a byte (for any batch size) are never used by the same launch or across
/// each other's uses, except an in-place pair. The proof does not trust the plan's own
/// lifetimes: it recomputes from the launches, in whole steps, when each buffer is first
/// and last touched; two sharing buffers must have disjoint step ranges, or meet at one
/// step `s` where one dies as an in-place input of the map at `s` ([`in_place_inputs`])
/// and the other is first written by that map, at the same offset (element for element).
pub fn check_plan(l: &Lowered, plan: &MemoryPlan) -> Result<(), String> {
    let mut steps: Vec<Option<(usize, usize)>> = vec![None; l.buffers.len()];
    let mut touch = |b: usize, s: usize| {
        let r = steps[b].get_or_insert((s, s));
        r.0 = r.0.min(s);
        r.1 = r.1.max(s);
    };
    for (_, b) in &l.inputs {
        touch(*b, 0);
    }
    for (i, launch) in l.launches.iter().enumerate() {
        for b in &launch.bindings {
            touch(l.root(*b), i + 1);
        }
    }
    for (_, b) in &l.outputs {
        touch(*b, l.launches.len() + 1);
    }
    for lp in &l.loops {
        let (first, last) = (lp.start + 1, lp.end);
        for r in steps.iter_mut().flatten() {
            if !(first <= r.0 && r.1 <= last) && r.0 <= last && first <= r.1 {
                *r = (r.0.min(first), r.1.max(last));
            }
        }
    }
    let written_at = |b: usize, s: usize| -> bool {
        let launch = &l.launches[s - 1];
        match &l.kernels[launch.kernel].body {
            KernelBody::Map { stores, .. } => stores.iter().any(|st| launch.bindings[st.buf] == b),
            _ => false,
        }
    };
    let may_share = |a: usize, b: usize, same_start: bool| -> bool {
        let (Some(ra), Some(rb)) = (steps[a], steps[b]) else {
            return true;
        };
        if ra.1 < rb.0 || rb.1 < ra.0 {
            return true;
        }
        let meets = |(x, rx): (usize, (usize, usize)), (y, ry): (usize, (usize, usize))| {
            let s = rx.1;
            s == ry.0
                && s >= 1
                && s <= l.launches.len()
                && !l.in_loop(s - 1)
                && in_place_inputs(l, s - 1).contains(&x)
                && written_at(y, s)
        };
        // An in-place pair shares element for element: at the same offset only.
        same_start && (meets((a, ra), (b, rb)) || meets((b, rb), (a, ra)))
    };
    let mut spans = Vec::new();
    let mut io_spans: Vec<(usize, bool, u64, u64)> = Vec::new();
    for (b, buf) in l.buffers.iter().enumerate() {
        let is_param = matches!(buf.role, BufferRole::Param(_));
        if (is_param || is_io(l, b)) && plan.offsets[b].is_some() {
            return Err(format!(
                "`{}`: parameters and I/O live outside the arena",
                buf.name
            ));
        }
        match (is_io(l, b), plan.io_offsets[b]) {
            (true, Some(off)) => {
                let (size, batched) = size_of(&buf.shape);
                let (start, region) = match batched {
                    true if off.fixed == plan.io.fixed => (off.per_batch, plan.io.per_batch),
                    false if off.per_batch == 0 => (off.fixed, plan.io.fixed),
                    _ => return Err(format!("`{}` is in the wrong I/O region", buf.name)),
                };
                if start % ALIGN != 0 || start + size > region {
                    return Err(format!("`{}` lies outside the I/O block", buf.name));
                }
                // No two inputs or outputs share a byte, whatever their lifetimes.
                if let Some(other) = io_spans.iter().find(|&&(o, ob, os, osz)| {
                    o != b && ob == batched && os < start + size && start < os + osz
                }) {
                    return Err(format!(
                        "inputs/outputs `{}` and `{}` overlap",
                        buf.name, l.buffers[other.0].name
                    ));
                }
                io_spans.push((b, batched, start, size));
                continue;
            }
            (false, None) => {}
            (true, None) => return Err(format!("`{}` has no place in the I/O block", buf.name)),
            (false, Some(_)) => {
                return Err(format!(
                    "`{}` is in the I/O block but no input or output",
                    buf.name
                ));
            }
        }
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
    // A sweep over the steps: a span is active from its first step through its last,
    // and is checked when it becomes active against the active spans of its region that
    // share a byte with it. Active spans at different offsets never share a byte (the
    // check would have failed when the later one arrived), so those are the spans at
    // offsets inside it and the ones at the highest offset below it: a lookup, not a
    // comparison with every span.
    let step_count = l.launches.len() + 2;
    let mut starting: Vec<Vec<usize>> = vec![Vec::new(); step_count];
    let mut ending: Vec<Vec<usize>> = vec![Vec::new(); step_count];
    for (i, span) in spans.iter().enumerate() {
        if let Some((first, last)) = steps[span.0] {
            starting[first].push(i);
            ending[last].push(i);
        }
    }
    let mut active: [BTreeMap<u64, Vec<usize>>; 2] = Default::default();
    for step in 0..step_count {
        for &i in &starting[step] {
            let y = spans[i];
            let region = &mut active[y.1 as usize];
            let below = region.range(..y.2).next_back();
            for (_, group) in below.into_iter().chain(region.range(y.2..y.2 + y.3)) {
                for &j in group {
                    let x = spans[j];
                    if x.2 < y.2 + y.3 && y.2 < x.2 + x.3 && !may_share(x.0, y.0, x.2 == y.2) {
                        let (a, b) = (x.0.min(y.0), x.0.max(y.0));
                        return Err(format!(
                            "`{}` and `{}` are live at the same time and overlap",
                            l.buffers[a].name, l.buffers[b].name
                        ));
                    }
                }
            }
            region.entry(y.2).or_default().push(i);
        }
        for &i in &ending[step] {
            let (batched, offset) = (spans[i].1, spans[i].2);
            let region = &mut active[batched as usize];
            if let Some(group) = region.get_mut(&offset) {
                group.retain(|&j| j != i);
                if group.is_empty() {
                    region.remove(&offset);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
