//! Figures of one compiled entry, for `strata ir --stats`: ops before and after the
//! passes, kernels and bytes moved per step without and with fusion, and the arena
//! against the naive sum of buffer sizes and the live-set lower bound.
//!
//! Bytes moved is a model: every launch reads or writes each buffer it binds once,
//! whole (a kernel reading a buffer at several points still streams it once through
//! cache), each part of a kernel with parts on its own (parts are separate loop nests),
//! and a launch in a loop (a scan's body) runs once per step. "Unfused" is the same
//! graph lowered one kernel per op.
//!
//! The naive sums count one scratch buffer per value computed (parameters, inputs and
//! outputs live outside the arena and are not counted): a buffer used only inside a loop
//! holds a new value every step, so it counts once per step, as if the loop were
//! unrolled (what a graph without loops would allocate).

use super::MemoryPlan;
use super::memory_plan::{Lifetime, lifetimes};
use crate::ir::Graph;
use crate::lower::{Lowered, lower_unfused};
use std::fmt::Write;
use strata_artifact::manifest::Extent;

/// The batch size the figures are quoted at.
pub const STATS_BATCH: u64 = 32;

/// One entry's figures.
#[derive(Clone, Debug)]
pub struct EntryStats {
    pub name: String,
    pub ops_before: usize,
    pub ops_after: usize,
    pub kernels_unfused: usize,
    pub kernels: usize,
    /// Loop nests of the fused kernels (a kernel with parts has one per part).
    pub loop_nests: usize,
    pub bytes_moved_unfused: u64,
    pub bytes_moved: u64,
    pub arena: u64,
    /// The inputs and outputs, outside the arena.
    pub io: u64,
    /// Sum of the fused program's scratch buffers.
    pub naive: u64,
    /// Sum of the unfused program's scratch buffers (one buffer per op result).
    pub naive_unfused: u64,
    pub lower_bound: u64,
    /// Whether the entry has loops (its naive sums count loop buffers per step).
    pub loops: bool,
}

fn at(e: Extent) -> u64 {
    e.fixed + e.per_batch * STATS_BATCH
}

/// Bytes of buffer `b` at [`STATS_BATCH`].
fn buffer_bytes(l: &Lowered, b: usize) -> u64 {
    let buf = &l.buffers[b];
    buf.shape
        .iter()
        .map(|d| d.resolve(STATS_BATCH))
        .product::<u64>()
        * buf.dtype.size_bytes()
}

/// Per launch, the loop it runs in (loops are disjoint ranges of the launches).
fn loop_of_launches(l: &Lowered) -> Vec<Option<usize>> {
    let mut of = vec![None; l.launches.len()];
    for (n, lp) in l.loops.iter().enumerate() {
        for slot in &mut of[lp.start..lp.end] {
            slot.get_or_insert(n);
        }
    }
    of
}

/// Bytes every launch reads and writes, at [`STATS_BATCH`].
pub fn bytes_moved(l: &Lowered) -> u64 {
    let loop_of = loop_of_launches(l);
    l.launches
        .iter()
        .enumerate()
        .map(|(i, launch)| {
            let parts = l.kernels[launch.kernel].body.bodies();
            let per_part = parts.iter().map(|part| {
                let mut seen: Vec<usize> = [part.read_slots(), part.written_slots()]
                    .concat()
                    .into_iter()
                    .map(|s| launch.bindings[s])
                    .collect();
                seen.sort();
                seen.dedup();
                seen.iter().map(|b| buffer_bytes(l, *b)).sum::<u64>()
            });
            let runs = loop_of[i].map_or(1, |lp| l.loops[lp].count);
            runs * per_part.sum::<u64>()
        })
        .sum()
}

/// The sum of scratch buffer sizes at [`STATS_BATCH`], a buffer whose every use is
/// inside one loop counted once per step of it (see the module docs).
fn naive_sum(l: &Lowered, lifetimes: &[Option<Lifetime>]) -> u64 {
    let loop_of_launch = loop_of_launches(l);
    let mut loop_of: Vec<Option<Option<usize>>> = vec![None; l.buffers.len()];
    for (i, launch) in l.launches.iter().enumerate() {
        let lp = loop_of_launch[i];
        for &b in &launch.bindings {
            let b = l.root(b);
            loop_of[b] = match loop_of[b] {
                None => Some(lp),
                Some(prev) if prev == lp => Some(prev),
                Some(_) => Some(None),
            };
        }
    }
    l.buffers
        .iter()
        .enumerate()
        .filter(|(b, _)| lifetimes[*b].is_some())
        .map(|(b, _)| {
            let bytes = buffer_bytes(l, b);
            let steps = match loop_of[b] {
                Some(Some(lp)) => l.loops[lp].count,
                _ => 1,
            };
            bytes.next_multiple_of(super::memory_plan::ALIGN) * steps
        })
        .sum()
}

/// What the figures take from the graph lowered one kernel per op.
#[derive(Clone, Copy, Debug)]
pub struct UnfusedFigures {
    pub kernels: usize,
    pub bytes_moved: u64,
    pub naive: u64,
}

/// Lowers `graph` (after the passes) one kernel per op and keeps its figures.
pub fn unfused_figures(graph: &Graph) -> Result<UnfusedFigures, String> {
    let unfused = lower_unfused(graph).map_err(|e| e.to_string())?;
    // The unfused program is only summed, never planned: its lifetimes say which of its
    // buffers are scratch.
    let unfused_lifetimes = lifetimes(&unfused);
    Ok(UnfusedFigures {
        kernels: unfused.kernels.len(),
        bytes_moved: bytes_moved(&unfused),
        naive: naive_sum(&unfused, &unfused_lifetimes),
    })
}

/// The figures of an entry whose graph had `ops_before` ops before the passes, with
/// its graph's [`unfused_figures`].
pub fn entry_stats(
    name: &str,
    ops_before: usize,
    graph: &Graph,
    lowered: &Lowered,
    plan: &MemoryPlan,
    unfused: UnfusedFigures,
) -> EntryStats {
    EntryStats {
        name: name.to_string(),
        ops_before,
        ops_after: graph.len(),
        kernels_unfused: unfused.kernels,
        kernels: lowered.kernels.len(),
        loop_nests: lowered.kernels.iter().map(|k| k.part_count()).sum(),
        bytes_moved_unfused: unfused.bytes_moved,
        bytes_moved: bytes_moved(lowered),
        arena: at(plan.arena),
        io: at(plan.io),
        naive: naive_sum(lowered, &plan.lifetimes),
        naive_unfused: unfused.naive,
        lower_bound: at(plan.lower_bound),
        loops: !lowered.loops.is_empty(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The figures as a table.
pub fn print_stats(stats: &[EntryStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# figures at batch {STATS_BATCH}");
    for s in stats {
        let _ = writeln!(out, "entry {}", s.name);
        let _ = writeln!(
            out,
            "  ops:          {} typed, {} simplified",
            s.ops_before, s.ops_after
        );
        let _ = writeln!(
            out,
            "  kernels:      {} unfused, {} fused ({} loop nests)",
            s.kernels_unfused, s.kernels, s.loop_nests
        );
        let _ = writeln!(
            out,
            "  bytes moved:  {} unfused, {} fused ({:.2}x)",
            s.bytes_moved_unfused,
            s.bytes_moved,
            ratio(s.bytes_moved, s.bytes_moved_unfused)
        );
        let _ = writeln!(
            out,
            "  arena:        {} bytes; {:.3}x the live-set lower bound ({}); {:.3}x the naive sum of fused buffers ({}); {:.3}x the naive sum of one buffer per op ({}){}",
            s.arena,
            ratio(s.arena, s.lower_bound),
            s.lower_bound,
            ratio(s.arena, s.naive),
            s.naive,
            ratio(s.arena, s.naive_unfused),
            s.naive_unfused,
            if s.loops {
                ", loop buffers once per step"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "  I/O block:    {} bytes (inputs and outputs)", s.io);
    }
    out
}
