//! Scheduling and memory planning over the lowered kernels.

pub mod memory_plan;
pub mod print;
pub mod stats;

pub use memory_plan::{MemoryPlan, check_plan, plan_memory};
