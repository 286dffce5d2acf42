//! Generated datasets: tasks drawn from a seed instead of read from a file, for models
//! whose data is easier to make than to ship. The same spec gives the same samples on
//! every machine.
//!
//! - [`reverse`]: reverse a sequence of digits (`reverse:length=10,samples=…,seed=…`).
//! - [`adding`]: the adding problem (`adding:length=100,samples=…,seed=…`).

pub mod adding;
pub mod reverse;

pub use adding::AddingTask;
pub use reverse::{REVERSE_START, ReverseTask};

/// `key=value` options of a generated task, each a non-negative integer, passed to
/// `set(key, value)`; `task` names the task in messages.
pub(crate) fn parse_options(
    task: &str,
    options: &str,
    mut set: impl FnMut(&str, u64) -> Result<(), String>,
) -> Result<(), String> {
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("`{task}` options are key=value, got `{option}`"))?;
        let number: u64 = value.trim().parse().map_err(|_| {
            format!("`{key}` of `{task}` must be a non-negative integer, got `{value}`")
        })?;
        set(key.trim(), number)?;
    }
    Ok(())
}
