//! Scheduling and memory planning over the lowered kernels; [`print`] and [`svg`] show a plan.

pub mod json;
mod lifetime_index;
pub mod memory_plan;
pub mod print;
pub mod stats;
pub mod svg;

pub use memory_plan::{MemoryPlan, check_plan, plan_memory};
