//! Which trials a sweep runs, and for how many epochs: the search methods.
//!
//! - `grid`: every combination of the space's values ([`Space::grid`]), each trained
//!   for the train section's epochs.
//! - `random`: `trials` points drawn from the space, seeded.
//! - `halving` (successive halving): `trials` random points trained for a few epochs;
//!   the best third (`eta`) go on for `eta` times as many epochs, and so on until the
//!   survivors train for the section's full count. A trial's later rungs resume its own
//!   run directory, so the epochs it already trained are not repeated.
//!
//! Successive halving rather than a TPE-style sampler: on a small budget, most of a
//! sweep's time is spent training configurations that are clearly worse after a few
//! epochs, and halving cuts exactly that, with no model of the space that a handful of
//! trials cannot fit. Its rungs are synchronous (a rung's survivors are chosen when the
//! whole rung has finished), so a resumed sweep makes the same choices as one that
//! never stopped; with a few parallel jobs the wait at each rung's end is short.

use super::space::{Config, Space};
use strata_kernels::rng::Philox;

/// The search method (`--method`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Grid,
    Random,
    Halving,
}

/// The configurations of a sweep and its rungs' epoch counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub configs: Vec<Config>,
    /// Epochs each rung trains to, in all (one rung unless halving; the last is the train
    /// section's count).
    pub rungs: Vec<u64>,
    pub eta: usize,
}

impl Plan {
    /// The plan of `method` over `space`: `trials` configurations (for the grid, at most
    /// that many: the first ones) and the rungs for `epochs` in all.
    pub fn new(
        method: Method,
        space: &Space,
        trials: usize,
        grid_points: usize,
        seed: u64,
        epochs: u64,
        eta: usize,
    ) -> Plan {
        let configs = match method {
            Method::Grid => {
                let mut grid = space.grid(grid_points);
                grid.truncate(trials);
                grid
            }
            Method::Random | Method::Halving => {
                let mut rng = Philox::from_seed(seed);
                (0..trials).map(|_| space.sample(&mut rng)).collect()
            }
        };
        let rungs = match method {
            Method::Halving => halving_rungs(configs.len(), epochs, eta),
            _ => vec![epochs],
        };
        Plan {
            configs,
            rungs,
            eta,
        }
    }

    /// How many of `survivors` trials go on to the next rung.
    pub fn promoted(&self, survivors: usize) -> usize {
        survivors.div_ceil(self.eta)
    }
}

/// The epochs of each rung: as many rungs as both the trials (each rung keeps
/// `1/eta` of them) and the epochs (each rung trains `eta` times as long) allow.
fn halving_rungs(trials: usize, epochs: u64, eta: usize) -> Vec<u64> {
    let eta = eta.max(2);
    let mut rungs = 0u32;
    while (eta as u64).saturating_pow(rungs + 1) <= trials as u64
        && (eta as u64).saturating_pow(rungs + 1) <= epochs
    {
        rungs += 1;
    }
    (0..=rungs)
        .map(|k| (epochs / (eta as u64).pow(rungs - k)).max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_rungs_grow_by_eta_and_end_at_the_full_count() {
        assert_eq!(halving_rungs(20, 30, 3), vec![3, 10, 30]);
        assert_eq!(halving_rungs(27, 30, 3), vec![1, 3, 10, 30]);
        assert_eq!(halving_rungs(2, 30, 3), vec![30]);
        assert_eq!(halving_rungs(20, 2, 3), vec![2]);
    }

    #[test]
    fn plans_are_reproducible_from_their_seed() {
        let space = Space::parse(&["lr=log(1e-4,1e-1)".to_string()]).unwrap();
        let a = Plan::new(Method::Random, &space, 5, 3, 1, 30, 3);
        assert_eq!(a, Plan::new(Method::Random, &space, 5, 3, 1, 30, 3));
        assert_ne!(a, Plan::new(Method::Random, &space, 5, 3, 2, 30, 3));
        assert_eq!(a.rungs, vec![30]);
        let g = Plan::new(Method::Grid, &space, 2, 3, 1, 30, 3);
        assert_eq!(g.configs.len(), 2);
        assert_eq!(
            Plan::new(Method::Halving, &space, 9, 3, 1, 30, 3).promoted(9),
            3
        );
    }
}
