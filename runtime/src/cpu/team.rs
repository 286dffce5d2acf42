//! The threads that run launches beside the caller: a team whose workers wait for the next
//! launch by spinning a while before they sleep, and join a launch only while it has work.
//!
//! A thread pool whose idle workers sleep at once makes every launch that follows some
//! work on the calling thread alone pay for waking them: measured on a 2-core AMD EPYC
//! (`cargo run --release -p strata-runtime --example launch_threshold`), a launch split
//! across two threads 200 us after the previous one took ~45 us more than one split right
//! after it (0.9 us). A recurrent step's launches, a small model's batch-1 inference and
//! the kernels between a training step's products all come that way. So a worker spins
//! for [`SPIN`] after its last launch before it sleeps, as OpenMP runtimes do
//! (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`): during a run it answers in well under a
//! microsecond, and a process that stops launching gets its cores back soon after.
//!
//! A launch never waits for a worker that has not started on it: the work is a queue of
//! chunks that every participant takes from ([`Team::run`]'s `work` pulls until none is
//! left), and when the caller finds the queue empty it closes the launch, so a worker
//! that the OS had not scheduled yet (a busy machine) stays out instead of making the
//! caller wait for a time slice. The caller waits only for workers still inside.
//!
//! One launch uses the team at a time. A launch that finds it busy (sessions on several
//! threads) runs all its work on its own thread: results do not depend on the split.
//!
//! A recurrent loop is many short launches in a row, and a fork and a join per launch cost
//! more than some of them compute (W3's batch-1 step: ~0.8 us of a 1.9 us product). So a
//! loop can also run *seated* ([`Team::run_seated`]): the workers that come within
//! [`JOIN_WAIT`] take a numbered [`Seat`] each, every seat runs the whole loop and takes
//! its own share of each launch (a function of the seat and the count only), and the
//! seats meet at a barrier ([`Seat::sync`]) where a launch reads what another wrote: one
//! shared counter a launch instead of publishing, joining and closing a job.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// The job before the first: does nothing.
static NOTHING: fn(&Seat) = |_| {};

/// How long a seated run waits for its workers to take their seats. A spinning worker
/// joins within a microsecond; one that sleeps takes tens (a futex wake), and one the OS
/// has not scheduled may take a time slice: then the caller goes on with the seats taken.
const JOIN_WAIT: Duration = Duration::from_micros(200);

/// `Shared::entry`: the launch is open to workers.
const OPEN: u64 = 1 << 32;
/// `Shared::entry`: the workers inside the launch.
const INSIDE: u64 = OPEN - 1;

/// A launch's work, as the workers see it.
#[derive(Clone, Copy)]
struct JobRef {
    work: *const (dyn Fn(&Seat) + Sync),
    /// The caller's denormal mode, which the workers take ([`super::denormals::mode`]).
    denormals: u32,
    /// A seated job: the workers wait for the count of seats before they start.
    seated: bool,
}

/// One participant of a job: its number (the caller is 0) and, in a seated job, how many
/// take part (1 in a job that is not seated: its work takes pieces from a queue instead).
pub(crate) struct Seat<'t> {
    pub index: usize,
    pub count: usize,
    barrier: &'t Barrier,
    /// Barriers this seat has passed.
    passed: std::cell::Cell<u64>,
}

/// A seated job's barrier: arrivals so far, and whether a seat panicked (which releases
/// the others' waits).
struct Barrier {
    arrived: AtomicU64,
    poisoned: AtomicBool,
}

/// The barrier of a lone seat, which never waits at it.
static LONE: Barrier = Barrier::new();

impl Barrier {
    const fn new() -> Barrier {
        Barrier {
            arrived: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        }
    }
}

impl<'t> Seat<'t> {
    fn new(index: usize, count: usize, barrier: &'t Barrier) -> Seat<'t> {
        Seat {
            index,
            count,
            barrier,
            passed: std::cell::Cell::new(0),
        }
    }

    /// Waits until every seat has called `sync` as often as this one: what any seat
    /// wrote before is then visible to all. False when a seat panicked (the job is
    /// abandoned: stop and return).
    pub(crate) fn sync(&self) -> bool {
        let passed = self.passed.get() + 1;
        self.passed.set(passed);
        if self.count <= 1 {
            return true;
        }
        // The n-th barrier is passed when n arrivals of every seat are in: no seat
        // arrives at the next one before the last arrives at this one.
        let target = passed * self.count as u64;
        self.barrier.arrived.fetch_add(1, Ordering::AcqRel);
        while self.barrier.arrived.load(Ordering::Acquire) < target {
            if self.barrier.poisoned.load(Ordering::Relaxed) {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }
}

struct Shared {
    /// Bumped when a job is published (it wakes the workers).
    generation: AtomicU64,
    /// Who may join the current job: the generation's low 31 bits from bit 33, [`OPEN`],
    /// and the count of workers inside ([`INSIDE`]). A worker joins by incrementing the
    /// count while the word still names its generation and is open; the caller closes it
    /// when no work is left and waits for the count to reach 0.
    entry: AtomicU64,
    /// The most workers the current job takes (written before `entry` opens it).
    helpers: AtomicU64,
    /// The current job; written only by the team's holder before it bumps `generation`,
    /// read by workers after they joined.
    job: UnsafeCell<JobRef>,
    /// Whether a worker's share panicked during the current job.
    panicked: AtomicBool,
    /// A seated job's count of seats, tagged with its generation (`seats_word`); the
    /// workers that joined wait for it.
    seats: AtomicU64,
    /// A seated job's barrier.
    barrier: Barrier,
    /// Workers asleep (or about to be): the holder wakes them only then.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread that holds `Team::busy`, while no worker is
// inside a job (the previous one was closed and emptied), and read only by workers that
// joined the open job it belongs to.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`; the raw pointer in `job` is only dereferenced while its
// publisher waits for the workers inside.
unsafe impl Send for Shared {}

/// The launch threads besides the caller.
pub(crate) struct Team {
    shared: Arc<Shared>,
    /// Held by the launch that uses the team.
    busy: Mutex<()>,
}

fn entry_word(generation: u64) -> u64 {
    (generation & ((1 << 31) - 1)) << 33
}

/// `Shared::seats` for `count` seats in the job of `generation`.
fn seats_word(generation: u64, count: usize) -> u64 {
    entry_word(generation) | count as u64
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
            entry: AtomicU64::new(0),
            helpers: AtomicU64::new(0),
            job: UnsafeCell::new(JobRef {
                work: &NOTHING,
                denormals: 0,
                seated: false,
            }),
            panicked: AtomicBool::new(false),
            seats: AtomicU64::new(0),
            barrier: Barrier::new(),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        for index in 0..workers {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("strata-launch-{index}"))
                .spawn(move || serve(&shared))
                .ok()?;
        }
        Some(Team {
            shared,
            busy: Mutex::new(()),
        })
    }

    /// Calls `work` on the calling thread and on up to `helpers` workers that come in
    /// time, and returns when every call has returned. `work` must take pieces of the
    /// launch from a shared queue until it is empty: a worker may join late or not at
    /// all. When another launch holds the team, only the calling thread calls it.
    pub(crate) fn run(&self, helpers: usize, work: &(dyn Fn() + Sync)) {
        let Ok(guard) = self.busy.try_lock() else {
            work();
            return;
        };
        // Lives until `finish` has seen every worker out.
        let queued = |_: &Seat| work();
        self.publish(helpers, &queued, false);
        let mine = catch_unwind(AssertUnwindSafe(work));
        // No work is left: nobody else may join; wait for whoever is inside.
        self.shared.entry.fetch_and(!OPEN, Ordering::SeqCst);
        self.finish(guard, mine);
    }

    /// Calls `work` with seat 0 on the calling thread and with seats `1..` on the
    /// workers (at most `helpers`) that join within [`JOIN_WAIT`]; every call gets the
    /// same count of seats, and returns when every call has returned. When another
    /// launch holds the team, `work` runs on the calling thread alone (one seat).
    pub(crate) fn run_seated(&self, helpers: usize, work: &(dyn Fn(&Seat) + Sync)) {
        let shared = &*self.shared;
        let Ok(guard) = self.busy.try_lock() else {
            Team::alone(work);
            return;
        };
        if helpers == 0 {
            drop(guard);
            Team::alone(work);
            return;
        }
        shared.barrier.arrived.store(0, Ordering::SeqCst);
        shared.barrier.poisoned.store(false, Ordering::SeqCst);
        let generation = self.publish(helpers, work, true);
        let started = Instant::now();
        while shared.entry.load(Ordering::Acquire) & INSIDE < helpers as u64
            && started.elapsed() < JOIN_WAIT
        {
            std::hint::spin_loop();
        }
        // Whoever is inside now has a seat; nobody else may join.
        let inside = shared.entry.fetch_and(!OPEN, Ordering::SeqCst) & INSIDE;
        let count = 1 + inside as usize;
        shared
            .seats
            .store(seats_word(generation, count), Ordering::SeqCst);
        let mine = catch_unwind(AssertUnwindSafe(|| {
            work(&Seat::new(0, count, &shared.barrier))
        }));
        if mine.is_err() {
            shared.barrier.poisoned.store(true, Ordering::SeqCst);
        }
        self.finish(guard, mine);
    }

    /// Calls `work` as the only seat of a seated run (no team: one thread).
    pub(crate) fn alone(work: &(dyn Fn(&Seat) + Sync)) {
        work(&Seat::new(0, 1, &LONE));
    }

    /// Publishes `work` to up to `helpers` workers; returns its generation.
    fn publish(&self, helpers: usize, work: &(dyn Fn(&Seat) + Sync), seated: bool) -> u64 {
        let shared = &*self.shared;
        // SAFETY: erases the borrow's lifetime: a worker calls `work` only after joining
        // the open job, and `run` / `run_seated` return only after closing it and seeing
        // no worker inside.
        let erased: *const (dyn Fn(&Seat) + Sync) = unsafe { std::mem::transmute(work) };
        // SAFETY: the caller holds `busy` and no worker is inside a job (see `Shared`).
        unsafe {
            *shared.job.get() = JobRef {
                work: erased,
                denormals: super::denormals::mode(),
                seated,
            }
        };
        shared.helpers.store(helpers as u64, Ordering::SeqCst);
        let generation = shared.generation.load(Ordering::Relaxed).wrapping_add(1);
        shared
            .entry
            .store(entry_word(generation) | OPEN, Ordering::SeqCst);
        shared.generation.store(generation, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            // A sleeper checks `generation` under the lock before it waits (see `serve`).
            let _lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        generation
    }

    /// After the job was closed: waits for the workers inside, releases the team and
    /// raises the caller's or a worker's panic.
    fn finish(&self, guard: std::sync::MutexGuard<'_, ()>, mine: std::thread::Result<()>) {
        let shared = &*self.shared;
        while shared.entry.load(Ordering::Acquire) & INSIDE != 0 {
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

/// A worker: waits for each new generation and joins its job if it is still open.
fn serve(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_job(shared, seen);
        let Some(index) = join(shared, seen) else {
            continue;
        };
        // SAFETY: published before the generation we joined; its holder waits for us.
        let job = unsafe { *shared.job.get() };
        super::denormals::set_mode(job.denormals);
        // SAFETY: `job.work` stays valid while we are inside (see `Team::run`).
        let work = unsafe { &*job.work };
        let count = match job.seated {
            // The caller publishes the count right after it closes the job.
            true => loop {
                let word = shared.seats.load(Ordering::Acquire);
                if word & !INSIDE == entry_word(seen) {
                    break (word & INSIDE) as usize;
                }
                std::hint::spin_loop();
            },
            false => 1,
        };
        let seat = Seat::new(index, count, &shared.barrier);
        if catch_unwind(AssertUnwindSafe(|| work(&seat))).is_err() {
            shared.barrier.poisoned.store(true, Ordering::SeqCst);
            shared.panicked.store(true, Ordering::SeqCst);
        }
        shared.entry.fetch_sub(1, Ordering::Release);
    }
}

/// Counts this worker inside the job of `generation` if it is still open and short of
/// helpers; returns its seat (1 for the first to join).
fn join(shared: &Shared, generation: u64) -> Option<usize> {
    let want = entry_word(generation) | OPEN;
    let mut word = shared.entry.load(Ordering::Acquire);
    loop {
        if word & !INSIDE != want || word & INSIDE >= shared.helpers.load(Ordering::Acquire) {
            return None;
        }
        match shared.entry.compare_exchange_weak(
            word,
            word + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some((word & INSIDE) as usize + 1),
            Err(now) => word = now,
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

    /// Runs `pieces` pieces on `team`, each taken once from a shared counter; returns how
    /// often each ran.
    fn run_pieces(team: &Team, pieces: usize) -> Vec<u64> {
        let next = AtomicUsize::new(0);
        let counts: Vec<AtomicU64> = (0..pieces).map(|_| AtomicU64::new(0)).collect();
        team.run(usize::MAX, &|| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(count) = counts.get(i) else {
                    break;
                };
                count.fetch_add(1, Ordering::Relaxed);
                // Long enough for the workers to join.
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn every_piece_runs_once_after_spinning_and_after_sleeping() {
        let team = Team::start(3).expect("threads start");
        for round in 0..40 {
            if round == 20 {
                // Long enough for the workers to fall asleep.
                std::thread::sleep(SPIN * 3);
            }
            assert!(run_pieces(&team, 9).iter().all(|&c| c == 1));
        }
        assert!(run_pieces(&team, 0).is_empty());
    }

    /// Launches (at most 100) until a worker joins one; `check(joined, panicked)` on each
    /// launch's outcome. A worker joins within microseconds when the machine has a core
    /// for it, so the bound is only reached on a machine that never schedules it.
    fn until_a_worker_joins(team: &Team, check: impl Fn(bool, bool)) {
        let caller = std::thread::current().id();
        for _ in 0..100 {
            let joined = AtomicBool::new(false);
            let next = AtomicUsize::new(0);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                team.run(usize::MAX, &|| {
                    let worker = std::thread::current().id() != caller;
                    if worker {
                        joined.store(true, Ordering::SeqCst);
                    }
                    while next.fetch_add(1, Ordering::Relaxed) < 100 {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    if worker {
                        panic!("a worker's share");
                    }
                })
            }));
            let joined = joined.load(Ordering::SeqCst);
            check(joined, outcome.is_err());
            if joined {
                return;
            }
        }
        panic!("no worker joined 100 launches of 10 ms");
    }

    #[test]
    fn a_worker_that_joins_shares_the_work_and_its_panic_panics_the_launch() {
        let team = Team::start(1).expect("threads start");
        until_a_worker_joins(&team, |joined, panicked| assert_eq!(joined, panicked));
        // The team goes on.
        assert!(run_pieces(&team, 5).iter().all(|&c| c == 1));
    }

    #[test]
    fn no_more_workers_join_than_asked() {
        let team = Team::start(3).expect("threads start");
        let inside = Mutex::new(std::collections::HashSet::new());
        let next = AtomicUsize::new(0);
        team.run(1, &|| {
            inside.lock().unwrap().insert(std::thread::current().id());
            while next.fetch_add(1, Ordering::Relaxed) < 50 {
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        // The caller and at most one worker.
        assert!(inside.lock().unwrap().len() <= 2);
    }

    #[test]
    fn seats_are_numbered_once_and_a_barrier_shows_every_seat_what_the_others_wrote() {
        let team = Team::start(3).expect("threads start");
        for round in 0..20 {
            if round == 10 {
                // Long enough for the workers to fall asleep.
                std::thread::sleep(SPIN * 3);
            }
            let counts = Mutex::new(Vec::new());
            let slots: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
            let mismatches = AtomicUsize::new(0);
            team.run_seated(3, &|seat| {
                counts.lock().unwrap().push((seat.index, seat.count));
                for phase in 1..=50u64 {
                    slots[seat.index].store(phase, Ordering::Relaxed);
                    assert!(seat.sync());
                    // Every seat wrote this phase; nobody writes the next before all read.
                    let seen = slots[..seat.count]
                        .iter()
                        .filter(|s| s.load(Ordering::Relaxed) == phase);
                    if seen.count() != seat.count {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    assert!(seat.sync());
                }
            });
            let mut counts = counts.into_inner().unwrap();
            counts.sort();
            let seats = counts.len();
            assert!((1..=4).contains(&seats));
            assert_eq!(counts, (0..seats).map(|i| (i, seats)).collect::<Vec<_>>());
            assert_eq!(mismatches.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_panicking_seat_releases_the_others_and_panics_the_run() {
        let team = Team::start(1).expect("threads start");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            team.run_seated(1, &|seat| {
                if seat.index == seat.count - 1 {
                    panic!("the last seat's share");
                }
                // The other seats wait at a barrier the last never reaches.
                while seat.sync() {}
            })
        }));
        assert!(outcome.is_err());
        // The team goes on.
        assert!(run_pieces(&team, 5).iter().all(|&c| c == 1));
    }
}
