//! Scheduling and memory planning over the lowered kernels.

pub mod memory_plan;
pub mod print;

pub use memory_plan::{MemoryPlan, check_plan, plan_memory};
