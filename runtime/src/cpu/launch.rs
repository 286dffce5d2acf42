//! Running one compiled kernel over its iteration space, split across threads.
//!
//! The generated function runs a range of rows of the kernel's space (its outermost
//! dimension, or (batch, n) pairs: see `strata_kernels::cpu`), so a launch cuts the rows
//! into contiguous chunks, four per thread, which the calling thread and the launch team's
//! (`team.rs`) take in turn. A point's result never depends on how the rows are cut or who
//! runs them: a map point is computed alone, and a reduction's folded dimensions are never
//! split (only the output rows are). So results are bitwise identical for any thread count.
//!
//! # Contractions
//! The matrix product of a contraction is a call into the `gemm` crate, not generated
//! code: on this CPU (AMD Zen 5, AVX-512) `gemm`'s micro-kernels reach ~93% of the f32 peak
//! of a core, while the best Cranelift matmul reached ~20%, since Cranelift's vectors stop
//! at 128 bits (see DESIGN.md, "Kernel IR and emitters"; on an AVX2-only host, a 2048 x 512
//! x 2048 product with a bias + ReLU epilogue ran at ~78 GFLOP/s on one core, ~80% of
//! that host's peak). The product is computed block by
//! block of output rows, and the generated epilogue runs on each block right after its
//! product, while the block is still in cache. The blocks are a function of the shapes
//! only, and each `gemm` call is single-threaded, so the thread count does not change
//! the results there either.

use super::KernelFn;
use super::team::{Seat, Team};
use gemm::Parallelism;
use smallvec::SmallVec;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use strata_kernels::batch_rows::{BatchRows, batch_rows};
use strata_kernels::cost;
use strata_kernels::ir::{
    BinaryOp, Contraction, Expr, Index, Kernel, KernelBody, MatrixOperand, Term,
};

/// How a launch may use threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// The most threads a launch uses (the calling thread included); None: the host's
    /// count (or `--threads`), asked only when a launch has work for more than one, so a
    /// small model's run never reads the files under /proc that hold it.
    pub threads: Option<usize>,
    /// A launch uses one more thread per this much work, in element operations
    /// ([`strata_kernels::cost`]: a copy's point is two, a `tanh`'s about eighteen, a
    /// product's multiply-add a half).
    pub min_work_per_thread: u64,
}

impl Default for LaunchOptions {
    /// All the cores, and threads only for work large enough to pay for starting them.
    fn default() -> Self {
        LaunchOptions {
            threads: None,
            min_work_per_thread: 1 << 14,
        }
    }
}

impl LaunchOptions {
    /// The most threads a launch under these options may use, the caller included.
    pub fn most_threads(&self) -> u64 {
        self.threads.unwrap_or_else(host_threads) as u64
    }

    /// These options, on the calling thread alone if `alone`.
    pub fn alone_if(self, alone: bool) -> LaunchOptions {
        match alone {
            true => LaunchOptions {
                threads: Some(1),
                ..self
            },
            false => self,
        }
    }

    /// What the seats of a seated loop under these options go by: for seats, which meet
    /// after every launch anyway, a quarter of the work a thread takes to pay for its
    /// fork and join.
    fn seated(&self) -> LaunchOptions {
        LaunchOptions {
            threads: self.threads,
            min_work_per_thread: self.min_work_per_thread / SEATED_WORK_SHARE,
        }
    }
}

/// The number of threads this host runs in parallel, asked once: it does not change
/// while the process runs, and asking reads files under /proc and /sys.
fn host_threads() -> usize {
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

static THREADS: OnceLock<usize> = OnceLock::new();

/// Fixes how many threads CPU launches use, the caller included (`strata bench
/// --threads N`), instead of the host's count. It must come before the first session is
/// made: the count is fixed once, so false means it came too late and is ignored.
pub fn set_threads(threads: usize) -> bool {
    THREADS.set(threads.max(1)).is_ok()
}

/// Why a `--threads N` option cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadsError {
    /// `--threads 0`: the user's mistake.
    Zero,
    /// Applied after the first session: an internal ordering bug.
    TooLate,
}

impl std::fmt::Display for ThreadsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThreadsError::Zero => "--threads takes a count of at least 1",
            ThreadsError::TooLate => {
                "--threads came after the first CPU session (an internal ordering bug)"
            }
        })
    }
}

/// Applies a command's `--threads` option (nothing when it is absent): the one check
/// every command with the option shares.
pub fn apply_threads_option(threads: Option<usize>) -> Result<(), ThreadsError> {
    match threads {
        Some(0) => Err(ThreadsError::Zero),
        Some(n) if !set_threads(n) => Err(ThreadsError::TooLate),
        _ => Ok(()),
    }
}

/// Rows of `m` per `gemm` call in an unbatched contraction: at least a few blocks per
/// matrix so that threads can share it, but each `gemm` call packs the whole right-hand
/// operand again, so not too few rows. Measured on a 2048 x 512 x 2048 product (AVX2
/// host, one thread): 64-row blocks reach 80% of the speed of one whole-matrix call,
/// 256-row blocks 95%.
fn contract_row_block(m: u64) -> u64 {
    m.div_ceil(8).clamp(64, 256)
}

/// Launches with work for several threads that run on the caller alone before the team
/// starts: starting a thread (and a spinning one at that) costs more than a short-lived
/// process's few launches save. A built W1 executable's batch-1 `infer` (three
/// launches) took 2.7 ms from process start without the team, 3.4 ms with it. Counts
/// down to 0 (and below by at most the launches racing the last decrement).
static LAUNCHES_BEFORE_TEAM: AtomicI64 = AtomicI64::new(8);

/// Rows per `gemm` call of an unbatched product of 128 to 256 rows whose right-hand
/// operand is row-major (`ContractPlan::unbatched_row_block`). `gemm` reads such an operand
/// in place; short calls keep the left-hand rows it packs in the first-level cache. Two
/// threads, `128 x 784 x 256`: 16-row calls 230 us, 64-row calls 248 us (`128 x 256 x 256`:
/// 80 against 85 us); over 36 shapes of 128 and 256 rows, 0.75-1.0x the time of 64-row
/// calls. W1's batch-128 inference (a session's row-major weight copies): 0.354-0.356 ->
/// 0.335-0.340 ms. Fewer rows (a recurrent step's 32) gain nothing, nor do few columns
/// (W1's 10 logits: 7.9 us in 64-row blocks, 13-14 us in 16-row ones).
const SHORT_ROW_BLOCK: u64 = 16;

/// The most columns one `gemm` call computes from a right-hand operand it reads transposed
/// (`[n, k]` stored, column stride `k`: a training step's dense weight): `gemm` packs such
/// an operand a call's columns at a time, and a narrow panel stays in the first-level
/// cache. Two threads, each on half the columns, 16 at a time against all at once:
/// `128 x 512 x 256` 0.61x the time, `128 x 256 x 256` 0.80x, `256 x 512 x 512` 0.74x,
/// `128 x 784 x 256` 0.99x (48 shapes of 32-256 rows, depth 128-784, 128-512 columns:
/// 0.38-1.0x, but for noise). W1's training step: its second layer's forward product
/// 108-115 -> 93-98 us.
const TRANSPOSED_RHS_CALL_COLUMNS: u64 = 16;

/// The most columns one `gemm` call computes when it reads its left-hand operand
/// transposed (a weight gradient's `gᵀ`, `[k, m]` stored), as
/// [`TRANSPOSED_RHS_CALL_COLUMNS`]. 64 columns at a time against all at once: `256 x 128
/// x 784` 0.94x the time, `256 x 256 x 512` 0.76x (48 shapes of 128-512 rows, depth
/// 32-512, 128-784 columns: 0.56-1.05x, and 0.93x on average). W1's training step: its
/// first weight's gradient and update 318-330 -> 304-307 us.
const TRANSPOSED_LHS_CALL_COLUMNS: u64 = 64;

/// The columns by which a product is cut between threads or into `gemm` calls: a vector
/// of `gemm`'s.
const COLUMN_GROUP: u64 = 16;

/// `gemm` sums a call of at most 64 x 64 outputs at most 512 deep at a time, a larger
/// one as deep as its first-level cache suggests (392 of 784 here): deeper than this, a
/// product's threads take ranges of at least [`DEEP_RANGE_GROUPS`] (`column_bounds`).
const GEMM_SMALL_CALL_DEPTH: u64 = 512;

/// The fewest column groups in a thread's range of a product deeper than
/// [`GEMM_SMALL_CALL_DEPTH`]: 80 columns, more than the 64 of a call `gemm` sums in
/// blocks of at most 512, so that a thread's call sums its outputs as one thread's call
/// of all the columns does (one of at most 64 whole columns does so too).
const DEEP_RANGE_GROUPS: u64 = 5;

/// Above this many rows, `gemm` computes every call of at least a [`COLUMN_GROUP`] of
/// columns alike (its depth in blocks set by the depth alone, never as dot products),
/// so a product's columns can be cut into calls anywhere without changing a bit
/// (tested); at most this many, a call of at most 64 columns sums a deep product in
/// other blocks than a wider one ([`GEMM_SMALL_CALL_DEPTH`]).
const NARROW_CALL_MIN_ROWS: u64 = 64;

/// The smallest range of a team's launch ([`guided_bounds`]) holds at least this
/// fraction of a thread's share of the work.
const GUIDED_SMALLEST_SHARE: u64 = 8;

/// The smallest right-hand operand (`k x n` elements) whose product of at most 256 rows
/// is one block split by columns rather than row blocks (`ContractPlan::unbatched_row_block`).
const ONE_BLOCK_MIN_RHS: u64 = 1 << 14;

/// How much less work a seat takes than a thread of a team (`Crew::staff`).
const SEATED_WORK_SHARE: u64 = 4;

/// A launch's jobs held without a heap allocation: a kernel's parts, most often few.
const INLINE_JOBS: usize = 8;

/// The bounds of a launch's ranges (threads or chunks plus one), without a heap
/// allocation for up to 16 ranges: a seated loop's every launch on every seat cuts them.
type Bounds = SmallVec<[u64; 17]>;

/// The fewest batch rows, and columns, of a product that a seat computes alone in a
/// sequence shared by batch rows ([`SeatShares::BatchRows`]): `gemm` computes a call of
/// at most 16 rows and 256 outputs as dot products (another summation order), so a
/// share must stay clear of that for its bits to be the whole product's.
const BY_ROWS_MIN_ROWS: u64 = 8;
const BY_ROWS_MIN_COLUMNS: u64 = 64;

/// The fewest columns of a product worth a thread of their own (in a product split by
/// columns, see `Job::run_by_columns`).
const MIN_COLUMNS_PER_THREAD: u64 = 32;

/// `gemm` computes a call of at most this many rows and [`GEMM_DOT_MOST_OUTPUTS`] outputs
/// as dot products, summing each output in another order than a larger call does: the
/// one case where the calls a product is cut into change its bits (docs/design.md,
/// "Contractions on the CPU").
const GEMM_DOT_MOST_ROWS: u64 = 16;
const GEMM_DOT_MOST_OUTPUTS: u64 = 256;

/// Runs one kernel over its whole iteration space, with [`LaunchOptions::default`].
///
/// # Safety
/// `bufs[slot]` must point to storage for the kernel's buffer `slot`, large enough for its
/// shape at `batch`, and `fns` must be the compiled code of `kernel`, one function per
/// part in order (from a `JitCode` that is still alive; see
/// [`Kernel::function_names`](strata_kernels::ir::Kernel::function_names)). Points of
/// different outermost rows must not store to the same element (true of every kernel
/// whose stores are indexed by its space).
pub unsafe fn launch(kernel: &Kernel, fns: &[KernelFn], bufs: &[*mut u8], batch: u64) {
    // SAFETY: the caller upholds the same contract.
    unsafe { launch_with(kernel, fns, bufs, batch, &LaunchOptions::default()) }
}

/// [`launch`] with explicit threading options.
///
/// The units of work are the rows of each body (a contraction's row blocks), the bodies'
/// units laid end to end: the parts of a kernel share one split across threads, so a
/// launch starts its threads once however many parts it has. The split gives each thread
/// an equal share of the work, not of the units: a unit of a product may be thousands of
/// times a unit of a map.
///
/// # Safety
/// As for [`launch`].
pub unsafe fn launch_with(
    kernel: &Kernel,
    fns: &[KernelFn],
    bufs: &[*mut u8],
    batch: u64,
    options: &LaunchOptions,
) {
    let plan = LaunchPlan::new(kernel, batch);
    // SAFETY: the caller upholds the same contract; the plan is this kernel's at `batch`.
    unsafe { launch_planned(kernel, &plan, fns, bufs, &[], options) }
}

/// What launching a kernel at one batch size takes from its shapes alone: each body's
/// units and work, and how a contraction's product is cut into `gemm` calls (whose fold
/// checks evaluate the operands' offsets at every batch index). A session computes it
/// once per kernel and batch size instead of at every launch.
pub struct LaunchPlan {
    batch: u64,
    copies: bool,
    bodies: Vec<BodyPlan>,
    /// Which slots the kernel touches only at its points' batch rows, if its points are
    /// batch rows (see [`strata_kernels::batch_rows`]).
    batch_rows: Option<BatchRows>,
}

/// One body's share of a [`LaunchPlan`].
struct BodyPlan {
    units: u64,
    work: u64,
    contract: Option<ContractPlan>,
}

impl LaunchPlan {
    /// A plan for launches given no row-major copies ([`TransposedRhs`]).
    pub fn new(kernel: &Kernel, batch: u64) -> LaunchPlan {
        LaunchPlan::with_copies(kernel, batch, false)
    }

    /// A plan for launches given a row-major copy of every transposed right-hand
    /// operand that [`LaunchPlan::transposed_rhs`] lists (`copies`, as an inference
    /// session keeps them), or of none: whether a product packs a transposed operand at
    /// each of its row blocks decides how it is cut (`ContractPlan::unbatched_row_block`).
    pub fn with_copies(kernel: &Kernel, batch: u64, copies: bool) -> LaunchPlan {
        let bodies = kernel
            .body
            .bodies()
            .iter()
            .map(|body| BodyPlan::new(kernel, body, batch, copies))
            .collect();
        LaunchPlan {
            batch,
            copies,
            bodies,
            batch_rows: batch_rows(kernel, batch),
        }
    }

    /// Per slot, the row length of a slot that every point reads and writes only at its
    /// own batch row; `None` when the kernel's points are not batch rows.
    pub fn batch_rows(&self) -> Option<&[Option<u64>]> {
        self.batch_rows.as_ref().map(|r| r.slots.as_slice())
    }

    /// Whether a share of `rows` batch rows of every product of the plan is computed as
    /// the whole product is: at least 8 rows and 64 columns (`BY_ROWS_MIN_ROWS`).
    pub fn rows_split_keeps_bits(&self, rows: u64) -> bool {
        self.bodies.iter().all(|b| match &b.contract {
            None => true,
            Some(c) => rows >= BY_ROWS_MIN_ROWS && c.n >= BY_ROWS_MIN_COLUMNS,
        })
    }

    /// Whether launches of this plan under `options` compute the same bits as on one
    /// thread (by a team, or by seats of a seated loop if `seated`). A launch's points
    /// never depend on how its rows are cut, and a product's `gemm` calls are cut where
    /// one thread would cut them, but for one case: a product of few rows run by columns
    /// gives each thread one call of its range of columns, and `gemm` sums a call of at
    /// most [`GEMM_DOT_MOST_ROWS`] rows and [`GEMM_DOT_MOST_OUTPUTS`] outputs as dot
    /// products, in another order than a larger call (docs/design.md, "Contractions on
    /// the CPU"). A plan with such a product, or with a window's product run by columns
    /// (conservatively), answers false.
    pub fn same_bits_as_one_thread(&self, options: &LaunchOptions, seated: bool) -> bool {
        // A seated run has as many seats as workers came in time: any count up to all.
        let counts = match seated {
            false => vec![options.clone()],
            true => (2..=options.most_threads())
                .map(|n| LaunchOptions {
                    threads: Some(n as usize),
                    ..options.seated()
                })
                .collect(),
        };
        counts.iter().all(|options| {
            let staff = |units: u64, work: u64| thread_count(options, units, work);
            self.bodies.iter().all(|b| {
                b.contract.as_ref().is_none_or(|c| {
                    column_threads(c, b.units, b.work, staff)
                        .is_none_or(|threads| c.columns_keep_bits(threads, b.units))
                })
            })
        })
    }

    /// The batch size it was made for.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// Whether it was made for launches given row-major copies.
    pub fn copies(&self) -> bool {
        self.copies
    }

    /// The most threads a launch of this plan uses under `options` (the calling thread
    /// included): what [`launch_planned`] decides, body by body.
    pub fn threads(&self, options: &LaunchOptions) -> u64 {
        let staff = |units: u64, work: u64| thread_count(options, units, work);
        let (mut units, mut work, mut most) = (0u64, 0u64, 1u64);
        for body in &self.bodies {
            let by_columns = body
                .contract
                .as_ref()
                .and_then(|c| column_threads(c, body.units, body.work, staff));
            match by_columns {
                Some(threads) => most = most.max(threads),
                None => {
                    units = units.saturating_add(body.units);
                    work = work.saturating_add(body.work);
                }
            }
        }
        most.max(staff(units, work))
    }

    /// The products whose right-hand operand is a matrix read through its transpose,
    /// by body, with the number of `gemm` calls the product is cut into (each packs the
    /// operand again): what a row-major copy would serve faster (see [`TransposedRhs`]).
    pub fn transposed_rhs(&self) -> impl Iterator<Item = (usize, TransposedRhs, u64)> + '_ {
        self.bodies.iter().enumerate().filter_map(|(i, b)| {
            let c = b.contract.as_ref()?;
            c.transposed_rhs.map(|t| (i, t, c.gemm_calls()))
        })
    }
}

/// A product's right-hand operand `b[k, n]` stored as its transpose: `n` rows of `k`
/// from element `offset` of slot `slot`, the same matrix at every batch index (a dense
/// layer's `[out, in]` weight), in a product of at least two rows. `gemm` (one thread)
/// runs such a product 3-40x slower than from a row-major operand at 2-8 rows (it packs
/// the transposed matrix first: `4 x 128 x 512` in 134 us against 4.6 us), 1.5-2x at 16-32
/// rows and 1.1-1.3x at 128 (W1's and W4's shapes); at one row it reads the transposed
/// matrix as dot products, as fast or faster. So a runtime that knows the matrix will not
/// change between runs (a parameter during inference) may keep a row-major copy
/// ([`TransposedRhs::row_major`]) and pass it to [`launch_planned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransposedRhs {
    pub slot: usize,
    pub offset: u64,
    pub k: u64,
    pub n: u64,
}

impl TransposedRhs {
    fn of(c: &Contraction, m: u64, k: u64, n: u64) -> Option<TransposedRhs> {
        let constant = |i: &Index| match i {
            Index::Const(v) => u64::try_from(*v).ok(),
            _ => None,
        };
        let offset = constant(&c.b.offset)?;
        let transposed =
            constant(&c.b.row_stride) == Some(1) && constant(&c.b.col_stride) == Some(k);
        let shaped = m > 1 && k > 1 && n > 1;
        (transposed && shaped && c.summed.is_empty()).then_some(TransposedRhs {
            slot: c.b.buf,
            offset,
            k,
            n,
        })
    }

    /// How many elements of the slot the matrix spans from its start.
    pub fn end(&self) -> Option<u64> {
        self.k.checked_mul(self.n)?.checked_add(self.offset)
    }

    /// The matrix `b[k, n]` row-major, from the slot's elements (at least [`Self::end`]).
    pub fn row_major(&self, slot: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.row_major_into(slot, &mut out);
        out
    }

    /// [`Self::row_major`] into `out` (its storage reused).
    pub fn row_major_into(&self, slot: &[f32], out: &mut Vec<f32>) {
        let (k, n) = (self.k as usize, self.n as usize);
        let t = &slot[self.offset as usize..][..k * n];
        out.clear();
        out.resize(k * n, 0.0);
        // `t` is `n` rows of `k`. The `transpose` crate's tiled copy is ~3x faster than
        // a plain blocked loop (784 x 256: 65 us against 220 us), which matters where a
        // training step copies a weight at every launch.
        transpose::transpose(t, out, k, n);
    }
}

/// A row-major copy of a product's right-hand operand ([`TransposedRhs::row_major`]),
/// shared by the threads of a launch.
#[derive(Clone, Copy)]
struct RowMajorRhs(*const f32);

// SAFETY: the copy is only read, while the launch that received it runs.
unsafe impl Send for RowMajorRhs {}
// SAFETY: as for `Send`.
unsafe impl Sync for RowMajorRhs {}

/// A product's left- and right-hand operands.
type Pair<'a> = (&'a MatrixOperand, &'a MatrixOperand);

/// What a product reads: the kernel's contraction, the launch's buffers, and a row-major
/// copy of the right-hand operand in place of the slot's transposed matrix, if given.
#[derive(Clone, Copy)]
struct Operands<'a> {
    c: &'a Contraction,
    bufs: SharedBuffers<'a>,
    rhs: Option<RowMajorRhs>,
}

/// [`launch_with`] from a plan made for this kernel and batch size. `row_major`, by
/// body (or empty), gives a row-major copy of the right-hand operand of the products
/// that [`LaunchPlan::transposed_rhs`] lists, used in place of the slot's matrix.
///
/// # Safety
/// As for [`launch`], at `plan`'s batch size; `plan` must have been made for `kernel`,
/// and each copy must hold [`TransposedRhs::row_major`] of the slot's current values
/// (`k * n` elements).
pub unsafe fn launch_planned(
    kernel: &Kernel,
    plan: &LaunchPlan,
    fns: &[KernelFn],
    bufs: &[*mut u8],
    row_major: &[Option<*const f32>],
    options: &LaunchOptions,
) {
    // SAFETY: forwarded from the caller.
    unsafe { launch_by(Crew::Team, kernel, plan, fns, bufs, row_major, options) }
}

/// One launch of a sequence run seated ([`launch_seated`]): what [`launch_planned`]
/// takes.
pub struct SeatedLaunch<'a> {
    pub kernel: &'a Kernel,
    pub plan: &'a LaunchPlan,
    pub functions: &'a [KernelFn],
    pub bufs: &'a [*mut u8],
    pub row_major: &'a [Option<*const f32>],
}

/// How the seats of a seated sequence share its launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatShares {
    /// Each launch split across the seats as its work deserves, the seats meeting at a
    /// barrier after it.
    Launches,
    /// Each seat runs every launch for its own range of batch rows, and the seats never
    /// meet until the end: every launch's points are batch rows and every buffer the
    /// sequence writes is touched only at its points' rows (the caller's proof), so a
    /// seat reads only what it wrote itself.
    BatchRows,
}

/// The launches of a seated sequence, shared by its seats.
struct SeatedLaunches<'l, 'a>(&'l [SeatedLaunch<'a>]);

// SAFETY: the pointers are only dereferenced by kernel code and `gemm`, each seat on its
// own share of a launch's outputs, while `launch_seated` borrows them.
unsafe impl Sync for SeatedLaunches<'_, '_> {}

impl<'a> SeatedLaunches<'_, 'a> {
    fn list(&self) -> &[SeatedLaunch<'a>] {
        self.0
    }
}

/// Runs `launches` in order, as [`launch_planned`] would one after the other, on *seats*:
/// the calling thread and the team's threads that take a seat in time, each running the
/// whole sequence and computing its own share of every launch (the same share for the
/// same seat and count every time), the seats meeting at a barrier after each launch and
/// where a launch reads what another seat wrote (between a product and its epilogue),
/// instead of a fork and a join per launch. For a recurrent loop's many short launches
/// (see `team`). A seat takes less work than a team's thread (`Crew::staff`): the seats
/// meet after every launch anyway. With `times`, its element `i` gets what launch `i`
/// took on the calling thread, from its start to the barrier after it.
/// With [`SeatShares::BatchRows`], each seat runs every launch for its own batch rows
/// instead, and the seats meet only at the end.
///
/// # Safety
/// As for [`launch_planned`], for each launch in turn: each launch's pointers address its
/// kernel's buffers as they are when the launches before it have run. With
/// [`SeatShares::BatchRows`], every launch's points are batch rows
/// ([`LaunchPlan::batch_rows`]), every buffer any launch writes, and every one sharing
/// storage with it, is touched only at its points' batch rows with one row length and
/// row grid, and each seat's rows of every product keep its bits
/// ([`LaunchPlan::rows_split_keeps_bits`] at `batch / seats` rows, the seats at most the
/// most threads a launch's plan takes).
pub unsafe fn launch_seated(
    launches: &[SeatedLaunch],
    options: &LaunchOptions,
    shares: SeatShares,
    times: Option<&mut [std::time::Duration]>,
) {
    // At most the host's (or `options`') threads: `thread_count` caps them.
    let threads = launches
        .iter()
        .map(|l| l.plan.threads(options))
        .max()
        .unwrap_or(1) as usize;
    let nanos: Option<Vec<std::sync::atomic::AtomicU64>> = times
        .as_ref()
        .map(|t| t.iter().map(|_| Default::default()).collect());
    let shared = SeatedLaunches(launches);
    let work = |seat: &Seat| {
        // By batch rows: this seat's rows of every launch.
        let batch = shared.list().first().map_or(0, |l| l.plan.batch);
        let (seat_index, count) = (seat.index as u64, seat.count as u64);
        let rows = (batch * seat_index / count, batch * (seat_index + 1) / count);
        for (i, l) in shared.list().iter().enumerate() {
            let started = nanos
                .as_ref()
                .filter(|_| seat.index == 0)
                .map(|_| std::time::Instant::now());
            match shares {
                // SAFETY: the caller's contract; these batch rows are this seat's alone in
                // every launch, and every buffer the sequence writes is touched only at
                // its points' rows.
                SeatShares::BatchRows => unsafe { launch_rows(l, rows) },
                SeatShares::Launches => {
                    // SAFETY: the caller's contract; every seat runs the same sequence.
                    unsafe {
                        launch_by(
                            Crew::Seated(seat),
                            l.kernel,
                            l.plan,
                            l.functions,
                            l.bufs,
                            l.row_major,
                            options,
                        )
                    };
                    // What this launch wrote, the next ones read.
                    if !seat.sync() {
                        return;
                    }
                }
            }
            if let (Some(nanos), Some(started)) = (&nanos, started)
                && let Some(n) = nanos.get(i)
            {
                n.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        }
    };
    match (threads > 1).then(launch_team).flatten() {
        Some(team) => team.run_seated(threads - 1, &work),
        None => Team::alone(&work),
    }
    if let (Some(times), Some(nanos)) = (times, nanos) {
        for (t, n) in times.iter_mut().zip(&nanos) {
            *t = std::time::Duration::from_nanos(n.load(Ordering::Relaxed));
        }
    }
}

/// Runs launch `l` for batch rows `rows.0..rows.1` alone: each map's or reduction's rows
/// of those batch indices, each product's rows (all its columns) then its epilogue's.
///
/// # Safety
/// As for [`launch_planned`]; every body's points are batch rows (`LaunchPlan::batch_rows`)
/// and nobody else touches these rows meanwhile.
unsafe fn launch_rows(l: &SeatedLaunch, rows: (u64, u64)) {
    let (first, end) = rows;
    let batch = l.plan.batch;
    if first >= end || batch == 0 {
        return;
    }
    let bufs = SharedBuffers(l.bufs);
    let bodies = l.kernel.body.bodies();
    for (i, ((body, plan), f)) in bodies
        .iter()
        .zip(&l.plan.bodies)
        .zip(l.functions)
        .enumerate()
    {
        let rhs = l.row_major.get(i).copied().flatten().map(RowMajorRhs);
        let job = Job::new(body, plan, *f, rhs);
        match job.operands(bufs) {
            // A map's or reduction's rows are `units / batch` per batch index.
            None => {
                let per = job.units / batch;
                // SAFETY: the caller's contract: these rows are the seat's alone.
                unsafe { job.run(bufs, batch, first * per, end * per) };
            }
            Some((ops, c)) => {
                // SAFETY: as in `Job::run`: the product's rows `first..end` (its rows are
                // the batch), every column, then the epilogue of those rows.
                unsafe {
                    c.product(ops, first, end, (0, c.n));
                    (job.f)(bufs.as_ptr(), batch as i64, first as i64, end as i64);
                }
            }
        }
    }
}

/// The threads a product of `units` row blocks (of `work` in all) gets when they are
/// more than its blocks: then it is split by its columns or its blocks' matrices
/// (`Job::run_by_columns`), on `staff(columns or matrices, work)` threads.
fn column_threads(
    plan: &ContractPlan,
    units: u64,
    work: u64,
    staff: impl Fn(u64, u64) -> u64,
) -> Option<u64> {
    let column_blocks = plan.n / MIN_COLUMNS_PER_THREAD;
    let matrices = units.saturating_mul(plan.matrices_per_block());
    Some(staff(column_blocks.max(matrices), work)).filter(|&threads| threads > units)
}

/// The first column of each of `threads` threads' ranges of `n` columns, then `n`: as
/// many groups of [`COLUMN_GROUP`] columns each (the last group takes the columns left
/// over, so none is narrower than a group unless `n` is), and each output's `gemm` call
/// is the same whatever the thread count ([`call_pieces`]).
fn column_bounds(n: u64, threads: u64, depth: u64) -> Bounds {
    let groups = (n / COLUMN_GROUP).max(1);
    // A deep product's ranges stay too wide for a call of another kind (`gemm` sums a
    // call of at most 64 columns in other blocks), on fewer threads if need be.
    let most_threads = match depth > GEMM_SMALL_CALL_DEPTH {
        true => (groups / DEEP_RANGE_GROUPS).max(1),
        false => groups,
    };
    let per_thread = groups.div_ceil(threads.clamp(1, most_threads));
    (0..=threads)
        .map(|t| match t * per_thread >= groups {
            true => n,
            false => t * per_thread * COLUMN_GROUP,
        })
        .collect()
}

/// The `gemm` calls computing columns `range` (relative to `offset`, where the range
/// starts in the product's columns, a multiple of [`COLUMN_GROUP`]): `(first, width)`
/// pairs, relative to the range, of at most `most` columns cut at multiples of `most`
/// in the product's columns, the last call taking the columns left over rather than
/// leaving fewer than a group; the whole range if `most` is `None`.
fn call_pieces(
    range: (u64, u64),
    offset: u64,
    most: Option<u64>,
) -> impl Iterator<Item = (u64, u64)> {
    let (start, end) = range;
    let mut first = start;
    std::iter::from_fn(move || {
        if first >= end {
            return None;
        }
        let mut last = match most {
            Some(most) => ((offset + first) / most + 1) * most - offset,
            None => end,
        };
        if last >= end || end - last < COLUMN_GROUP {
            last = end;
        }
        let piece = (first, last - first);
        first = last;
        Some(piece)
    })
}

/// Whether a product reads `op` transposed: consecutive rows of the matrix are adjacent
/// elements (`gemm` packs such an operand, about twice as slowly as a row-major one).
fn read_transposed(op: &MatrixOperand) -> bool {
    let unit = |i: &Index| *i == Index::Const(1);
    unit(&op.row_stride) && !unit(&op.col_stride)
}

/// The launch team: the host's threads but the caller's (started on first use).
fn launch_team() -> Option<&'static Team> {
    Team::get(host_threads().saturating_sub(1).max(1))
}

/// Who runs a launch's ranges: the team, joining a fork per launch and taking ranges
/// from a queue, or one seat of a seated run, taking its own.
#[derive(Clone, Copy)]
enum Crew<'s, 't> {
    Team,
    Seated(&'s Seat<'t>),
}

impl Crew<'_, '_> {
    /// How many threads `work` spread over `rows` rows gets: [`thread_count`] for a
    /// team; for seats, which meet after every launch anyway, a quarter of the work a
    /// thread takes to pay for its fork and join, at most the seats.
    fn staff(self, options: &LaunchOptions, rows: u64, work: u64) -> u64 {
        match self {
            Crew::Team => thread_count(options, rows, work),
            Crew::Seated(seat) => {
                let options = LaunchOptions {
                    threads: Some(seat.count),
                    ..options.seated()
                };
                thread_count(&options, rows, work)
            }
        }
    }

    /// The ranges of `jobs`' units a launch on `threads` threads is cut into: guided ones
    /// for a team, more than the threads (the work estimate is only an estimate, and
    /// whichever thread is free takes the next, [`guided_bounds`]), one a seat for seats.
    fn bounds(self, jobs: &[Job], threads: u64) -> Bounds {
        match (self, threads) {
            (Crew::Team, 2..) => guided_bounds(jobs, threads),
            _ => work_bounds(jobs, threads.max(1)),
        }
    }

    /// Calls `run(bounds[i], bounds[i + 1])` for this crew's ranges: all of them across
    /// the team ([`split`]), or the seat's own.
    fn share(self, bounds: &[u64], threads: u64, run: impl Fn(u64, u64) + Sync) {
        match self {
            Crew::Team => split(bounds, threads, run),
            Crew::Seated(seat) => {
                if let Some(&[start, end]) = bounds.get(seat.index..seat.index + 2)
                    && start < end
                {
                    run(start, end);
                }
            }
        }
    }

    /// Waits until the crew's shares so far are done: a team's are when `share` returns.
    fn sync(self) {
        if let Crew::Seated(seat) = self {
            seat.sync();
        }
    }
}

/// [`launch_planned`] by `crew`.
///
/// # Safety
/// As for [`launch_planned`].
unsafe fn launch_by(
    crew: Crew,
    kernel: &Kernel,
    plan: &LaunchPlan,
    fns: &[KernelFn],
    bufs: &[*mut u8],
    row_major: &[Option<*const f32>],
    options: &LaunchOptions,
) {
    let batch = plan.batch;
    let bufs = SharedBuffers(bufs);
    let mut jobs: SmallVec<[Job; INLINE_JOBS]> = kernel
        .body
        .bodies()
        .iter()
        .zip(&plan.bodies)
        .zip(fns)
        .enumerate()
        .map(|(i, ((body, shares), f))| {
            let rhs = row_major.get(i).copied().flatten().map(RowMajorRhs);
            Job::new(body, shares, *f, rhs)
        })
        .collect();
    // A product of fewer row blocks than the threads it deserves (a batch-1 transformer's
    // dense layer, a recurrent step's product at batch 32, the input projection of all
    // steps at batch 1): its threads share the columns instead. A kernel's parts never
    // read what another writes, so such a product runs on its own, before the others.
    jobs.retain(|job| {
        let Some((ops, plan)) = job.operands(bufs) else {
            return true;
        };
        let staff = |units: u64, work: u64| crew.staff(options, units, work);
        let Some(threads) = column_threads(plan, job.units, job.work, staff) else {
            return true;
        };
        // SAFETY: forwarded from the caller.
        unsafe { job.run_by_columns(crew, ops, plan, batch, threads, options) };
        false
    });
    if jobs.is_empty() {
        return;
    }
    let units = jobs.iter().fold(0u64, |acc, j| acc.saturating_add(j.units));
    let work = jobs.iter().fold(0u64, |acc, j| acc.saturating_add(j.work));
    let threads = crew.staff(options, units, work);
    let bounds = crew.bounds(&jobs, threads);
    crew.share(&bounds, threads, |start, end| {
        let mut first = 0u64;
        for job in &jobs {
            let (lo, hi) = (start.max(first), end.min(first + job.units));
            if lo < hi {
                // SAFETY: the caller guarantees `fns` and `bufs` fit the kernel; units
                // `start..end` are this thread's alone.
                unsafe { job.run(bufs, batch, lo - first, hi - first) };
            }
            first += job.units;
        }
    });
}

/// One body of a launch: its function, its units (rows, or a contraction's row blocks)
/// and its work (points of the space, times the reduced points or the contraction's
/// depth).
struct Job<'k> {
    f: KernelFn,
    units: u64,
    work: u64,
    contract: Option<(&'k Contraction, &'k ContractPlan)>,
    rhs: Option<RowMajorRhs>,
}

impl BodyPlan {
    fn new(kernel: &Kernel, body: &KernelBody, batch: u64, copies: bool) -> BodyPlan {
        let cols = match body {
            KernelBody::ScatterAdd(s) => kernel.table_extent(s.out).map_or(0, |(_, cols)| cols),
            _ => 0,
        };
        let work = cost::body_cost(body, batch, cols);
        match body {
            KernelBody::Map { .. } | KernelBody::Reduce { .. } => BodyPlan {
                units: strata_kernels::cpu::row_count(body, batch),
                work,
                contract: None,
            },
            // Its function's rows are the table's columns (each thread owns some).
            KernelBody::ScatterAdd(_) => BodyPlan {
                units: cols,
                work,
                contract: None,
            },
            KernelBody::Contract(c) => {
                let plan = ContractPlan::with_copies(c, batch, copies);
                BodyPlan {
                    units: plan.blocks(),
                    work,
                    contract: Some(plan),
                }
            }
            // Validation refuses nested parts; a kernel's parts are its bodies.
            KernelBody::Parts(_) => BodyPlan {
                units: 0,
                work: 0,
                contract: None,
            },
        }
    }
}

impl<'k> Job<'k> {
    fn new(
        body: &'k KernelBody,
        plan: &'k BodyPlan,
        f: KernelFn,
        rhs: Option<RowMajorRhs>,
    ) -> Job<'k> {
        let contract = match (body, &plan.contract) {
            (KernelBody::Contract(c), Some(p)) => Some((c, p)),
            _ => None,
        };
        Job {
            f,
            units: plan.units,
            work: plan.work,
            contract,
            rhs,
        }
    }

    /// A contraction's operands over `bufs`, and its plan.
    fn operands<'b>(&'b self, bufs: SharedBuffers<'b>) -> Option<(Operands<'b>, &'b ContractPlan)> {
        self.contract.map(|(c, plan)| {
            let rhs = self.rhs.filter(|_| plan.transposed_rhs.is_some());
            (Operands { c, bufs, rhs }, plan)
        })
    }

    /// Runs a contraction's products with `threads` threads each computing some of the
    /// blocks' matrices whole, when they hold at least one per thread (a batch-1
    /// attention's heads), else a range of the output's columns of every block; then the
    /// epilogue of every block, by rows, on as many threads as its own work deserves.
    /// The columns are cut at multiples of 16 (a vector of `gemm`'s), and each product's
    /// point is computed as in one call, so results do not change.
    ///
    /// # Safety
    /// As for [`launch`]; `plan` is this job's.
    unsafe fn run_by_columns(
        &self,
        crew: Crew,
        ops: Operands<'_>,
        plan: &ContractPlan,
        batch: u64,
        threads: u64,
        options: &LaunchOptions,
    ) {
        let per_block = plan.matrices_per_block();
        let matrices = self.units.saturating_mul(per_block);
        // One matrix a block: `threads > units` (the caller's test), so cut columns.
        if per_block > 1 && matrices >= threads {
            let bounds: Bounds = (0..=threads).map(|t| matrices * t / threads).collect();
            crew.share(&bounds, threads, |first, end| {
                for matrix in first..end {
                    // SAFETY: as in `run`; this matrix's rows are this thread's alone.
                    unsafe { plan.matrix_of_block(ops, matrix / per_block, matrix % per_block) };
                }
            });
        } else {
            let bounds = column_bounds(plan.n, threads, plan.depth);
            crew.share(&bounds, threads, |first_col, end_col| {
                if let Some(addend) = plan.addend {
                    // One row, its epilogue `y + acc`: the thread's columns start at `y`.
                    // SAFETY: as in `run`; these columns of the one row are this thread's.
                    unsafe { plan.product_onto(ops, addend, (first_col, end_col)) };
                    return;
                }
                for block in 0..self.units {
                    let (first, last) = plan.block_rows(block);
                    // SAFETY: as in `run`; these columns of the block's rows are this
                    // thread's alone.
                    unsafe { plan.product(ops, first, last, (first_col, end_col)) };
                }
            });
        }
        if plan.addend.is_some() {
            // The product was added onto the epilogue's addend: nothing is left.
            return;
        }
        // The epilogue reads every column of its rows.
        crew.sync();
        // The blocks' rows follow each other from row 0.
        let rows = match self.units {
            0 => return,
            units => plan.block_rows(units - 1).1,
        };
        let threads = crew.staff(options, rows, plan.epilogue_work);
        let bounds: Bounds = (0..=threads).map(|t| rows * t / threads).collect();
        let batch_arg = batch as i64;
        crew.share(&bounds, threads, |first, last| {
            // SAFETY: as for a map; the product's rows are all written, and rows
            // `first..last` of the output are this call's alone.
            unsafe { (self.f)(ops.bufs.as_ptr(), batch_arg, first as i64, last as i64) };
        });
    }

    /// Runs units `start..end`.
    ///
    /// # Safety
    /// As for [`launch`], for this body's function and buffers.
    unsafe fn run(&self, bufs: SharedBuffers, batch: u64, start: u64, end: u64) {
        let batch_arg = batch as i64;
        match self.operands(bufs) {
            None => {
                // SAFETY: the caller's contract; rows `start..end` are this call's alone.
                unsafe { (self.f)(bufs.as_ptr(), batch_arg, start as i64, end as i64) }
            }
            Some((ops, plan)) => {
                for block in start..end {
                    let (first, last) = plan.block_rows(block);
                    // SAFETY: the caller guarantees the buffers hold the operands and the
                    // output at this batch size; the block's output rows are this call's
                    // alone, and no operand is the output (the emitter refuses that).
                    unsafe { plan.product(ops, first, last, (0, plan.n)) };
                    // SAFETY: as for a map; the epilogue reads the rows just written.
                    unsafe { (self.f)(bufs.as_ptr(), batch_arg, first as i64, last as i64) };
                }
            }
        }
    }
}

/// How far one `gemm` call sums, and whether it adds to what the output holds.
#[derive(Clone, Copy)]
struct Depth {
    depth: u64,
    accumulate: bool,
}

/// The buffer pointers, shared by the threads of one launch.
#[derive(Clone, Copy)]
struct SharedBuffers<'a>(&'a [*mut u8]);

// SAFETY: the pointers are only dereferenced by kernel code and `gemm`, each thread on
// its own rows of the outputs (see `launch`'s contract), while the launch holds the
// borrow of `bufs`.
unsafe impl Send for SharedBuffers<'_> {}
// SAFETY: as for `Send`; the slice itself is never written.
unsafe impl Sync for SharedBuffers<'_> {}

impl SharedBuffers<'_> {
    fn as_ptr(&self) -> *const *mut u8 {
        self.0.as_ptr()
    }

    fn f32_ptr(&self, slot: usize) -> *mut f32 {
        self.0[slot].cast::<f32>()
    }
}

/// How many threads `work` spread over `rows` rows deserves.
fn thread_count(options: &LaunchOptions, rows: u64, work: u64) -> u64 {
    let wanted = (work / options.min_work_per_thread.max(1)).min(rows);
    if wanted <= 1 {
        return 1;
    }
    let threads = options.threads.unwrap_or_else(host_threads);
    (threads as u64).min(wanted).max(1)
}

/// Where each of `threads` contiguous ranges of the jobs' units (laid end to end) starts,
/// then the end: cut at the unit nearest to where the work done before it is `t /
/// threads` of the total ([`nearest_unit`]). A function of the shapes only, so results
/// do not depend on timing.
fn work_bounds(jobs: &[Job], threads: u64) -> Bounds {
    let total = total_work(jobs);
    let units: u64 = jobs.iter().map(|j| j.units).sum();
    let mut bounds = Bounds::new();
    bounds.push(0);
    for t in 1..threads {
        let target = total * u128::from(t) / u128::from(threads);
        let (cut, _) = nearest_unit(jobs, target);
        bounds.push(cut.max(*bounds.last().unwrap_or(&0)));
    }
    bounds.push(units);
    bounds
}

/// Where the ranges a team's `threads` take in turn start, then the end (guided
/// scheduling): each range holds `1 / (2 threads)` of the work not yet cut, but at least
/// `1 / (GUIDED_SMALLEST_SHARE threads)` of the whole, so the ranges shrink toward the
/// end, and whichever thread finishes first takes the small last ones. Equal ranges of a
/// few heavy units (a weight gradient's row blocks) and light ones (its bias gradient's
/// columns) left one thread a range of several heavy units and the other waiting
/// (W3's weight gradients: 1.57 -> 1.45 ms). A function of the shapes only.
fn guided_bounds(jobs: &[Job], threads: u64) -> Bounds {
    let total = total_work(jobs);
    let units: u64 = jobs.iter().map(|j| j.units).sum();
    let threads = u128::from(threads.max(1));
    let smallest = (total / (threads * u128::from(GUIDED_SMALLEST_SHARE))).max(1);
    let mut bounds = Bounds::new();
    bounds.push(0);
    let (mut at, mut done) = (0u64, 0u128);
    while at < units {
        let range = ((total - done.min(total)) / (2 * threads)).max(smallest);
        let (cut, before) = nearest_unit(jobs, done + range);
        (at, done) = match cut.min(units) {
            // At least one unit a range.
            cut if cut <= at => (at + 1, work_before(jobs, at + 1)),
            cut => (cut, before),
        };
        bounds.push(at);
    }
    if bounds.len() == 1 {
        bounds.push(units);
    }
    bounds
}

/// A job's units among a launch's (laid end to end): its first unit, how many, the work
/// of the units before it, and its work spread evenly over its units (each at least
/// one).
struct Span {
    first: u64,
    units: u64,
    before: u128,
    work: u128,
}

impl Span {
    fn per_unit(&self) -> u128 {
        (self.work / u128::from(self.units.max(1))).max(1)
    }
}

fn spans<'a>(jobs: &'a [Job]) -> impl Iterator<Item = Span> + 'a {
    jobs.iter().scan((0u64, 0u128), |(first, before), job| {
        let span = Span {
            first: *first,
            units: job.units,
            before: *before,
            work: u128::from(job.work.max(job.units)),
        };
        *first += span.units;
        *before += span.work;
        Some(span)
    })
}

/// The work of `jobs`, each at least one per unit.
fn total_work(jobs: &[Job]) -> u128 {
    spans(jobs).map(|s| s.work).sum()
}

/// The work of the units before `unit`.
fn work_before(jobs: &[Job], unit: u64) -> u128 {
    spans(jobs).find(|s| unit < s.first + s.units).map_or_else(
        || total_work(jobs),
        |s| s.before + u128::from(unit - s.first) * s.per_unit(),
    )
}

/// The unit whose start is nearest to `target` in work done before it (or the end), and
/// that work. Nearest, not the first to reach it: a light unit before a heavy one (a bias
/// gradient's sum before its weight's product) is a range of its own.
fn nearest_unit(jobs: &[Job], target: u128) -> (u64, u128) {
    match spans(jobs).find(|s| s.units > 0 && s.before + s.work > target) {
        Some(s) => {
            let per_unit = s.per_unit();
            let inside = ((target - s.before + per_unit / 2) / per_unit).min(u128::from(s.units));
            (s.first + inside as u64, s.before + inside * per_unit)
        }
        None => (jobs.iter().map(|j| j.units).sum(), total_work(jobs)),
    }
}

/// Calls `run(bounds[t], bounds[t + 1])` for each range, on the calling thread and, when
/// `threads` is more than one, on the `Team`'s threads (one fewer than the host runs at
/// once, since the caller takes a share too) that join in time, each taking the next
/// range not yet taken when it is free; empty ranges are skipped.
fn split(bounds: &[u64], threads: u64, run: impl Fn(u64, u64) + Sync) {
    let ranges: Vec<(u64, u64)> = bounds
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(start, end)| start < end)
        .collect();
    let threads = (threads as usize).clamp(1, ranges.len().max(1));
    // A launch that runs on the caller alone never starts the team (a batch-1 run of a
    // small model starts no thread).
    let team = match threads {
        1 => None,
        // Read first, so that once the count is down no launch writes the shared line.
        _ if LAUNCHES_BEFORE_TEAM.load(Ordering::Relaxed) > 0
            && LAUNCHES_BEFORE_TEAM.fetch_sub(1, Ordering::Relaxed) > 0 =>
        {
            None
        }
        _ => launch_team(),
    };
    let Some(team) = team else {
        ranges.iter().for_each(|&(start, end)| run(start, end));
        return;
    };
    let next = AtomicUsize::new(0);
    team.run(threads - 1, &|| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(start, end)) = ranges.get(i) else {
                break;
            };
            run(start, end);
        }
    });
}

/// The most matrices a contraction's fold checks look at (they evaluate the operands'
/// offsets at each): a fold pays off long before this many.
const MOST_MATRICES: u64 = 1 << 16;

/// Advances `index` to the next tuple of `extents` in row-major order; false after the last.
fn next_index(index: &mut [i64], extents: &[u64]) -> bool {
    for d in (0..index.len()).rev() {
        index[d] += 1;
        if (index[d] as u64) < extents[d] {
            return true;
        }
        index[d] = 0;
    }
    false
}

/// How a contraction's product is cut into `gemm` calls.
///
/// Without batch dimensions, a block is [`contract_row_block`] rows of `m` (the outermost
/// dimension of the epilogue's space). With them, there are two cases:
///
/// - *Folded*: the right-hand operand is the same matrix at every batch index and the
///   left-hand one's matrices follow each other at `m` rows' distance (a dense layer over
///   `[batch, T, d]`, whose input is contiguous). Then the batch dimensions are rows too:
///   the product is one `[batch... * m, k] x [k, n]` matrix product, as if unbatched
///   (`out` is contiguous `[batch..., m, n]` in any case), and a block is as many whole
///   indices of the outermost batch dimension as make about [`contract_row_block`] rows.
///   One `gemm` call over many rows packs the shared right-hand operand once instead of
///   once per batch index.
/// - Otherwise a block is one index of the outermost batch dimension, all its inner batch
///   indices and whole `m x n` matrices, one `gemm` call per matrix.
///
/// A contraction summed over dimensions (`Contraction::summed`) is one `gemm` call per
/// output matrix when, as for a weight gradient `sum_b a[b]ᵀ x g[b]` over contiguous
/// `[batch, T, d]` and `[batch, T, o]`, the summed matrices follow each other along `k`:
/// the depth is then `k` times the summed points. Otherwise each summed index is a `gemm`
/// call adding into the output.
///
/// The fold is decided here, where the batch size is known, by evaluating the operands'
/// offsets at every batch index: the kernel IR's dimensions are a fixed size or the batch,
/// so `batch * m` has no dimension to name it there.
struct ContractPlan {
    batch: u64,
    m: u64,
    n: u64,
    k: u64,
    /// Extents of the batch dimensions.
    batch_extents: Vec<u64>,
    /// With the batch dimensions folded into `m`: the outermost batch indices per block.
    folded: Option<u64>,
    /// The folded matrix's row stride in `a`: the operand's own, or, for a product of one
    /// row per batch index, the step between the batch indices' rows.
    folded_row_stride: i64,
    /// Extents of the summed dimensions.
    summed_extents: Vec<u64>,
    /// Whether the summed dimensions fold into the depth: one `gemm` call over `depth`.
    summed_in_depth: bool,
    /// `k` times the summed points when they fold into it, else `k`.
    depth: u64,
    /// The right-hand operand, when it is a transposed matrix a runtime may copy.
    transposed_rhs: Option<TransposedRhs>,
    /// The epilogue's work ([`cost::epilogue_cost`]), which a product split by columns
    /// shares by rows.
    epilogue_work: u64,
    /// Rows per block of an unbatched product ([`ContractPlan::unbatched_row_block`]).
    row_block: u64,
    /// The slot of `y` when the product is one row that `gemv` computes whole and its
    /// epilogue is `y[point] + acc` ([`ContractPlan::onto_addend`]).
    addend: Option<usize>,
    /// Whether a row of the product is computed by `gemv` (each column's sum the same
    /// wherever a thread's columns start) rather than by `gemm`.
    one_row_gemv: bool,
    /// Whether the right-hand operand is a window over an image (`window.rs`).
    windowed: bool,
}

impl ContractPlan {
    #[cfg(test)]
    fn new(c: &Contraction, batch: u64) -> ContractPlan {
        ContractPlan::with_copies(c, batch, false)
    }

    /// The plan of `c` at `batch`, given a row-major copy of a transposed right-hand
    /// operand if `copies` (see [`LaunchPlan::with_copies`]).
    fn with_copies(c: &Contraction, batch: u64, copies: bool) -> ContractPlan {
        let mut plan = ContractPlan {
            batch,
            m: c.m.resolve(batch),
            n: c.n.resolve(batch),
            k: c.k.resolve(batch),
            batch_extents: c.batch.iter().map(|d| d.resolve(batch)).collect(),
            folded: None,
            folded_row_stride: 0,
            summed_extents: c.summed.iter().map(|d| d.resolve(batch)).collect(),
            summed_in_depth: false,
            depth: c.k.resolve(batch),
            transposed_rhs: None,
            epilogue_work: cost::epilogue_cost(c, batch),
            row_block: 0,
            addend: None,
            one_row_gemv: false,
            windowed: c.b.window.is_some(),
        };
        plan.transposed_rhs = TransposedRhs::of(c, plan.m, plan.k, plan.n);
        plan.row_block = plan.unbatched_row_block(c, copies);
        plan.one_row_gemv = plan.one_row_gemv(c, copies);
        plan.addend = plan.onto_addend(c);
        if plan.summed_folds_into_depth(c) {
            plan.summed_in_depth = true;
            plan.depth = plan.summed_extents.iter().product::<u64>() * plan.k;
        } else if let Some(row_stride) = plan
            .summed_extents
            .is_empty()
            .then(|| plan.batch_folds_into_rows(c))
            .flatten()
        {
            plan.folded_row_stride = row_stride;
            // `m` rows per inner batch tuple, so this many per outermost index.
            let inner: u64 = plan.batch_extents[1..].iter().product();
            let rows_per_outer = (inner * plan.m).max(1);
            let rows = plan.batch_extents[0] * rows_per_outer;
            plan.folded = Some((contract_row_block(rows) / rows_per_outer).max(1));
        }
        plan
    }

    /// The slot of `y` when `c` is one unbatched row computed by one `gemv` call per
    /// column range (a contiguous row, a matrix read by rows or by columns, a host with
    /// AVX2 and FMA) and its epilogue is `y[point] + acc`, `y` another slot: a recurrent
    /// step's product plus its input projection at batch 1. Then each thread starts its
    /// columns of the output at `y` and adds the product onto them, which is the
    /// epilogue's sum (`gemv` adds each column's dot product, once, to what the output
    /// holds): no epilogue pass, and no wait between the product and it.
    fn onto_addend(&self, c: &Contraction) -> Option<usize> {
        let batch = self.batch as i64;
        let one_row = self.m == 1 && c.batch.is_empty() && c.summed.is_empty();
        if !one_row || !self.one_row_gemv || self.n == 0 || self.k == 0 {
            return None;
        }
        // `y[i0 * n + i1]` at row 0: `i1` itself.
        let at_point = |e: &Expr| match e {
            Expr::Load { buf, index }
                if *buf != c.out
                    && index.coefficient(1) == Some(1)
                    && index.eval(&[0, 0], batch) == 0 =>
            {
                Some(*buf)
            }
            _ => None,
        };
        match &c.epilogue {
            Expr::Binary(BinaryOp::Add, a, b) => match (&**a, &**b) {
                (Expr::Acc, y) | (y, Expr::Acc) => at_point(y),
                _ => None,
            },
            _ => None,
        }
    }

    /// The row stride of `a` with the batch dimensions folded into `m` (see
    /// [`ContractPlan`]), if they fold: at every batch index, `b` and the strides are
    /// those of the first, and `a`'s matrix at flat batch index `f` starts `f * m` rows
    /// after the first. A product of one row per batch index folds whenever its rows
    /// are evenly spaced, whatever the operand's row stride (which such a row never
    /// uses): the step between them is the folded matrix's row stride (a recurrent
    /// layer's input projection at batch 1, reading `x[0, t, :]` for every step `t`).
    fn batch_folds_into_rows(&self, c: &Contraction) -> Option<i64> {
        let matrices = self
            .batch_extents
            .iter()
            .try_fold(1u64, |acc, e| acc.checked_mul(*e));
        // A window reads a different image at each batch index: no rows to fold.
        if self.batch_extents.is_empty()
            || !matches!(matrices, Some(1..=MOST_MATRICES))
            || c.b.window.is_some()
        {
            return None;
        }
        let batch = self.batch as i64;
        let (a, b) = (&c.a, &c.b);
        let at = |vars: &[i64]| {
            [
                a.offset.eval(vars, batch),
                a.row_stride.eval(vars, batch),
                a.col_stride.eval(vars, batch),
                b.offset.eval(vars, batch),
                b.row_stride.eval(vars, batch),
                b.col_stride.eval(vars, batch),
            ]
        };
        let mut vars = vec![0i64; self.batch_extents.len()];
        let first = at(&vars);
        let row_stride = match self.m {
            // The second row's offset from the first's, forward (the first's own stride
            // when there is one matrix).
            1 => {
                let mut second = vars.clone();
                match next_index(&mut second, &self.batch_extents) {
                    true => Some(at(&second)[0].checked_sub(first[0])?).filter(|s| *s > 0)?,
                    false => first[1],
                }
            }
            _ => first[1],
        };
        let matrix_step = (self.m as i64).checked_mul(row_stride)?;
        let mut flat = 0i64;
        loop {
            let mut want = first;
            want[0] = first[0].checked_add(flat.checked_mul(matrix_step)?)?;
            if self.m == 1 {
                want[1] = at(&vars)[1];
            }
            if at(&vars) != want {
                return None;
            }
            flat += 1;
            if !next_index(&mut vars, &self.batch_extents) {
                return Some(row_stride);
            }
        }
    }

    /// Whether the summed dimensions fold into the depth (see [`ContractPlan`]): at every
    /// batch index, the operands' strides do not move with the summed variables, and the
    /// matrices at flat summed index `f` start `f * k` columns of `a` and rows of `b` after
    /// the first, so `sum_s a[s] x b[s]` is one product over `k * s` (a weight gradient
    /// over `[batch, T, d]`: depth `batch * T`).
    fn summed_folds_into_depth(&self, c: &Contraction) -> bool {
        if self.summed_extents.is_empty() {
            return false;
        }
        let extents = [self.batch_extents.as_slice(), &self.summed_extents].concat();
        let points = extents.iter().try_fold(1u64, |acc, e| acc.checked_mul(*e));
        match points {
            Some(0) => return true,
            Some(1..=MOST_MATRICES) => {}
            _ => return false,
        }
        let batch = self.batch as i64;
        let (a, b) = (&c.a, &c.b);
        let at = |vars: &[i64]| {
            [
                a.offset.eval(vars, batch),
                b.offset.eval(vars, batch),
                a.row_stride.eval(vars, batch),
                a.col_stride.eval(vars, batch),
                b.row_stride.eval(vars, batch),
                b.col_stride.eval(vars, batch),
            ]
        };
        let nb = self.batch_extents.len();
        let k = self.k as i64;
        let mut vars = vec![0i64; extents.len()];
        let mut first: Option<[i64; 6]> = None;
        loop {
            let summed_flat = vars[nb..]
                .iter()
                .zip(&self.summed_extents)
                .fold(0i64, |acc, (v, e)| acc * *e as i64 + v);
            let here = at(&vars);
            match first {
                Some(mut want) if summed_flat > 0 => {
                    let (a_cs, b_rs) = (want[3], want[4]);
                    want[0] += summed_flat * k * a_cs;
                    want[1] += summed_flat * k * b_rs;
                    if here != want {
                        return false;
                    }
                }
                _ => first = Some(here),
            }
            if !next_index(&mut vars, &extents) {
                return true;
            }
        }
    }

    /// Whether `gemv` computes a row of this product ([`super::gemv::computes`]): the
    /// left-hand row contiguous and the right-hand matrix read by rows or by columns (a
    /// row-major copy is read by rows).
    fn one_row_gemv(&self, c: &Contraction, copies: bool) -> bool {
        let batch = self.batch as i64;
        let stride = |i: &Index| i.eval(&[], batch) as isize;
        let copied = copies && self.transposed_rhs.is_some();
        let b_strides = match copied {
            true => (self.n as isize, 1),
            false => (stride(&c.b.row_stride), stride(&c.b.col_stride)),
        };
        !self.windowed && super::gemv::computes(stride(&c.a.col_stride), b_strides)
    }

    /// The fewest rows of a `gemm` call of the product's blocks: a row block of an
    /// unbatched product (the last may be short), a folded block's rows, or one batch
    /// index's matrix.
    fn fewest_call_rows(&self) -> u64 {
        let (rows, per_block) = match (self.batch_extents.split_first(), self.folded) {
            (None, _) => (self.m, self.row_block.clamp(1, self.m.max(1))),
            (Some((&outer, inner)), Some(per_block)) => {
                let per_outer = inner.iter().product::<u64>().saturating_mul(self.m);
                (
                    outer.saturating_mul(per_outer),
                    per_block.saturating_mul(per_outer),
                )
            }
            (Some(_), None) => return self.m,
        };
        match rows % per_block.max(1) {
            0 => per_block.min(rows),
            last => last,
        }
    }

    /// Whether this product, of `units` row blocks, run by columns on `threads` threads
    /// (`Job::run_by_columns`), computes the same bits as on one: see
    /// [`LaunchPlan::same_bits_as_one_thread`].
    fn columns_keep_bits(&self, threads: u64, units: u64) -> bool {
        let per_block = self.matrices_per_block();
        if per_block > 1 && units.saturating_mul(per_block) >= threads {
            // Whole matrices a thread: each one call, whoever computes it.
            return true;
        }
        if self.windowed {
            return false;
        }
        let rows = self.fewest_call_rows();
        if (rows == 1 && self.one_row_gemv)
            || rows > GEMM_DOT_MOST_ROWS
            || rows.saturating_mul(self.n) <= GEMM_DOT_MOST_OUTPUTS
        {
            return true;
        }
        let bounds = column_bounds(self.n, threads, self.depth);
        bounds
            .windows(2)
            .filter(|w| w[1] > w[0])
            .all(|w| rows.saturating_mul(w[1] - w[0]) > GEMM_DOT_MOST_OUTPUTS)
    }

    fn blocks(&self) -> u64 {
        match (self.batch_extents.first(), self.folded) {
            (None, _) => self.m.div_ceil(self.row_block),
            (Some(&outer), Some(per_block)) => outer.div_ceil(per_block),
            (Some(&outer), None) => outer,
        }
    }

    /// Rows per block of an unbatched product. Every row block packs the whole
    /// right-hand operand again, and every thread of a product run by columns
    /// (`Job::run_by_columns`) the whole left-hand one: so at most 256 rows are one block,
    /// run by columns, when the right-hand operand is read transposed (a training step's
    /// weight, no row-major copy: ~2x the packing cost of a row-major one) or the
    /// left-hand one is (a weight gradient's `gᵀ`, which packs cheaply), its columns
    /// can be shared, and it holds at least [`ONE_BLOCK_MIN_RHS`] elements. One thread,
    /// `128 x 256 x 784` from a transposed right-hand operand: two 64-row calls 556 us,
    /// two column halves 502 us (`x 256`: 251 against 199 us). Both row-major (inference
    /// with copies), one block cost W1's batch-128 run 3-4% (0.356-0.365 against
    /// 0.370-0.375 ms, 8 alternating rounds). A small product (W1's `128 x 10 x 256`
    /// backward) keeps its rows: run by columns, it would no longer share a fork with the
    /// other parts of its launch.
    fn unbatched_row_block(&self, c: &Contraction, copies: bool) -> u64 {
        let copied = copies && self.transposed_rhs.is_some();
        let packs_transposed = c.b.window.is_none() && read_transposed(&c.b) && !copied;
        let cheap_lhs = read_transposed(&c.a);
        let rhs = self.k.saturating_mul(self.n);
        if self.m <= 256
            && self.n >= 2 * MIN_COLUMNS_PER_THREAD
            && rhs >= ONE_BLOCK_MIN_RHS
            && (packs_transposed || cheap_lhs)
        {
            self.m.max(1)
        } else if (128..=256).contains(&self.m)
            && self.n >= 2 * MIN_COLUMNS_PER_THREAD
            && !packs_transposed
        {
            SHORT_ROW_BLOCK
        } else {
            contract_row_block(self.m)
        }
    }

    /// The most columns one `gemm` call of `rows` rows computes, if fewer than the call's
    /// range: a transposed operand is packed a call's columns at a time, and
    /// a narrow panel stays in the first-level cache ([`TRANSPOSED_RHS_CALL_COLUMNS`],
    /// [`TRANSPOSED_LHS_CALL_COLUMNS`]; a row-major copy of the right-hand operand, when
    /// the launch gives one, is read in place). Calls of at most [`NARROW_CALL_MIN_ROWS`]
    /// rows compute all their columns at once.
    fn call_columns(&self, (a, b): Pair<'_>, rhs: Option<RowMajorRhs>, rows: u64) -> Option<u64> {
        if rows <= NARROW_CALL_MIN_ROWS {
            None
        } else if b.window.is_none() && rhs.is_none() && read_transposed(b) {
            Some(TRANSPOSED_RHS_CALL_COLUMNS)
        } else if read_transposed(a) {
            Some(TRANSPOSED_LHS_CALL_COLUMNS)
        } else {
            None
        }
    }

    /// How many `gemm` calls the whole product makes.
    fn gemm_calls(&self) -> u64 {
        let per_matrix = match self.summed_in_depth {
            true => 1,
            false => self.summed_extents.iter().product::<u64>(),
        };
        let matrices = match (self.batch_extents.is_empty(), self.folded) {
            (true, _) | (false, Some(_)) => self.blocks(),
            (false, None) => self.batch_extents.iter().product::<u64>(),
        };
        matrices.saturating_mul(per_matrix)
    }

    /// The rows of the outermost dimension of the epilogue's space that a block covers.
    fn block_rows(&self, block: u64) -> (u64, u64) {
        match (self.batch_extents.first(), self.folded) {
            (None, _) => {
                let rows = self.row_block;
                let start = block * rows;
                (start, (start + rows).min(self.m))
            }
            (Some(&outer), Some(per_block)) => {
                let start = block * per_block;
                (start, (start + per_block).min(outer))
            }
            (Some(_), None) => (block, block + 1),
        }
    }

    /// How many batch index tuples (matrices) one block holds: those of its outermost
    /// index when the batch is not folded into the rows, else 1.
    fn matrices_per_block(&self) -> u64 {
        match (self.batch_extents.split_first(), self.folded) {
            (Some((_, inner)), None) => inner.iter().product(),
            _ => 1,
        }
    }

    /// The whole product of matrix `matrix` (of [`Self::matrices_per_block`], more than
    /// one: the batch is not folded) of block `block`: its batch index tuple in row-major
    /// order after the block's outermost index.
    ///
    /// # Safety
    /// As for [`ContractPlan::product`], for that matrix's rows.
    unsafe fn matrix_of_block(&self, ops: Operands<'_>, block: u64, matrix: u64) {
        debug_assert!(self.folded.is_none() && !self.batch_extents.is_empty());
        let mut vars = vec![0i64; self.batch_extents.len()];
        vars[0] = block as i64;
        let mut rest = matrix;
        for (v, e) in vars[1..].iter_mut().zip(&self.batch_extents[1..]).rev() {
            *v = (rest % e) as i64;
            rest /= e;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.matrix_product(ops, &vars, 0, self.m, (0, self.n)) };
    }

    /// Writes the product into `out` for outermost rows `start..end`, columns
    /// `cols.0..cols.1` of `n`.
    ///
    /// # Safety
    /// The buffers must hold the operands and the output at this batch size, and no other
    /// thread may access these rows and columns of `out` meanwhile.
    unsafe fn product(&self, ops: Operands<'_>, start: u64, end: u64, cols: (u64, u64)) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        if self.batch_extents.is_empty() {
            // SAFETY: forwarded from the caller.
            unsafe { self.matrix_product(ops, &[], start, end, cols) };
            return;
        }
        if self.folded.is_some() {
            // One matrix of `batch... * m` rows, addressed from batch index 0.
            let rows_per_outer = self.batch_extents[1..].iter().product::<u64>() * self.m;
            let vars = vec![0i64; self.batch_extents.len()];
            // SAFETY: forwarded from the caller; the fold holds (`batch_folds_into_rows`),
            // so these rows are those of outermost batch indices `start..end`.
            unsafe {
                self.matrix_product(
                    ops,
                    &vars,
                    start * rows_per_outer,
                    end * rows_per_outer,
                    cols,
                )
            };
            return;
        }
        // Every batch index tuple whose outermost index is in `start..end`.
        let inner_extents = &self.batch_extents[1..];
        if inner_extents.contains(&0) {
            return;
        }
        let mut vars = vec![0i64; self.batch_extents.len()];
        for outer in start..end {
            vars.fill(0);
            vars[0] = outer as i64;
            loop {
                // SAFETY: forwarded from the caller.
                unsafe { self.matrix_product(ops, &vars, 0, self.m, cols) };
                if !next_index(&mut vars[1..], inner_extents) {
                    break;
                }
            }
        }
    }

    /// Columns `cols` of the one row of a product with an addend ([`Self::addend`]):
    /// the addend's values, then the product added onto them; with terms, the products'
    /// sum, then the addend added to it.
    ///
    /// # Safety
    /// As for [`ContractPlan::product`]; `addend` is the plan's.
    unsafe fn product_onto(&self, ops: Operands<'_>, addend: usize, cols: (u64, u64)) {
        let (first, end) = (cols.0 as usize, cols.1.min(self.n) as usize);
        if first >= end {
            return;
        }
        let from = ops.bufs.f32_ptr(addend).cast_const().wrapping_add(first);
        let to = ops.bufs.f32_ptr(ops.c.out).wrapping_add(first);
        if ops.c.terms.is_empty() {
            // SAFETY: both slots hold the row's `n` values (the bounds check proved the
            // epilogue's load and the output), they are distinct slots of distinct
            // buffers, and these columns of the output are the caller's alone.
            unsafe { std::ptr::copy_nonoverlapping(from, to, end - first) };
            // SAFETY: as for `product`; these columns of `out` now hold `y`'s, onto
            // which `gemv` adds each column's dot product (`y + acc`, as the epilogue
            // would).
            unsafe { self.matrix_product_from(ops, &[], (0, 1), cols, true) };
            return;
        }
        // With terms, `acc` is the products' sum, then `y` is added to it: the
        // epilogue's bits (`y + (p + t)`, not `(y + p) + t`). Without, `y` first: `gemv`
        // adding onto it was faster than a pass adding it after (W3's batch-1 inference
        // 0.133-0.144 against 0.138-0.144 ms, back to back in fast windows).
        // SAFETY: as for `product`.
        unsafe { self.matrix_product_from(ops, &[], (0, 1), cols, false) };
        // SAFETY: as above for the two slots; the products have set these columns.
        let (y, out) = unsafe {
            (
                std::slice::from_raw_parts(from, end - first),
                std::slice::from_raw_parts_mut(to, end - first),
            )
        };
        for (o, y) in out.iter_mut().zip(y) {
            // `acc + y`: the same bits as the epilogue's `y + acc`.
            *o += *y;
        }
    }

    /// Rows `rows_start..rows_end` of the product at batch index tuple `vars` (rows past
    /// `m` when the batch is folded into the rows: they are the next tuples' rows), summed
    /// over the summed dimensions: one `gemm` call when they fold into the depth, else
    /// one per summed index, accumulating into `out`.
    ///
    /// # Safety
    /// As for [`ContractPlan::product`].
    unsafe fn matrix_product(
        &self,
        ops: Operands<'_>,
        vars: &[i64],
        rows_start: u64,
        rows_end: u64,
        cols: (u64, u64),
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { self.matrix_product_from(ops, vars, (rows_start, rows_end), cols, false) }
    }

    /// [`Self::matrix_product`], its first `gemm` call adding onto what `out` holds when
    /// `onto`.
    ///
    /// # Safety
    /// As for [`ContractPlan::product`]; with `onto`, those elements of `out` are set.
    unsafe fn matrix_product_from(
        &self,
        ops: Operands<'_>,
        vars: &[i64],
        (rows_start, rows_end): (u64, u64),
        cols: (u64, u64),
        onto: bool,
    ) {
        // `out` is contiguous [batch..., m, n].
        let flat_batch = vars
            .iter()
            .zip(&self.batch_extents)
            .fold(0i64, |acc, (v, e)| acc * *e as i64 + v);
        let dst_row = flat_batch as u64 * self.m + rows_start;
        let rows = (rows_start, rows_end);
        let mut operand_vars = vars.to_vec();
        operand_vars.resize(vars.len() + self.summed_extents.len(), 0);
        // Summed in the depth: one call. Otherwise one call per summed index, each after
        // the first adding to the sum so far.
        let depth = if self.summed_in_depth {
            self.depth
        } else {
            self.k
        };
        if !self.summed_in_depth && self.summed_extents.contains(&0) {
            return;
        }
        let mut accumulate = onto;
        loop {
            // SAFETY: forwarded from the caller; with `accumulate`, `dst` holds the sum
            // so far.
            unsafe {
                self.gemm_call(
                    ops,
                    None,
                    &operand_vars,
                    dst_row,
                    (rows, cols),
                    Depth { depth, accumulate },
                )
            };
            accumulate = true;
            if self.summed_in_depth
                || !next_index(&mut operand_vars[vars.len()..], &self.summed_extents)
            {
                break;
            }
        }
        // Each term adds its product (unbatched: no variables) onto the sum so far.
        for t in &ops.c.terms {
            let depth = Depth {
                depth: t.k.resolve(self.batch),
                accumulate: true,
            };
            // SAFETY: forwarded from the caller; `dst` holds the product so far.
            unsafe { self.gemm_call(ops, Some(t), &[], dst_row, (rows, cols), depth) };
        }
    }

    /// `out` rows from `dst_row`, columns `cols.0..cols.1`, `(:)= a x b` over `depth`,
    /// for rows `rows.0..rows.1` of the operands at variables `vars` (batch, then summed);
    /// [`Depth::accumulate`] adds to what `out` holds.
    ///
    /// # Safety
    /// As for [`ContractPlan::product`]; with `accumulate`, those rows of `out` hold
    /// finite values.
    unsafe fn gemm_call(
        &self,
        ops: Operands<'_>,
        term: Option<&Term>,
        vars: &[i64],
        dst_row: u64,
        (rows, cols): ((u64, u64), (u64, u64)),
        depth: Depth,
    ) {
        let Depth { depth, accumulate } = depth;
        let batch = self.batch as i64;
        let operand = |op: &MatrixOperand| {
            (
                op.offset.eval(vars, batch) as isize,
                op.row_stride.eval(vars, batch) as isize,
                op.col_stride.eval(vars, batch) as isize,
            )
        };
        let Operands { c, bufs, rhs } = ops;
        // A term's operands, never copied nor folded; else the contraction's own.
        let (a, b, copy) = match term {
            Some(t) => (&t.a, &t.b, None),
            None => (&c.a, &c.b, rhs),
        };
        let (a_offset, a_rs, a_cs) = operand(a);
        // Folded, the rows of the batch indices are one matrix's (`batch_folds_into_rows`).
        let a_rs = match self.folded {
            Some(_) => self.folded_row_stride as isize,
            None => a_rs,
        };
        let (b_offset, b_rs, b_cs) = operand(b);
        let n = self.n as isize;
        let (col, cols) = (cols.0 as isize, cols.1.saturating_sub(cols.0));
        if cols == 0 {
            return;
        }
        let dst = bufs
            .f32_ptr(c.out)
            .wrapping_offset(dst_row as isize * n + col);
        let lhs = bufs
            .f32_ptr(a.buf)
            .cast_const()
            .wrapping_offset(a_offset + rows.0 as isize * a_rs);
        if let Some(window) = b.window.as_deref() {
            // Validation keeps windows out of summed products: nothing to accumulate.
            let p = super::window::WindowOperands {
                a: lhs,
                a_strides: (a_rs, a_cs),
                image: bufs.f32_ptr(b.buf).cast_const().wrapping_offset(b_offset),
                rows: (rows.1 - rows.0) as usize,
                cols: (col as usize, col as usize + cols as usize),
                dst,
                dst_rs: n,
            };
            // SAFETY: as for `gemm` below; the bounds check proved the image inside the
            // operand's slot at every batch index.
            unsafe { super::window::window_product(&p, window) };
            return;
        }
        // A row-major copy (`TransposedRhs`) starts at its matrix's first element.
        let (rhs, b_rs, b_cs) = match copy {
            Some(RowMajorRhs(copy)) => (copy.wrapping_offset(col), n, 1),
            None => (
                bufs.f32_ptr(b.buf)
                    .cast_const()
                    .wrapping_offset(b_offset + col * b_cs),
                b_rs,
                b_cs,
            ),
        };
        // SAFETY: as for `gemm` below; one row of `dst` is `cols` contiguous values.
        if rows.1 - rows.0 == 1
            && unsafe {
                super::gemv::row_times_matrix(
                    lhs,
                    a_cs,
                    rhs,
                    (b_rs, b_cs),
                    depth as usize,
                    cols as usize,
                    dst,
                    accumulate,
                )
            }
        {
            return;
        }
        let call_columns = self.call_columns((a, b), copy, rows.1 - rows.0);
        for (first, width) in call_pieces((0, cols), col as u64, call_columns) {
            let first = first as isize;
            // SAFETY: the caller guarantees these rows of `dst` and the operands' elements
            // (addressed with the kernel's own offsets and strides) are valid, and that
            // nobody else writes `dst` meanwhile; columns `first..first + width` of them
            // are among those. `read_dst = false` makes `dst := 1 * lhs * rhs` (alpha is
            // ignored), so `out` need not be initialised; `read_dst = true` makes
            // `dst := 1 * dst + 1 * lhs * rhs`.
            unsafe {
                gemm::gemm(
                    (rows.1 - rows.0) as usize,
                    width as usize,
                    depth as usize,
                    dst.wrapping_offset(first),
                    1,
                    n,
                    accumulate,
                    lhs,
                    a_cs,
                    a_rs,
                    rhs.wrapping_offset(first * b_cs),
                    b_cs,
                    b_rs,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_kernels::ir::{Dim, Expr, Index};

    unsafe extern "C" fn nothing(_: *const *mut u8, _: i64, _: i64, _: i64) {}

    fn job(units: u64, work: u64) -> Job<'static> {
        Job {
            f: nothing,
            units,
            work,
            contract: None,
            rhs: None,
        }
    }

    /// `[batch, m, k] x [k, n]` with `a`'s matrices `a_step` elements apart and `b`'s
    /// `b_step` apart (0: one matrix shared by the batch).
    fn batched_product(m: u64, n: u64, k: u64, a_step: i64, b_step: i64) -> Contraction {
        let (n_, k_) = (n as i64, k as i64);
        Contraction {
            batch: vec![Dim::Batch],
            summed: vec![],
            m: Dim::Fixed(m),
            n: Dim::Fixed(n),
            k: Dim::Fixed(k),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Var(0).mul(Index::Const(a_step)),
                row_stride: Index::Const(k_),
                col_stride: Index::Const(1),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Var(0).mul(Index::Const(b_step)),
                row_stride: Index::Const(n_),
                col_stride: Index::Const(1),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }
    }

    #[test]
    fn dense_over_a_sequence_is_one_product_of_batch_times_m_rows() {
        // W4's dense layers: [16, 64, 128] x [128, 512], a contiguous input.
        let c = batched_product(64, 512, 128, 64 * 128, 0);
        let plan = ContractPlan::new(&c, 16);
        // 1024 rows in blocks of 128: two batch indices per block.
        assert_eq!(plan.folded, Some(2));
        assert_eq!(plan.blocks(), 8);
        assert_eq!(plan.block_rows(7), (14, 16));
    }

    #[test]
    fn batched_rhs_or_gapped_lhs_stays_one_product_per_batch_index() {
        let per_sample_rhs = batched_product(64, 512, 128, 64 * 128, 128 * 512);
        assert_eq!(ContractPlan::new(&per_sample_rhs, 16).folded, None);
        // `a`'s matrices are two matrices apart (a slice of a larger buffer).
        let gapped = batched_product(64, 512, 128, 2 * 64 * 128, 0);
        let plan = ContractPlan::new(&gapped, 16);
        assert_eq!(plan.folded, None);
        assert_eq!(plan.blocks(), 16);
    }

    /// Runs `plan`'s product of `c` block by block, its left-hand operand `rows x k`
    /// and its right-hand one `k x n`, both row-major from element 0, and checks every
    /// output against its sum.
    fn assert_blocks_compute_the_product(
        c: &Contraction,
        plan: &ContractPlan,
        (rows, n, k): (u64, u64, u64),
    ) {
        let mut a: Vec<f32> = (0..rows * k).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut out = vec![f32::NAN; (rows * n) as usize];
        let ptrs = [
            a.as_mut_ptr().cast::<u8>(),
            b.as_mut_ptr().cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
        ];
        let bufs = SharedBuffers(&ptrs);
        for block in 0..plan.blocks() {
            let (start, end) = plan.block_rows(block);
            let ops = Operands { c, bufs, rhs: None };
            // SAFETY: the buffers hold the operands and the output at this batch size.
            unsafe { plan.product(ops, start, end, (0, n)) };
        }
        for row in 0..rows as usize {
            for col in 0..n as usize {
                let want: f32 = (0..k as usize)
                    .map(|i| a[row * k as usize + i] * b[i * n as usize + col])
                    .sum();
                assert_eq!(out[row * n as usize + col], want, "({row}, {col})");
            }
        }
    }

    /// The bits of `plan`'s product of `c` over outermost rows `outer`, computed column
    /// range by column range (`ranges`), from operands `a` and `b` and, if given, a
    /// row-major copy of the right-hand operand's matrix.
    fn product_bits(
        (c, plan): (&Contraction, &ContractPlan),
        (a, b): (&[f32], &[f32]),
        copy: Option<&[f32]>,
        outer: (u64, u64),
        ranges: &[(u64, u64)],
    ) -> Vec<u32> {
        let matrices: u64 = plan.batch_extents.iter().product();
        let mut out = vec![f32::NAN; (matrices * plan.m * plan.n) as usize];
        let ptrs = [
            a.as_ptr().cast_mut().cast::<u8>(),
            b.as_ptr().cast_mut().cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
        ];
        let ops = Operands {
            c,
            bufs: SharedBuffers(&ptrs),
            rhs: copy.map(|copy| RowMajorRhs(copy.as_ptr())),
        };
        for &cols in ranges {
            // SAFETY: the buffers hold the operands and the output, and the copy (if any)
            // is the right-hand operand's matrix row-major.
            unsafe { plan.product(ops, outer.0, outer.1, cols) };
        }
        out.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn folded_product_matches_per_sample_products() {
        let (batch, m, n, k) = (5u64, 7u64, 3u64, 4u64);
        let c = batched_product(m, n, k, (m * k) as i64, 0);
        let plan = ContractPlan::new(&c, batch);
        assert!(plan.folded.is_some());
        assert_blocks_compute_the_product(&c, &plan, (batch * m, n, k));
    }

    #[test]
    fn one_row_per_batch_index_folds_at_the_step_between_the_rows() {
        // A recurrent layer's input projection at batch 1: product `t` reads row `t` of
        // `x[1, T, k]` through a time-major view (offset `t * k`, row stride `T * k`,
        // which one row never uses).
        let (steps, n, k) = (6u64, 5u64, 3u64);
        let mut c = batched_product(1, n, k, k as i64, 0);
        c.batch = vec![Dim::Fixed(steps)];
        c.a.row_stride = Index::Const((steps * k) as i64);
        let plan = ContractPlan::new(&c, 1);
        assert!(plan.folded.is_some());
        assert_eq!(plan.folded_row_stride, k as i64);
        assert_blocks_compute_the_product(&c, &plan, (steps, n, k));
        // Rows that go backwards, or two rows a batch index, do not fold this way.
        let mut backwards = c.clone();
        backwards.a.offset = Index::Const(((steps - 1) * k) as i64)
            .add(Index::Var(0).mul(Index::Const(-(k as i64))));
        assert_eq!(ContractPlan::new(&backwards, 1).folded, None);
        let mut two_rows = c;
        two_rows.m = Dim::Fixed(2);
        assert_eq!(ContractPlan::new(&two_rows, 1).folded, None);
    }

    #[test]
    fn a_product_by_column_ranges_is_the_whole_product_bit_for_bit() {
        let (batch, m, n, k) = (1u64, 9u64, 40u64, 33u64);
        let c = batched_product(m, n, k, (m * k) as i64, 0);
        let plan = ContractPlan::new(&c, batch);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.37 - 2.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 3) % 11) as f32 * 0.21 - 1.0)
            .collect();
        let run = |ranges: &[(u64, u64)]| product_bits((&c, &plan), (&a, &b), None, (0, 1), ranges);
        let whole = run(&[(0, n)]);
        assert!(whole.iter().all(|&x| f32::from_bits(x).is_finite()));
        assert_eq!(run(&[(0, 16), (16, 32), (32, n)]), whole);
    }

    #[test]
    fn products_have_the_same_bits_at_every_thread_count_and_from_a_row_major_copy() {
        // `gemm` sums a deep product (depth > 512) in blocks whose size can depend on a
        // call's shape, and cuts a call reading a transposed operand into narrow ones:
        // whichever columns a thread starts at, each output must come out of the same
        // sum. Few rows and many, shallow and deep, columns left over a group.
        for (m, k, n) in [
            (40u64, 600u64, 200u64),
            (100, 600, 200),
            (100, 300, 152),
            (20, 100, 70),
            (70, 40, 33),
            (65, 513, 97),
        ] {
            for layout in ["nn", "nt", "tn"] {
                let mut c = batched_product(m, n, k, 0, 0);
                c.batch.clear();
                c.a.offset = Index::Const(0);
                if layout == "tn" {
                    // a[m, k] read from `[k, m]` (a weight gradient's `gᵀ`).
                    c.a.row_stride = Index::Const(1);
                    c.a.col_stride = Index::Const(m as i64);
                } else if layout == "nt" {
                    // b[k, n] read from `[n, k]` (a dense layer's weight).
                    c.b.row_stride = Index::Const(1);
                    c.b.col_stride = Index::Const(k as i64);
                }
                let plan = ContractPlan::new(&c, 1);
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7) % 19) as f32 * 0.173 - 1.5)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 5) % 23) as f32 * 0.091 - 1.0)
                    .collect();
                let copy = plan.transposed_rhs.map(|t| t.row_major(&b));
                let run = |threads: u64, copy: Option<&[f32]>| {
                    let bounds = column_bounds(n, threads, plan.depth);
                    let ranges: Vec<(u64, u64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
                    product_bits((&c, &plan), (&a, &b), copy, (0, m), &ranges)
                };
                let one = run(1, None);
                assert!(one.iter().all(|&x| f32::from_bits(x).is_finite()));
                for threads in 1..=6 {
                    for (what, bits) in [
                        ("", run(threads, None)),
                        (" from a copy", run(threads, copy.as_deref())),
                    ] {
                        let differ = bits.iter().zip(&one).filter(|(x, y)| x != y).count();
                        assert_eq!(differ, 0, "{layout} {m}x{k}x{n} on {threads} threads{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn calls_cover_their_range_in_pieces_at_multiples_of_their_width() {
        let pieces = |range, offset, most| call_pieces(range, offset, most).collect::<Vec<_>>();
        assert_eq!(pieces((0, 100), 0, None), [(0, 100)]);
        // From column 48 of the product: 64-column calls end at 64, 128.
        assert_eq!(
            pieces((0, 100), 48, Some(64)),
            [(0, 16), (16, 64), (80, 20)]
        );
        // Fewer than a group left over: the last call takes them.
        assert_eq!(pieces((0, 70), 0, Some(64)), [(0, 70)]);
        assert_eq!(pieces((0, 40), 0, Some(16)), [(0, 16), (16, 24)]);
        assert_eq!(column_bounds(200, 4, 100).as_slice(), [0, 48, 96, 144, 200]);
        assert_eq!(column_bounds(10, 3, 100).as_slice(), [0, 10, 10, 10]);
        assert_eq!(column_bounds(784, 2, 100).as_slice(), [0, 400, 784]);
        // Deep: at least 80 columns a thread.
        assert_eq!(
            column_bounds(200, 4, 600).as_slice(),
            [0, 96, 200, 200, 200]
        );
        assert_eq!(column_bounds(64, 2, 600).as_slice(), [0, 64, 64]);
    }

    #[test]
    fn a_row_major_copy_of_a_transposed_operand_gives_the_same_product() {
        // b[k, n] = w[n * k + i]: a dense layer's `[out, in]` weight, from element 5.
        let (m, n, k) = (7u64, 37u64, 19u64);
        let mut c = batched_product(m, n, k, 0, 0);
        c.batch.clear();
        c.a.offset = Index::Const(0);
        c.b = MatrixOperand {
            buf: 1,
            offset: Index::Const(5),
            row_stride: Index::Const(1),
            col_stride: Index::Const(k as i64),
            window: None,
        };
        let plan = ContractPlan::new(&c, 1);
        let t = plan.transposed_rhs.expect("a transposed operand");
        assert_eq!(
            (t.slot, t.offset, t.k, t.n, t.end()),
            (1, 5, k, n, Some(5 + k * n))
        );
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5) % 17) as f32 * 0.3 - 2.0)
            .collect();
        let w: Vec<f32> = (0..5 + k * n)
            .map(|i| ((i * 3) % 13) as f32 * 0.2 - 1.0)
            .collect();
        let copy = t.row_major(&w);
        for i in 0..k as usize {
            for j in 0..n as usize {
                assert_eq!(copy[i * n as usize + j], w[5 + j * k as usize + i]);
            }
        }
        let run = |copy: Option<&[f32]>, cols: &[(u64, u64)]| {
            product_bits((&c, &plan), (&a, &w), copy, (0, m), cols)
        };
        let whole = run(None, &[(0, n)]);
        assert_eq!(run(Some(&copy), &[(0, n)]), whole);
        assert_eq!(run(Some(&copy), &[(0, 16), (16, n)]), whole);
        // One row (read as dot products), not transposed (row-major already), or varying
        // with the batch: no copy.
        let mut one_row = c.clone();
        one_row.m = Dim::Fixed(1);
        assert_eq!(ContractPlan::new(&one_row, 1).transposed_rhs, None);
        let mut row_major = c.clone();
        row_major.b.row_stride = Index::Const(n as i64);
        row_major.b.col_stride = Index::Const(1);
        assert_eq!(ContractPlan::new(&row_major, 1).transposed_rhs, None);
        let per_sample = batched_product(m, n, k, (m * k) as i64, (k * n) as i64);
        assert_eq!(ContractPlan::new(&per_sample, 3).transposed_rhs, None);
    }

    #[test]
    fn threads_get_equal_work_not_equal_units() {
        // One heavy unit (a product's block), then 99 light ones (a map's rows).
        let jobs = [job(1, 1000), job(99, 99)];
        assert_eq!(work_bounds(&jobs, 1).as_slice(), [0, 100]);
        // Half the work is inside the first unit: the second thread gets the rest.
        assert_eq!(work_bounds(&jobs, 2).as_slice(), [0, 1, 100]);
        // Even work: even units.
        assert_eq!(
            work_bounds(&[job(10, 10), job(10, 10)], 4).as_slice(),
            [0, 5, 10, 15, 20]
        );
        // No units at all.
        assert_eq!(work_bounds(&[], 3).as_slice(), [0, 0, 0, 0]);
        // A light unit before a heavy one: each its own range (cut at the nearest unit).
        assert_eq!(
            work_bounds(&[job(1, 221), job(1, 2760)], 2).as_slice(),
            [0, 1, 2]
        );
    }

    /// When each range of `bounds` ends if threads take them in turn, each the next
    /// when it is free, units costing `cost(unit)`: the last thread's finish.
    fn finish(bounds: &[u64], threads: usize, cost: impl Fn(u64) -> u64) -> u64 {
        let mut free = vec![0u64; threads];
        for range in bounds.windows(2) {
            let next = free.iter_mut().min().expect("a thread");
            *next += (range[0]..range[1]).map(&cost).sum::<u64>();
        }
        free.into_iter().max().unwrap_or(0)
    }

    #[test]
    fn guided_ranges_shrink_so_threads_finish_within_a_unit_of_each_other() {
        // W3's weight gradients: 8 row blocks of a product, 8 column chunks of a bias
        // gradient, a small product, a small map.
        let jobs = [job(8, 52_000), job(8, 4_000), job(1, 100), job(10, 10)];
        let units = 27;
        let cost = |u: u64| match u {
            0..8 => 6_500,
            8..16 => 500,
            16 => 100,
            _ => 1,
        };
        let total: u64 = (0..units).map(cost).sum();
        for threads in [2u64, 3, 4] {
            let bounds = guided_bounds(&jobs, threads);
            assert_eq!((bounds[0], bounds[bounds.len() - 1]), (0, units));
            assert!(bounds.windows(2).all(|r| r[0] < r[1]), "{bounds:?}");
            let finish = finish(&bounds, threads as usize, cost);
            assert!(
                finish <= total / threads + 6_500,
                "{threads}: {bounds:?}: {finish}"
            );
        }
        // Even work: the first range is a quarter, the later ones shrink to a sixteenth.
        let even = guided_bounds(&[job(1600, 1600)], 2);
        assert_eq!(even[1], 400);
        let sizes: Vec<u64> = even.windows(2).map(|r| r[1] - r[0]).collect();
        assert!(sizes.windows(2).all(|s| s[0] >= s[1]), "{sizes:?}");
        assert!(
            sizes.iter().all(|&s| s <= 400) && sizes[..sizes.len() - 1].iter().all(|&s| s >= 100)
        );
        assert_eq!(guided_bounds(&[], 2).as_slice(), [0, 0]);
    }
}
