//! Hyper-parameter search (`strata sweep`), in the order a sweep uses them:
//!
//! - [`space`]: the search space, `--space NAME=RANGE`, and drawing from it (the
//!   compiler's, since a model file's `sweep` section is written in it).
//! - [`plan`]: which configurations a method tries and for how many epochs (grid,
//!   random, successive halving).
//! - [`trial`]: each trial as a `strata train` process in its own run directory.
//! - [`record`]: `sweep.json` and `sweep.jsonl`, what makes a killed sweep resumable.
//! - [`report`]: the ranked table and `sweep.svg`.
//! - [`best_file`]: the chosen configuration written into the model file.
//!
//! The command itself (arguments, the rung loop, scoring the choice on the test split)
//! is [`crate::commands`]' `sweep`.

pub mod best_file;
pub mod plan;
pub mod record;
pub mod report;
pub mod trial;

pub use strata_compiler::sweep::space;
