//! Text form of a memory plan: one line per scratch buffer, then the totals.

use super::MemoryPlan;
use crate::lower::Lowered;
use std::fmt::Write;
use strata_runtime::artifact::manifest::Extent;

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
    for (b, buf) in l.buffers.iter().enumerate() {
        let (Some(off), Some(lt)) = (plan.offsets[b], plan.lifetimes[b]) else {
            continue;
        };
        let elems: u64 = buf
            .shape
            .iter()
            .map(|d| match d {
                strata_kernels::ir::Dim::Fixed(n) => *n,
                strata_kernels::ir::Dim::Batch => 1,
            })
            .product();
        let size = if buf.shape.contains(&strata_kernels::ir::Dim::Batch) {
            format!("{}*batch", elems * 4)
        } else {
            format!("{}", elems * 4)
        };
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
    out
}
