//! The JSON form of a memory plan (`strata ir --stage plan --format json`): what the
//! text form ([`super::print`]) lists, as data. Offsets and sizes are extents,
//! `{"fixed": bytes, "per_batch": bytes per batch row}`.

use super::MemoryPlan;
use crate::lower::Lowered;
use serde_json::{Value, json};

/// The plan of `l` as a JSON value.
pub fn plan_to_json(l: &Lowered, plan: &MemoryPlan) -> Value {
    let arena: Vec<Value> = l
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(b, buf)| {
            let (offset, lifetime) = (plan.offsets[b]?, plan.lifetimes[b]?);
            Some(json!({
                "buffer": b,
                "name": buf.name,
                "offset": offset,
                "lifetime": [lifetime.first, lifetime.last],
            }))
        })
        .collect();
    let io: Vec<Value> = l
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(b, buf)| {
            let offset = plan.io_offsets[b]?;
            Some(json!({"buffer": b, "name": buf.name, "offset": offset}))
        })
        .collect();
    json!({
        "arena_buffers": arena,
        "io_buffers": io,
        "arena": plan.arena,
        "naive": plan.naive,
        "lower_bound": plan.lower_bound,
        "io": plan.io,
    })
}
