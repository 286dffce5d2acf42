//! The threads that run launches beside the caller: a team whose workers wait for the next
//! launch by spinning a while before they sleep.
//!
//! A thread pool whose idle workers sleep at once makes every launch that follows some
//! work on the calling thread alone pay for waking them: measured on a 2-core AMD EPYC
//! (`cargo run --release -p strata-runtime --example launch_threshold`), a launch split
//! across two threads 200 us after the previous one took ~45 us more than one split right
//! after it (0.9 us). A recurrent step's launches, a small model's batch-1 inference and
//! the kernels between a training step's products all come that way. So a worker spins
//! for [`SPIN`] after its last range before it sleeps, as OpenMP runtimes do
//! (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`): during a run it answers in well under a
//! microsecond, and a process that stops launching gets its cores back soon after.
//!
//! One launch uses the team at a time. A launch that finds it busy (sessions on several
//! threads) runs all its ranges on its own thread: results do not depend on the split.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The job before the first: runs nothing.
static NOTHING: fn(usize) = |_| {};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// A range's work, as the workers see it: `run(i)` runs worker `i`'s range.
#[derive(Clone, Copy)]
struct JobRef {
    run: *const (dyn Fn(usize) + Sync),
    /// How many workers have a range (the first ones).
    active: usize,
    /// The caller's denormal mode, which the workers take ([`super::denormals::mode`]).
    denormals: u32,
}

struct Shared {
    /// Bumped when a job is published; a worker runs each generation once.
    generation: AtomicU64,
    /// The current job; written only by the team's holder before it bumps `generation`,
    /// read by the workers after they see the bump.
    job: UnsafeCell<JobRef>,
    /// Active workers that have not finished the current job.
    remaining: AtomicUsize,
    /// Whether a worker's range panicked during the current job.
    panicked: AtomicBool,
    /// Workers asleep (or about to be): the holder wakes them only then.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread that holds `Team::busy`, while no worker
// reads it (every active worker of the previous job has finished, and the others do not
// read it), and read by workers only after the `generation` bump that publishes it.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`; the raw pointer in `job` is only dereferenced while its
// publisher waits for the job to end.
unsafe impl Send for Shared {}

/// The launch threads besides the caller.
pub(crate) struct Team {
    shared: Arc<Shared>,
    workers: usize,
    /// Held by the launch that uses the team.
    busy: Mutex<()>,
}

impl Team {
    /// The team of `workers` threads, started on first use; None when the host refused
    /// to start a thread (launches then run on the caller alone).
    pub(crate) fn get(workers: usize) -> Option<&'static Team> {
        static TEAM: OnceLock<Option<Team>> = OnceLock::new();
        TEAM.get_or_init(|| Team::start(workers)).as_ref()
    }

    fn start(workers: usize) -> Option<Team> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(JobRef {
                run: &NOTHING,
                active: 0,
                denormals: 0,
            }),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        for index in 0..workers {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("strata-launch-{index}"))
                .spawn(move || work(&shared, index))
                .ok()?;
        }
        Some(Team {
            shared,
            workers,
            busy: Mutex::new(()),
        })
    }

    /// Runs `run(i)` for every `i` in `0..ranges`: the last on the calling thread, the
    /// others on the workers, and returns when all have. Runs them all on the calling
    /// thread when another launch holds the team or there are more ranges than threads.
    pub(crate) fn run(&self, ranges: usize, run: &(dyn Fn(usize) + Sync)) {
        let Some(others) = ranges.checked_sub(1) else {
            return;
        };
        let guard = match self.busy.try_lock() {
            Ok(guard) if others <= self.workers => guard,
            _ => {
                (0..ranges).for_each(run);
                return;
            }
        };
        let shared = &*self.shared;
        // SAFETY: erases the borrow's lifetime: the workers call `run` only until they
        // decrement `remaining`, and this function returns only after that reaches 0.
        let erased: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(run) };
        // SAFETY: we hold `busy` and the previous job has ended (see `Shared`).
        unsafe {
            *shared.job.get() = JobRef {
                run: erased,
                active: others,
                denormals: super::denormals::mode(),
            }
        };
        shared.remaining.store(others, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            // A sleeper checks `generation` under the lock before it waits (see `work`).
            let _lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| run(others)));
        while shared.remaining.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        drop(guard);
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a launch thread panicked");
        }
    }
}

/// A worker: waits for each new generation, runs its range if it has one.
fn work(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_job(shared, seen);
        // SAFETY: published by the bump we just saw; its holder waits for us.
        let job = unsafe { *shared.job.get() };
        if index < job.active {
            // SAFETY: `job.run` stays valid until `remaining` reaches 0 (see `Team::run`).
            let run = unsafe { &*job.run };
            super::denormals::set_mode(job.denormals);
            if catch_unwind(AssertUnwindSafe(|| run(index))).is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
            shared.remaining.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Spins up to [`SPIN`] for a generation after `seen`, then sleeps until one comes.
fn wait_for_job(shared: &Shared, seen: u64) -> u64 {
    let started = Instant::now();
    let mut spins = 0u32;
    loop {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != seen {
            return generation;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(1024) || started.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let mut lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let generation = shared.generation.load(Ordering::SeqCst);
            if generation != seen {
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                return generation;
            }
            lock = shared.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_range_runs_once_per_launch_after_spinning_and_after_sleeping() {
        let team = Team::start(3).expect("threads start");
        let counts: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        for round in 0..50 {
            if round == 25 {
                // Long enough for the workers to fall asleep.
                std::thread::sleep(SPIN * 3);
            }
            team.run(4, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 50));
        // Fewer ranges than threads: the idle worker runs nothing.
        team.run(2, &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        let after: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(after, [51, 51, 50, 50]);
    }

    #[test]
    fn more_ranges_than_threads_run_on_the_caller() {
        let team = Team::start(1).expect("threads start");
        let sum = AtomicU64::new(0);
        team.run(5, &|i| {
            sum.fetch_add(i as u64 + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn a_panicking_range_panics_the_launch_and_the_team_goes_on() {
        let team = Team::start(1).expect("threads start");
        let failed = catch_unwind(AssertUnwindSafe(|| {
            team.run(2, &|i| {
                if i == 0 {
                    panic!("range 0");
                }
            })
        }));
        assert!(failed.is_err());
        let ran = AtomicU64::new(0);
        team.run(2, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 2);
    }
}
