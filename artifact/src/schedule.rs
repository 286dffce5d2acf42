//! The learning rate of each step, from the [`Schedule`] of the train section.
//!
//! A pure function of the step and epoch (never of wall-clock time or of how the run was
//! split by resumes), so a resumed run feeds every step the rate an uninterrupted run
//! would. Computed in `f64` and rounded once to the `f32` the `lr` input takes.

use crate::train_config::Schedule;

/// Where a step falls in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPosition {
    /// The global optimizer step, 1-based.
    pub step: u64,
    /// The epoch the step belongs to, 1-based.
    pub epoch: u64,
    /// Steps in the whole run (`epochs × steps per epoch`): the length of a cosine decay.
    pub total_steps: u64,
}

/// The learning rate of the step at `at` for a run whose base rate is `base`:
///
/// - `Constant`: `base`.
/// - `Step { every, gamma }`: `base × gamma^⌊(epoch − 1) / every⌋` (`every = 0` never decays).
/// - `Cosine { warmup }`: `base × step / warmup` during the first `warmup` steps, then
///   half a cosine from `base` down to 0 at the last step (Loshchilov & Hutter, "SGDR",
///   2017, without restarts; the linear warm-up of Goyal et al., 2017).
pub fn learning_rate(schedule: &Schedule, base: f64, at: StepPosition) -> f32 {
    let rate = match *schedule {
        Schedule::Constant => base,
        Schedule::Step { every, gamma } => {
            let decays = at.epoch.saturating_sub(1).checked_div(every).unwrap_or(0);
            base * gamma.powi(i32::try_from(decays).unwrap_or(i32::MAX))
        }
        Schedule::Cosine { warmup } => {
            if at.step <= warmup {
                base * at.step as f64 / warmup as f64
            } else {
                let span = at.total_steps.saturating_sub(warmup).max(1) as f64;
                let progress = ((at.step - warmup) as f64 / span).min(1.0);
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    };
    rate as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: u64, epoch: u64) -> StepPosition {
        StepPosition {
            step,
            epoch,
            total_steps: 100,
        }
    }

    #[test]
    fn constant_is_the_base_rate() {
        assert_eq!(learning_rate(&Schedule::Constant, 0.01, at(57, 3)), 0.01);
    }

    #[test]
    fn step_decays_every_n_epochs() {
        let s = Schedule::Step {
            every: 2,
            gamma: 0.5,
        };
        assert_eq!(learning_rate(&s, 1.0, at(1, 1)), 1.0);
        assert_eq!(learning_rate(&s, 1.0, at(20, 2)), 1.0);
        assert_eq!(learning_rate(&s, 1.0, at(21, 3)), 0.5);
        assert_eq!(learning_rate(&s, 1.0, at(50, 5)), 0.25);
    }

    #[test]
    fn cosine_warms_up_linearly_then_decays_to_zero() {
        let s = Schedule::Cosine { warmup: 10 };
        assert_eq!(learning_rate(&s, 1.0, at(5, 1)), 0.5);
        assert_eq!(learning_rate(&s, 1.0, at(10, 1)), 1.0);
        assert!((learning_rate(&s, 1.0, at(55, 6)) - 0.5).abs() < 1e-6);
        assert!(learning_rate(&s, 1.0, at(100, 10)).abs() < 1e-7);
    }
}
