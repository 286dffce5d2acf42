//! Horizontal fusion: kernels that do not depend on each other are launched together, as
//! one kernel whose body has parts ([`KernelBody::Parts`]).
//!
//! This is the multi-output fusion of XLA's sibling and horizontal fusion (and of fused
//! "foreach" optimizers): a dense layer's backward computes its input gradient, weight
//! gradient and bias gradient from the same output gradient in one launch, and every
//! parameter's optimizer update is one launch. Each part keeps its own iteration space
//! and loop nest; what the launch saves is the per-launch cost (a fork-join of the CPU's
//! threads, a dispatch and its barrier on the GPU) and the ordering constraint between
//! siblings.
//!
//! # The rule (`parts`)
//! Launches are scheduled as soon as possible, in order: launch `j` joins the earliest
//! group after the last group it depends on, where two launches depend on each other when
//! one writes memory the other reads or writes. Memory is compared by *place*: the
//! buffer's storage (a window or view shares its parent's), narrowed by two facts the
//! lowering knows for certain:
//! - one-slice windows of one parent that move with the loop in step, at different
//!   slices, are disjoint at every step (a scan's `R[t]` read and `R[t + 1]` written);
//! - maps that write blocks of one buffer proven disjoint by their store indices
//!   ([`strata_kernels::residue`]: the launches of a concatenation's operands) never
//!   write the same element.
//!
//! So `j` only ever moves past launches it has no dependence with, either way, and the
//! parts of a group are independent. [`Kernel::validate`] checks that per slot: a buffer
//! two parts write (each its own block) gets a slot per part. Launches inside a scan's
//! loop group only with each other (the loop's body is a segment of its own, run once
//! per step), and no launch moves across a loop's boundary. An LSTM step's forward is
//! three launches this way (the product; the cell state with the product's copy into the
//! carry; the hidden state with the cell state's copy), its backward five.
//!
//! The memory plan runs after this pass and sees a group as one step: every part's inputs
//! live until the group runs, and no part writes in place.

use super::{BufferId, BufferRole, LowerError, Lowered, LoweredLaunch, LoweredLoop};
use std::collections::HashMap;
use strata_kernels::ir::{Access, BufferDecl, Kernel, KernelBody};
use strata_kernels::residue::{Residues, residues_apart, written_residues};

/// The most parts a kernel gets: a launch that would make a group larger joins the
/// next one with room. A concatenation of many small operands (the seq2seq example's
/// table of positions) would otherwise make one kernel of 142 parts and ~150 slots,
/// and the GPU path computed wrong results for it on lavapipe (it matched the CPU at
/// 64 parts, not at 128; before blocks of one buffer could share a launch, no example
/// had more than 15 parts).
const MOST_PARTS: usize = 16;

/// Groups independent launches (see the module docs), renumbering the kernels in launch
/// order.
pub fn group_independent(l: &mut Lowered) -> Result<(), LowerError> {
    let n = l.launches.len();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut loops = Vec::with_capacity(l.loops.len());
    let mut segment = Segment::default();
    let mut i = 0;
    while i < n {
        if let Some(lp) = l.loops.iter().find(|lp| lp.start == i) {
            groups.append(&mut std::mem::take(&mut segment).groups);
            let start = groups.len();
            // A loop's body is a segment of its own: its launches group among
            // themselves (an LSTM step's gate activations run as one launch), never
            // with launches outside it.
            let mut body = Segment::default();
            for j in lp.start..lp.end {
                body.schedule(j, LaunchAccess::of(l, j));
            }
            groups.append(&mut body.groups);
            loops.push(LoweredLoop {
                start,
                end: groups.len(),
                ..*lp
            });
            i = lp.end;
            continue;
        }
        segment.schedule(i, LaunchAccess::of(l, i));
        i += 1;
    }
    groups.append(&mut segment.groups);

    let mut kernels = Vec::with_capacity(groups.len());
    let mut launches = Vec::with_capacity(groups.len());
    for members in &groups {
        let (mut kernel, bindings) = match members.as_slice() {
            [single] => {
                let launch = &l.launches[*single];
                (l.kernels[launch.kernel].clone(), launch.bindings.clone())
            }
            _ => merge(l, members)?,
        };
        kernel.name = format!("k{}_{}", kernels.len(), kind_of(&kernel.name));
        kernel.validate().map_err(|e| LowerError(e.to_string()))?;
        launches.push(LoweredLaunch {
            kernel: kernels.len(),
            bindings,
        });
        kernels.push(kernel);
    }
    l.kernels = kernels;
    l.launches = launches;
    l.loops = loops;
    Ok(())
}

/// Memory a launch touches: a buffer's storage, narrowed to a window of it that moves
/// with the loop and to the blocks of that a map writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Place {
    root: BufferId,
    /// `(step, shift, modulus)` of a one-slice window of `root`.
    window: Option<(u64, u64, u64)>,
    /// What a map writes there, as residues (empty: all of it).
    residues: Vec<Residues>,
}

impl Place {
    /// The place of buffer `b`, narrowed to `residues` (indices relative to `b`).
    fn of(l: &Lowered, b: BufferId, residues: Vec<Residues>) -> Place {
        match l.buffers[b].role {
            BufferRole::Window(w) if w.span == 1 => Place {
                root: w.parent,
                window: Some((w.step, w.shift, w.modulus)),
                residues,
            },
            // A window of several slices: all of its parent (its blocks, relative to
            // where it starts, are not the parent's).
            BufferRole::Window(w) => Place::whole(w.parent),
            _ => Place {
                root: b,
                window: None,
                residues,
            },
        }
    }

    /// All of `root`: what a place list collapses to (see `Places`).
    fn whole(root: BufferId) -> Place {
        Place {
            root,
            window: None,
            residues: Vec::new(),
        }
    }

    /// Whether the two places may share an element at some step.
    fn overlaps(&self, other: &Place) -> bool {
        if self.root != other.root {
            return false;
        }
        match (self.window, other.window) {
            // One-slice windows moving in step (as the artifact's validation compares
            // them): the same slice at every step, or never.
            (Some((step, shift, modulus)), Some((step2, shift2, modulus2)))
                if step == step2 && modulus == modulus2 =>
            {
                let index = |s: u64| if modulus == 0 { s } else { s % modulus };
                index(shift) == index(shift2) && !residues_apart(&self.residues, &other.residues)
            }
            (None, None) => !residues_apart(&self.residues, &other.residues),
            _ => true,
        }
    }
}

/// The places a launch reads and writes.
struct LaunchAccess {
    reads: Vec<Place>,
    writes: Vec<Place>,
}

impl LaunchAccess {
    fn of(l: &Lowered, launch: usize) -> LaunchAccess {
        let launch = &l.launches[launch];
        let kernel = &l.kernels[launch.kernel];
        // A buffer bound to two slots gives two equal places; `Places::record` merges them.
        let places = |slots: Vec<usize>, narrow: bool| -> Vec<Place> {
            slots
                .into_iter()
                .map(|s| {
                    let residues = match narrow {
                        true => written_residues(&kernel.body, s, &kernel.buffers[s].shape),
                        false => Vec::new(),
                    };
                    Place::of(l, launch.bindings[s], residues)
                })
                .collect()
        };
        LaunchAccess {
            reads: places(kernel.body.read_slots(), false),
            writes: places(kernel.body.written_slots(), true),
        }
    }
}

/// The places of one buffer's storage that groups so far touched, each with the last
/// group that did.
#[derive(Default)]
struct Places(Vec<(Place, usize)>);

impl Places {
    /// A buffer's place list longer than this becomes one entry for all of it (at the
    /// latest group of those it replaces), so scheduling stays linear in the launches.
    const MOST: usize = 16;

    /// The last group touching memory that overlaps `p`.
    fn last_overlapping(&self, p: &Place) -> Option<usize> {
        self.0
            .iter()
            .filter(|(q, _)| q.overlaps(p))
            .map(|(_, g)| *g)
            .max()
    }

    fn record(&mut self, p: Place, group: usize) {
        if let Some((_, g)) = self.0.iter_mut().find(|(q, _)| *q == p) {
            *g = (*g).max(group);
            return;
        }
        match self.0.len() < Self::MOST {
            true => self.0.push((p, group)),
            false => {
                let last = self.0.iter().map(|(_, g)| *g).fold(group, usize::max);
                self.0 = vec![(Place::whole(p.root), last)];
            }
        }
    }
}

/// The groups of launches between two loops, in order, and per buffer storage the last
/// group that writes and the last that reads each place of it: what the earliest group a
/// launch may join depends on, kept so that scheduling a launch looks up its own buffers
/// instead of comparing it with every group.
#[derive(Default)]
struct Segment {
    groups: Vec<Vec<usize>>,
    last_write: HashMap<BufferId, Places>,
    last_read: HashMap<BufferId, Places>,
}

impl Segment {
    /// Adds launch `i` to the earliest group after the last one it conflicts with: one
    /// that writes memory it reads or writes, or reads memory it writes.
    fn schedule(&mut self, i: usize, access: LaunchAccess) {
        let last = |table: &HashMap<BufferId, Places>, p: &Place| {
            table
                .get(&p.root)
                .and_then(|places| places.last_overlapping(p))
        };
        let conflict = access
            .reads
            .iter()
            .chain(&access.writes)
            .filter_map(|p| last(&self.last_write, p))
            .chain(
                access
                    .writes
                    .iter()
                    .filter_map(|p| last(&self.last_read, p)),
            )
            .max();
        let mut earliest = conflict.map_or(0, |g| g + 1);
        while self
            .groups
            .get(earliest)
            .is_some_and(|g| g.len() >= MOST_PARTS)
        {
            earliest += 1;
        }
        match self.groups.get_mut(earliest) {
            Some(g) => g.push(i),
            None => self.groups.push(vec![i]),
        }
        for p in access.writes {
            self.last_write
                .entry(p.root)
                .or_default()
                .record(p, earliest);
        }
        for p in access.reads {
            self.last_read
                .entry(p.root)
                .or_default()
                .record(p, earliest);
        }
    }
}

/// One kernel whose parts are the members' bodies, over the union of their buffers.
fn merge(l: &Lowered, members: &[usize]) -> Result<(Kernel, Vec<BufferId>), LowerError> {
    let mut decls: Vec<BufferDecl> = Vec::new();
    let mut bindings: Vec<BufferId> = Vec::new();
    let mut slot_of: HashMap<BufferId, usize> = HashMap::new();
    let mut parts = Vec::with_capacity(members.len());
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for &m in members {
        let launch = &l.launches[m];
        let kernel = &l.kernels[launch.kernel];
        let mut slots = Vec::with_capacity(kernel.buffers.len());
        for (decl, &b) in kernel.buffers.iter().zip(&launch.bindings) {
            let slot = match slot_of.get(&b) {
                // Another part writes its own block of the same buffer (the grouping
                // allows nothing else): a slot of this part's own, so that the parts
                // still share no slot they write.
                Some(&s) if decl.access != Access::Read || decls[s].access != Access::Read => {
                    let mut decl = decl.clone();
                    decl.name = format!("{}_{}", decl.name, parts.len());
                    decls.push(decl);
                    bindings.push(b);
                    decls.len() - 1
                }
                Some(&s) => {
                    if decls[s].access != decl.access {
                        decls[s].access = Access::ReadWrite;
                    }
                    s
                }
                None => {
                    decls.push(decl.clone());
                    bindings.push(b);
                    slot_of.insert(b, decls.len() - 1);
                    decls.len() - 1
                }
            };
            slots.push(slot);
        }
        let mut body = kernel.body.clone();
        if let KernelBody::Parts(_) = body {
            return Err(LowerError(format!("`{}` already has parts", kernel.name)));
        }
        body.remap_slots(&|s| slots[s]);
        parts.push(body);
        let kind = kind_of(&kernel.name).to_string();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let name: Vec<String> = kinds
        .iter()
        .map(|(k, count)| match count {
            1 => k.clone(),
            _ => format!("{k}_x{count}"),
        })
        .collect();
    let kernel = Kernel {
        name: name.join("_with_"),
        buffers: decls,
        body: KernelBody::Parts(parts),
    };
    Ok((kernel, bindings))
}

/// What a kernel computes, from its name `k<number>_<kind>`.
fn kind_of(name: &str) -> &str {
    match name.strip_prefix('k').and_then(|rest| rest.split_once('_')) {
        Some((number, kind)) if number.chars().all(|c| c.is_ascii_digit()) => kind,
        _ => name,
    }
}
