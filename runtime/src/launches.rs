//! An entry's launches on the CPU: each launch's slots bound to storage (the arena, the
//! I/O block, a parameter's host copy or the artifact's bytes in place, a window at its
//! loop index), the row-major copies its products read, then the launch.
//!
//! # Seated loops
//! A loop whose launches use several threads runs *seated* ([`cpu::launch_seated`]): its
//! launches' slots are bound for every iteration first, then the calling thread and the
//! team's threads run the whole loop together, each seat its own share of every launch,
//! meeting at a barrier after each launch instead of forking and joining a team per
//! launch (W3's batch-1 step: 104 launches a run, each product's fork and join ~0.8 us
//! of its 1.9). Results are the same bits either way: a launch's points never depend on
//! how it is split. A loop runs launch by launch instead when none of its launches uses
//! more than one thread (a barrier per launch would cost what nothing saves), when a
//! launch of it writes a persistent buffer (bound ahead, a parameter read in place from
//! the artifact's bytes would stay bound there after its first write), or when a launch
//! of it needs a row-major copy made afresh (one scratch copy serves one launch at a
//! time).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strata_artifact::manifest::{Entry, Launch, Location, Loop, Manifest};
use strata_kernels::ir::{Access, Kernel};

use crate::arena::Blocks;
use crate::cpu::{self, KernelFn, LaunchOptions, LaunchPlan, SeatShares, TransposedRhs};
use crate::error::RunError;
use crate::host_buffers::HostBuffers;

/// The fewest `gemm` calls of a product for which a launch of a training step copies its
/// transposed weight row-major first. Each call packs the transposed matrix again, at
/// 5-160 us per call for W1's and W4's weights (`128 x 128 x 512`, one thread: 284 us
/// against 151 us row-major), while the copy takes 5-65 us: at two calls a 784 x 256
/// weight's copy (65 us) costs what it saves (2 x 35-41 us), from three every shape
/// measured gains. (Two calls of W1's 256 x 256 layer: its kernel 159 -> 110 us with a
/// 22 us copy, not visible in the step's time through this machine's noise; not done.)
const FRESH_COPY_MIN_CALLS: u64 = 3;

/// Where the row-major copies of a launch come from.
enum RowMajorStore<'a> {
    /// Kept from run to run while the weights stay the same.
    Kept(&'a mut HashMap<RowMajorKey, Box<[f32]>>),
    /// Made for this launch from the parameters' current values.
    Fresh(&'a mut Vec<Vec<f32>>),
}

/// A row-major copy's buffer and the matrix of it that a product reads transposed (the
/// slot in it, a kernel's own number, set to 0).
pub(crate) type RowMajorKey = (usize, TransposedRhs);

/// The most launches a seated run binds ahead (a longer loop is several runs): W3's
/// 50 steps are 100 to 250.
const MOST_BOUND_LAUNCHES: u64 = 4096;

/// What an entry's launches on the CPU need: the code, the run's storage and what the
/// session keeps between runs.
pub(crate) struct CpuLaunches<'a> {
    pub manifest: &'a Manifest,
    /// Code of each kernel, by kernel position.
    pub functions: &'a [Option<Vec<KernelFn>>],
    pub blocks: &'a Blocks,
    /// The arena and I/O block of this run, `arena_len` bytes.
    pub base: *mut u8,
    pub arena_len: usize,
    pub batch: u64,
    /// The persistent buffers' host storage.
    pub host: Option<&'a mut HostBuffers>,
    /// Per kernel: how its launches are cut at the batch size last run.
    pub plans: &'a mut Vec<Option<LaunchPlan>>,
    /// Whether the entry writes a parameter (its row-major copies are made per launch).
    pub changes_weights: bool,
    pub row_major: &'a mut HashMap<RowMajorKey, Box<[f32]>>,
    pub launch_copies: &'a mut Vec<Vec<f32>>,
    /// Per kernel: time spent in its launches and their count, while profiling.
    pub profile: Option<&'a mut Vec<(Duration, u64)>>,
    /// How each seated loop of barriers, and each entry's whole run, went with several
    /// threads and alone (see [`AloneTimer`]), and which entries' runs are never timed.
    pub alone_timers: &'a mut Vec<AloneTimer>,
}

/// What probing the slower way may cost, as a share of the time: after a probe, the next
/// comes after as many runs as keep the two slower runs of each probe to this share
/// (W1's training step, 1.7 ms alone against 0.96 with the team: a probe every ~300 runs;
/// W5's, about as fast either way: every [`FEWEST_RUNS_BETWEEN_PROBES`]).
const PROBE_COST_SHARE: f64 = 0.005;

/// The fewest and most runs from one probe to the next.
const FEWEST_RUNS_BETWEEN_PROBES: u64 = 16;
const MOST_RUNS_BETWEEN_PROBES: u64 = 4096;

/// How a seated loop whose seats meet at a barrier after each launch
/// ([`SeatShares::Launches`]), or a whole run, went with several threads and alone, for
/// choosing between them run by run. On a machine whose CPUs are fast alone but slow
/// together (the 2-vCPU virtual machine of docs/performance.md spends seconds to minutes
/// in such a state: W3's batch-1 inference 0.13 ms on two threads and 0.20 on one in some
/// minutes, 0.26 on two and still 0.20 on one in others; W5's 900 training steps 0.040 s
/// on either in some, 0.088 on two and 0.043 on one in others), a barrier every
/// microsecond, or a fork and a join every few, costs more than the second thread saves.
/// The choice is made only where the results are the same bits either way
/// ([`LaunchPlan::same_bits_as_one_thread`]).
#[derive(Clone, Debug)]
pub(crate) struct AloneTimer {
    /// The entry, the loop's first launch (none: the whole run) and the batch size.
    key: (String, Option<usize>, u64),
    runs: u64,
    /// The run at which the next probe of the other way starts.
    next_probe: u64,
    /// Recent nanoseconds a run, with the threads and alone.
    together: Option<f64>,
    alone: Option<f64>,
    /// Whether the loop or run may go alone at all: the same bits alone as together (for
    /// a whole run, known after its first run, which makes its launches' plans).
    may_go_alone: Option<bool>,
}

impl AloneTimer {
    fn new(key: (String, Option<usize>, u64)) -> AloneTimer {
        AloneTimer {
            key,
            runs: 0,
            next_probe: 2,
            together: None,
            alone: None,
            may_go_alone: None,
        }
    }

    fn probing(&self) -> bool {
        self.runs == self.next_probe || self.runs == self.next_probe + 1
    }

    /// Whether this run goes alone: the faster way lately, but the other way for the two
    /// runs of a probe (the first of them only to settle the caches after the switch), to
    /// know (and keep knowing) both. The first two runs go with the threads.
    fn alone(&self) -> bool {
        let faster_alone = matches!((self.alone, self.together), (Some(a), Some(s)) if a < s);
        faster_alone != self.probing()
    }

    /// Records a run: a probe's second run replaces its way's time and sets when the
    /// next probe comes ([`PROBE_COST_SHARE`]); every other run moves its way's moving
    /// average, except the very first (a cold one) and a probe's first.
    fn record(&mut self, alone: bool, took: Duration) {
        let nanos = took.as_nanos() as f64;
        let time = match alone {
            true => &mut self.alone,
            false => &mut self.together,
        };
        if self.runs == self.next_probe + 1 {
            *time = Some(nanos);
            let slower = match (self.alone, self.together) {
                (Some(a), Some(t)) if a > 0.0 && t > 0.0 => a.max(t) / a.min(t),
                _ => 1.0,
            };
            // Two runs each `slower - 1` runs' time too long, every `gap` runs.
            let gap = (2.0 * (slower - 1.0) / PROBE_COST_SHARE) as u64;
            self.next_probe =
                self.runs + 1 + gap.clamp(FEWEST_RUNS_BETWEEN_PROBES, MOST_RUNS_BETWEEN_PROBES);
        } else if self.runs > 0 && self.runs != self.next_probe {
            *time = Some(time.map_or(nanos, |t| 0.75 * t + 0.25 * nanos));
        }
        self.runs += 1;
    }
}

impl<'a> CpuLaunches<'a> {
    /// Runs `entry`'s launches in order, its loops seated where they can be; the whole
    /// run on the calling thread alone when that has been faster lately and gives the
    /// same bits ([`AloneTimer`]).
    pub(crate) fn run(&mut self, entry: &Entry) -> Result<(), RunError> {
        let timer = self.alone_timer(entry, None);
        if self.alone_timers[timer].may_go_alone.is_none() && self.alone_timers[timer].runs > 0 {
            let may = self.run_may_go_alone(entry);
            self.alone_timers[timer].may_go_alone = Some(may);
        }
        let timed = self.alone_timers[timer].may_go_alone != Some(false);
        let alone =
            self.alone_timers[timer].may_go_alone == Some(true) && self.alone_timers[timer].alone();
        let options = LaunchOptions::default().alone_if(alone);
        let started = Instant::now();
        self.run_launches(entry, &options)?;
        if timed {
            self.alone_timers[timer].record(alone, started.elapsed());
        }
        Ok(())
    }

    /// Whether a run of `entry` may go alone: its launches would use several threads,
    /// and each computes the same bits on them as on one. Asked after a first run, which
    /// made every launch's plan at this batch size.
    fn run_may_go_alone(&self, entry: &Entry) -> bool {
        let options = LaunchOptions::default();
        if options.most_threads() <= 1 {
            return false;
        }
        let mut uses_threads = false;
        for launch in &entry.launches {
            let Some(plan) = self.plans.get(launch.kernel).and_then(Option::as_ref) else {
                return false;
            };
            // A launch of a loop may run seated, its share a seat's.
            if plan.batch() != self.batch
                || !plan.same_bits_as_one_thread(&options, false)
                || !plan.same_bits_as_one_thread(&options, true)
            {
                return false;
            }
            uses_threads |= plan.threads(&options) > 1;
        }
        uses_threads
    }

    /// Runs `entry`'s launches in order under `options`, its loops seated where they
    /// can be.
    fn run_launches(&mut self, entry: &Entry, options: &LaunchOptions) -> Result<(), RunError> {
        // One list of pointers, refilled for each launch, and one of row-major copies.
        let mut pointers = Vec::new();
        let mut copies: Vec<Option<*const f32>> = Vec::new();
        let mut schedule = entry.schedule();
        while let Some((index, t)) = schedule.next() {
            let first_of_loop = entry
                .loops
                .iter()
                .find(|lp| lp.start == index && lp.count > 0 && t == lp.index(0));
            if let Some(lp) = first_of_loop
                && self.run_seated(entry, lp, options)?
            {
                let launches = (lp.end.min(entry.launches.len()) - lp.start) as u64;
                for _ in 1..lp.count * launches {
                    schedule.next();
                }
                continue;
            }
            let launch = &entry.launches[index];
            let (kernel, functions) = self.code(launch)?;
            self.bind(launch, kernel, t, &mut pointers)?;
            self.make_plan(launch.kernel, kernel)?;
            let plan = planned(self.plans, launch.kernel)?;
            copies.clear();
            let store = match self.changes_weights {
                false => RowMajorStore::Kept(self.row_major),
                true => RowMajorStore::Fresh(self.launch_copies),
            };
            // SAFETY: `pointers` are this launch's, bound as computed above; a kept copy
            // is only made for an entry that writes no parameter.
            unsafe {
                row_major_copies(
                    self.manifest,
                    launch,
                    plan,
                    &pointers,
                    self.batch,
                    store,
                    &mut copies,
                )?
            };
            let started = self.profile.is_some().then(Instant::now);
            // SAFETY: see the session's safety argument: each pointer addresses storage
            // of at least the size of the slot it is bound to at `batch`, `functions` are
            // `kernel`'s code and `plan` was made for `kernel` at `batch`; each copy is
            // the row-major form of its parameter's current values (made since the
            // weights last changed).
            unsafe { cpu::launch_planned(kernel, plan, functions, &pointers, &copies, options) };
            if let Some(started) = started {
                self.record(launch.kernel, started.elapsed());
            }
        }
        Ok(())
    }

    /// Runs loop `lp` of `entry` seated (see the module docs); false, having run
    /// nothing, when it should run launch by launch.
    fn run_seated(
        &mut self,
        entry: &Entry,
        lp: &Loop,
        options: &LaunchOptions,
    ) -> Result<bool, RunError> {
        let options = options.clone();
        let body = entry
            .launches
            .get(lp.start..lp.end.min(entry.launches.len()))
            .unwrap_or_default();
        let mut threads = 1;
        for launch in body {
            let (kernel, _) = self.code(launch)?;
            let writes_persistent =
                launch
                    .bindings
                    .iter()
                    .zip(&kernel.buffers)
                    .any(|(&b, decl)| {
                        decl.access != Access::Read
                            && matches!(
                                self.manifest
                                    .buffers
                                    .get(storage_of(self.manifest, b))
                                    .map(|i| &i.location),
                                Some(Location::Persistent { .. })
                            )
                    });
            self.make_plan(launch.kernel, kernel)?;
            let plan = planned(self.plans, launch.kernel)?;
            let fresh_copy = self.changes_weights
                && plan
                    .transposed_rhs()
                    .any(|(_, _, calls)| calls >= FRESH_COPY_MIN_CALLS);
            if writes_persistent || fresh_copy {
                return Ok(false);
            }
            threads = threads.max(plan.threads(&options));
        }
        if threads <= 1 {
            return Ok(false);
        }
        let shares = self.seat_shares(body, threads)?;
        // A loop of barriers runs alone when that has been faster lately.
        let timer =
            (shares == SeatShares::Launches).then(|| self.alone_timer(entry, Some(lp.start)));
        if let Some(t) = timer
            && self.alone_timers[t].may_go_alone.is_none()
        {
            let plans: &[Option<LaunchPlan>] = self.plans;
            let may = body.iter().all(|launch| {
                planned(plans, launch.kernel)
                    .is_ok_and(|plan| plan.same_bits_as_one_thread(&options, true))
            });
            self.alone_timers[t].may_go_alone = Some(may);
        }
        let timer = timer.filter(|&t| self.alone_timers[t].may_go_alone == Some(true));
        let alone = timer.is_some_and(|t| self.alone_timers[t].alone());
        let options = options.alone_if(alone);
        let started = Instant::now();
        // A long loop runs as several seated runs, so that what is bound stays small.
        let per_run = (MOST_BOUND_LAUNCHES / body.len().max(1) as u64).max(1);
        let mut first = 0;
        while first < lp.count {
            let iterations = first..(first + per_run).min(lp.count);
            first = iterations.end;
            self.run_iterations_seated(body, lp, iterations, &options, shares)?;
        }
        if let Some(t) = timer {
            self.alone_timers[t].record(alone, started.elapsed());
        }
        Ok(true)
    }

    /// The position of the timer of `entry`'s loop starting at launch `start` (none: the
    /// whole run) at this batch size in `alone_timers`, made if new.
    fn alone_timer(&mut self, entry: &Entry, start: Option<usize>) -> usize {
        let found = self.alone_timers.iter().position(|t| {
            let (name, first, batch) = &t.key;
            name == &entry.name && *first == start && *batch == self.batch
        });
        found.unwrap_or_else(|| {
            let key = (entry.name.clone(), start, self.batch);
            self.alone_timers.push(AloneTimer::new(key));
            self.alone_timers.len() - 1
        })
    }

    /// How the seats of a loop whose launches are `body` share them, at most `threads`
    /// seats: by batch rows ([`SeatShares::BatchRows`]) when every launch's points are
    /// batch rows, every buffer the loop writes, and every buffer sharing its storage, is
    /// touched only at its points' rows with one row length and one row grid (a window
    /// moves by whole batches of rows), and each seat's rows of every product are enough
    /// to be computed as the whole product; launch by launch otherwise.
    fn seat_shares(&mut self, body: &[Launch], threads: u64) -> Result<SeatShares, RunError> {
        let batch = self.batch;
        // The fewest rows a seat gets (`threads` seats at most).
        let seat_rows = batch / threads.max(1);
        if threads < 2 || seat_rows == 0 {
            return Ok(SeatShares::Launches);
        }
        /// A slot's storage in the arena or I/O block (a window's: its parent's, whose
        /// start is where its row grid starts), and its row length in elements if its
        /// every access is row-aligned.
        struct Touch {
            start: usize,
            end: usize,
            row: Option<u64>,
            writes: bool,
        }
        let mut touches = Vec::new();
        for launch in body {
            let (kernel, _) = self.code(launch)?;
            let plan = planned(self.plans, launch.kernel)?;
            let Some(rows) = plan.batch_rows() else {
                return Ok(SeatShares::Launches);
            };
            if !plan.rows_split_keeps_bits(seat_rows) {
                return Ok(SeatShares::Launches);
            }
            for ((&bound, decl), &row) in launch.bindings.iter().zip(&kernel.buffers).zip(rows) {
                let root = storage_of(self.manifest, bound);
                let in_arena = matches!(
                    self.manifest.buffers.get(root).map(|b| &b.location),
                    Some(Location::Arena { .. } | Location::Io { .. })
                );
                // A seated loop writes no persistent buffer (see `run_seated`), and a
                // parameter shares no storage with the arena.
                if !in_arena {
                    continue;
                }
                let Some((start, len)) = self.blocks.region(self.manifest, root, batch) else {
                    return Ok(SeatShares::Launches);
                };
                // A window of one slice moves by whole copies of itself, `batch` rows.
                let whole_rows = match self.manifest.buffers.get(bound).map(|b| &b.location) {
                    Some(Location::Window(w)) => w.span == 1,
                    _ => true,
                };
                touches.push(Touch {
                    start,
                    end: start + len,
                    row: row.filter(|_| whole_rows),
                    writes: decl.access != Access::Read,
                });
            }
        }
        for w in touches.iter().filter(|t| t.writes) {
            let Some(r) = w.row else {
                return Ok(SeatShares::Launches);
            };
            let rows_bytes = (batch as usize)
                .saturating_mul(r as usize)
                .saturating_mul(4);
            for t in &touches {
                let overlaps = t.start < w.end && w.start < t.end;
                let same_grid = t.row == Some(r)
                    && rows_bytes > 0
                    && t.start.abs_diff(w.start) % rows_bytes == 0;
                if overlaps && !same_grid {
                    return Ok(SeatShares::Launches);
                }
            }
        }
        Ok(SeatShares::BatchRows)
    }

    /// Runs `iterations` of loop `lp`, whose launches are `body`, seated.
    fn run_iterations_seated(
        &mut self,
        body: &[Launch],
        lp: &Loop,
        iterations: std::ops::Range<u64>,
        options: &LaunchOptions,
        shares: SeatShares,
    ) -> Result<(), RunError> {
        // Each body launch's kernel, code and row-major copies, once: the copies are of
        // parameters, bound whole, the same at every iteration.
        let mut slots = Vec::new();
        let mut resolved = Vec::with_capacity(body.len());
        for launch in body {
            let (kernel, functions) = self.code(launch)?;
            let mut copies = Vec::new();
            if !self.changes_weights {
                self.bind(launch, kernel, lp.index(iterations.start), &mut slots)?;
                let plan = planned(self.plans, launch.kernel)?;
                // SAFETY: `slots` are this launch's; the entry writes no parameter.
                unsafe {
                    row_major_copies(
                        self.manifest,
                        launch,
                        plan,
                        &slots,
                        self.batch,
                        RowMajorStore::Kept(self.row_major),
                        &mut copies,
                    )?
                };
            }
            resolved.push((kernel, functions, copies));
        }
        // Every iteration's slots, then the launches that read them.
        let mut pointers = Vec::new();
        let mut bound =
            Vec::with_capacity(body.len() * (iterations.end - iterations.start) as usize);
        for i in iterations {
            for (launch, (kernel, ..)) in body.iter().zip(&resolved) {
                self.bind(launch, kernel, lp.index(i), &mut slots)?;
                let start = pointers.len();
                pointers.extend_from_slice(&slots);
                bound.push(start..pointers.len());
            }
        }
        let plans: &[Option<LaunchPlan>] = self.plans;
        let seated = bound
            .iter()
            .zip(body.iter().zip(&resolved).cycle())
            .map(|(slots, (launch, (kernel, functions, copies)))| {
                Ok(cpu::SeatedLaunch {
                    kernel,
                    plan: planned(plans, launch.kernel)?,
                    functions,
                    bufs: &pointers[slots.clone()],
                    row_major: copies,
                })
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        let mut times = vec![Duration::ZERO; bound.len()];
        let timed = self.profile.is_some().then_some(times.as_mut_slice());
        // SAFETY: as for a launch in `run`: each launch bound above for its iteration
        // (no launch of the loop writes a persistent buffer, so none moves).
        unsafe { cpu::launch_seated(&seated, options, shares, timed) };
        for (launch, time) in body.iter().cycle().zip(times) {
            self.record(launch.kernel, time);
        }
        Ok(())
    }

    /// Adds a launch of kernel `kernel` that took `time` to the profile, if profiling.
    fn record(&mut self, kernel: usize, time: Duration) {
        if let Some((total, count)) = self.profile.as_deref_mut().and_then(|p| p.get_mut(kernel)) {
            *total += time;
            *count += 1;
        }
    }

    /// `launch`'s kernel and its code.
    fn code(&self, launch: &Launch) -> Result<(&'a Kernel, &'a [KernelFn]), RunError> {
        let (manifest, functions) = (self.manifest, self.functions);
        let kernel = manifest
            .kernels
            .get(launch.kernel)
            .ok_or_else(|| internal(format!("no kernel #{}", launch.kernel)))?;
        let functions = functions
            .get(launch.kernel)
            .and_then(Option::as_ref)
            .filter(|fns| fns.len() == kernel.part_count())
            .ok_or_else(|| internal(format!("no code for kernel `{}`", kernel.name)))?;
        Ok((kernel, functions))
    }

    /// Makes the plan of `kernel` (number `index`) for this run if the one kept is not.
    fn make_plan(&mut self, index: usize, kernel: &Kernel) -> Result<(), RunError> {
        // An entry that writes no parameter keeps row-major copies of its transposed
        // weights (`row_major_copies`), which changes how a plan cuts products.
        let kept = !self.changes_weights;
        let batch = self.batch;
        match self.plans.get_mut(index) {
            Some(Some(plan)) if plan.batch() == batch && plan.copies() == kept => Ok(()),
            Some(slot) => {
                *slot = Some(LaunchPlan::with_copies(kernel, batch, kept));
                Ok(())
            }
            None => Err(internal(format!("no kernel #{index}"))),
        }
    }

    /// Fills `pointers` with the storage of `launch`'s slots at loop index `t` (0 outside
    /// loops).
    fn bind(
        &mut self,
        launch: &Launch,
        kernel: &Kernel,
        t: u64,
        pointers: &mut Vec<*mut u8>,
    ) -> Result<(), RunError> {
        let batch = self.batch;
        let too_large = |what: &str| RunError::TooLarge {
            batch,
            what: what.to_string(),
        };
        pointers.clear();
        for &bound in &launch.bindings {
            let info = self
                .manifest
                .buffers
                .get(bound)
                .ok_or_else(|| internal(format!("no buffer #{bound}")))?;
            // A window is its parent's storage, `index(t)` slices of its own size in.
            let len = info
                .elements(batch)
                .and_then(|n| n.checked_mul(info.dtype.size_bytes()))
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| too_large(&info.name))?;
            let (id, skip) = match &info.location {
                Location::Window(w) => {
                    let skip = w
                        .offset(t, len as u64)
                        .and_then(|s| usize::try_from(s).ok())
                        .ok_or_else(|| too_large(&info.name))?;
                    (w.parent, skip)
                }
                _ => (bound, 0),
            };
            let root = self
                .manifest
                .buffers
                .get(id)
                .ok_or_else(|| internal(format!("no buffer #{id}")))?;
            let outside = || internal(format!("`{}` is outside its storage", info.name));
            let pointer = match &root.location {
                Location::Arena { .. } | Location::Io { .. } => {
                    let (offset, parent_len) = self
                        .blocks
                        .region(self.manifest, id, batch)
                        .ok_or_else(|| too_large(&root.name))?;
                    let start = offset.checked_add(skip).ok_or_else(outside)?;
                    if start
                        .checked_add(len)
                        .is_none_or(|end| end > self.arena_len)
                        || skip.checked_add(len).is_none_or(|end| end > parent_len)
                    {
                        return Err(outside());
                    }
                    // In bounds of the arena allocation, checked just above.
                    self.base.wrapping_add(start)
                }
                Location::Persistent { .. } => {
                    let end = skip.checked_add(len).ok_or_else(outside)?;
                    // A buffer this launch also stores to (through any slot) is never
                    // read in place: every slot must see the same storage.
                    let reads_only =
                        !launch
                            .bindings
                            .iter()
                            .zip(&kernel.buffers)
                            .any(|(&b, decl)| {
                                decl.access != Access::Read && storage_of(self.manifest, b) == id
                            });
                    let host = self
                        .host
                        .as_deref_mut()
                        .ok_or_else(|| internal(format!("no storage for `{}`", root.name)))?;
                    match host.initial_bytes(id).filter(|_| reads_only) {
                        // Not copied yet and only read by this launch: the artifact's
                        // bytes, in place. The kernel never stores through this pointer
                        // (a store to a read-only slot fails kernel validation).
                        Some(bytes) => bytes
                            .get(skip..end)
                            .ok_or_else(outside)?
                            .as_ptr()
                            .cast_mut(),
                        None => host
                            .get_mut(id)
                            .map(|t| t.data.as_bytes_mut())
                            .ok_or_else(|| internal(format!("no storage for `{}`", root.name)))?
                            .get_mut(skip..end)
                            .ok_or_else(outside)?
                            .as_mut_ptr(),
                    }
                }
                Location::Window(_) => return Err(outside()),
            };
            pointers.push(pointer);
        }
        Ok(())
    }
}

/// The buffer whose storage buffer `id` is: its parent for a window, else itself.
fn storage_of(manifest: &Manifest, id: usize) -> usize {
    match manifest.buffers.get(id).map(|b| &b.location) {
        Some(Location::Window(w)) => w.parent,
        _ => id,
    }
}

/// Sets `copies[body]` to the row-major copy of the parameter that each product of
/// `launch` reads transposed ([`LaunchPlan::transposed_rhs`]): kept ones made when
/// not yet in the store, fresh ones made now, from the parameter's current values.
///
/// # Safety
/// `pointers` must be the launch's slot pointers, each addressing its buffer's storage at
/// `batch`; for a kept copy nothing may write a parameter while the entry runs (an entry
/// that changes no parameter), and a fresh one is only valid for this launch (whose
/// parts write no slot another part reads, so none writes the copied parameter).
unsafe fn row_major_copies(
    manifest: &Manifest,
    launch: &Launch,
    plan: &LaunchPlan,
    pointers: &[*mut u8],
    batch: u64,
    mut store: RowMajorStore<'_>,
    copies: &mut Vec<Option<*const f32>>,
) -> Result<(), RunError> {
    let mut fresh = 0;
    for (body, rhs, calls) in plan.transposed_rhs() {
        if matches!(store, RowMajorStore::Fresh(_)) && calls < FRESH_COPY_MIN_CALLS {
            continue;
        }
        let Some(&id) = launch.bindings.get(rhs.slot) else {
            continue;
        };
        let Some(info) = manifest.buffers.get(id) else {
            continue;
        };
        // A parameter bound whole (no window).
        if !matches!(info.location, Location::Persistent { .. }) {
            continue;
        }
        let values = || {
            let elements = info
                .elements(batch)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| RunError::TooLarge {
                    batch,
                    what: info.name.clone(),
                })?;
            let fits = rhs
                .end()
                .and_then(|end| usize::try_from(end).ok())
                .is_some_and(|end| end <= elements);
            let (Some(&pointer), true) = (pointers.get(rhs.slot), fits) else {
                return Err(internal(format!(
                    "`{}` is smaller than the product reading it",
                    info.name
                )));
            };
            // SAFETY: the pointer addresses this parameter's storage of `elements` f32
            // values (the caller's contract), which nothing writes meanwhile.
            Ok(unsafe { std::slice::from_raw_parts(pointer.cast::<f32>(), elements) })
        };
        let copy = match &mut store {
            RowMajorStore::Kept(kept) => match kept.entry((id, TransposedRhs { slot: 0, ..rhs })) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut().as_ptr(),
                std::collections::hash_map::Entry::Vacant(v) => v
                    .insert(rhs.row_major(values()?).into_boxed_slice())
                    .as_ptr(),
            },
            RowMajorStore::Fresh(scratch) => {
                if scratch.len() <= fresh {
                    scratch.push(Vec::new());
                }
                let copy = &mut scratch[fresh];
                fresh += 1;
                rhs.row_major_into(values()?, copy);
                copy.as_ptr()
            }
        };
        if copies.len() <= body {
            copies.resize(body + 1, None);
        }
        copies[body] = Some(copy);
    }
    Ok(())
}

/// The plan of kernel `index` that `CpuLaunches::make_plan` made.
fn planned(plans: &[Option<LaunchPlan>], index: usize) -> Result<&LaunchPlan, RunError> {
    plans
        .get(index)
        .and_then(Option::as_ref)
        .ok_or_else(|| internal(format!("no plan for kernel #{index}")))
}

fn internal(message: String) -> RunError {
    RunError::Internal(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `timer` for `runs` runs, each taking `seated` or `alone` microseconds as it
    /// goes, and returns how many went alone.
    fn drive(timer: &mut AloneTimer, runs: u64, seated: u64, alone: u64) -> u64 {
        let mut went_alone = 0;
        for _ in 0..runs {
            let a = timer.alone();
            went_alone += u64::from(a);
            let took = if a { alone } else { seated };
            timer.record(a, Duration::from_micros(took));
        }
        went_alone
    }

    #[test]
    fn a_loop_of_barriers_goes_alone_while_that_is_faster_and_back_when_not() {
        let mut timer = AloneTimer::new(("infer".into(), Some(2), 1));
        // The first runs go with the seats; the cold first run is not held against them.
        assert!(!timer.alone());
        timer.record(false, Duration::from_millis(50));
        // Seats faster (alone 1.54x as slow): alone only for the probes, two runs every
        // ~215 runs (0.5% of the time spent in slower runs).
        assert_eq!(drive(&mut timer, 511, 130, 200), 6);
        // The CPUs slow together: as soon as the seats' runs show it, alone.
        let alone = drive(&mut timer, 512, 250, 200);
        assert!(alone >= 480, "{alone}");
        // Fast together again: back with the seats at the next probe, within ~100 runs.
        let alone = drive(&mut timer, 512, 130, 200);
        assert!(alone <= 110, "{alone}");
    }

    #[test]
    fn probes_come_as_often_as_their_cost_allows() {
        // Alone twice as slow: a probe every ~400 runs.
        let mut timer = AloneTimer::new(("train_step".into(), None, 128));
        timer.record(false, Duration::from_millis(5));
        assert_eq!(drive(&mut timer, 1000, 100, 200), 6);
        // As fast either way: a probe every 16 runs (and no loss when it happens).
        let mut timer = AloneTimer::new(("train_step".into(), None, 32));
        timer.record(false, Duration::from_millis(5));
        let alone = drive(&mut timer, 1000, 100, 100);
        assert!((100..=120).contains(&alone), "{alone}");
    }
}
