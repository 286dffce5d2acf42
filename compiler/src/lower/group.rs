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
//! one writes a buffer the other reads or writes (buffers compared by their storage, so a
//! window or view conflicts with its parent). So `j` only ever moves past launches it has
//! no dependence with, either way, and the parts of a group are independent, as
//! [`Kernel::validate`] requires. Launches inside a scan's loop group only with each
//! other (the loop's body is a segment of its own, run once per step), and no launch
//! moves across a loop's boundary.
//!
//! The memory plan runs after this pass and sees a group as one step: every part's inputs
//! live until the group runs, and no part writes in place.

use super::{BufferId, LowerError, Lowered, LoweredLaunch, LoweredLoop};
use std::collections::{HashMap, HashSet};
use strata_kernels::ir::{Access, BufferDecl, Kernel, KernelBody};

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

/// The buffers (by storage) a launch reads and writes.
struct LaunchAccess {
    reads: HashSet<BufferId>,
    writes: HashSet<BufferId>,
}

impl LaunchAccess {
    fn of(l: &Lowered, launch: usize) -> LaunchAccess {
        let launch = &l.launches[launch];
        let body = &l.kernels[launch.kernel].body;
        let roots = |slots: Vec<usize>| -> HashSet<BufferId> {
            slots
                .into_iter()
                .map(|s| l.root(launch.bindings[s]))
                .collect()
        };
        LaunchAccess {
            reads: roots(body.read_slots()),
            writes: roots(body.written_slots()),
        }
    }
}

/// The groups of launches between two loops, in order, and per buffer the last group
/// that writes it and the last that reads it: what the earliest group a launch may join
/// depends on, kept so that scheduling a launch looks up its own buffers instead of
/// comparing it with every group.
#[derive(Default)]
struct Segment {
    groups: Vec<Vec<usize>>,
    last_write: HashMap<BufferId, usize>,
    last_read: HashMap<BufferId, usize>,
}

impl Segment {
    /// Adds launch `i` to the earliest group after the last one it conflicts with: one
    /// that writes a buffer it reads or writes, or reads a buffer it writes.
    fn schedule(&mut self, i: usize, access: LaunchAccess) {
        let last_write = |b: &BufferId| self.last_write.get(b).copied();
        let last_read = |b: &BufferId| self.last_read.get(b).copied();
        let conflict = access
            .reads
            .iter()
            .chain(&access.writes)
            .filter_map(last_write)
            .chain(access.writes.iter().filter_map(last_read))
            .max();
        let earliest = conflict.map_or(0, |g| g + 1);
        match self.groups.get_mut(earliest) {
            Some(g) => g.push(i),
            None => self.groups.push(vec![i]),
        }
        for b in access.writes {
            let g = self.last_write.entry(b).or_insert(earliest);
            *g = (*g).max(earliest);
        }
        for b in access.reads {
            let g = self.last_read.entry(b).or_insert(earliest);
            *g = (*g).max(earliest);
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
