//! Text form of a memory plan: one line per scratch buffer, then the totals, then the
//! inputs and outputs in the I/O block.

use super::MemoryPlan;
use crate::lower::Lowered;
use std::fmt::Write;
use strata_artifact::manifest::Extent;

fn extent(e: Extent) -> String {
    match (e.fixed, e.per_batch) {
        (f, 0) => format!("{f}"),
        (0, p) => format!("{p}*batch"),
        (f, p) => format!("{f} + {p}*batch"),
    }
}

pub fn print_plan(l: &Lowered, plan: &MemoryPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>22}  lifetime",
        "buffer", "size", "offset"
    );
    let size = |b: usize| {
        let buf = &l.buffers[b];
        let elems: u64 = buf
            .shape
            .iter()
            .map(|d| match d {
                strata_kernels::ir::Dim::Fixed(n) => *n,
                strata_kernels::ir::Dim::Batch => 1,
            })
            .product();
        if buf.shape.contains(&strata_kernels::ir::Dim::Batch) {
            format!("{}*batch", elems * 4)
        } else {
            format!("{}", elems * 4)
        }
    };
    for (b, buf) in l.buffers.iter().enumerate() {
        let (Some(off), Some(lt)) = (plan.offsets[b], plan.lifetimes[b]) else {
            continue;
        };
        let size = size(b);
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>22}  {}..={}",
            buf.name,
            size,
            extent(off),
            lt.first,
            lt.last
        );
    }
    let _ = writeln!(out, "arena bytes:       {}", extent(plan.arena));
    let _ = writeln!(out, "naive sum:         {}", extent(plan.naive));
    let _ = writeln!(out, "live lower bound:  {}", extent(plan.lower_bound));
    let _ = writeln!(out, "I/O block bytes:   {}", extent(plan.io));
    for (b, buf) in l.buffers.iter().enumerate() {
        if let Some(off) = plan.io_offsets[b] {
            let _ = writeln!(out, "{:<24} {:>10} {:>22}", buf.name, size(b), extent(off));
        }
    }
    out
}
