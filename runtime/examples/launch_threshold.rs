//! Prints what splitting a launch across threads costs and saves, to choose
//! `LaunchOptions::min_work_per_thread`: the fastest of many launches of a map
//! (`out = tanh(x) * y + x`) and of a contraction, on one thread and on two, by size, and
//! the median of two-thread launches that each follow 200 us of work on the caller alone.
//!
//! `cargo run --release -p strata-runtime --example launch_threshold`

use std::time::{Duration, Instant};
use strata_kernels::cpu::emit_clif;
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ScalarType, Store, UnaryOp,
};
use strata_runtime::cpu::{JitCode, LaunchOptions, launch_with};

fn buffer(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape: shape.to_vec(),
        access,
    }
}

fn map(rows: u64, cols: u64) -> Kernel {
    let shape = [Dim::Fixed(rows), Dim::Fixed(cols)];
    let at = Index::row_major(&[Index::Var(0), Index::Var(1)], &shape);
    let x = || Expr::load(0, at.clone());
    Kernel {
        name: "map".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("y", &shape, Access::Read),
            buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 2,
                index: at.clone(),
                value: Expr::binary(
                    BinaryOp::Add,
                    Expr::binary(
                        BinaryOp::Mul,
                        Expr::unary(UnaryOp::Tanh, x()),
                        Expr::load(1, at.clone()),
                    ),
                    x(),
                ),
            }],
        },
    }
}

fn matmul(m: u64, n: u64, k: u64, b_transposed: bool) -> Kernel {
    let operand = |buf, rs: u64, cs: u64| MatrixOperand {
        buf,
        offset: Index::Const(0),
        row_stride: Index::Const(rs as i64),
        col_stride: Index::Const(cs as i64),
        window: None,
    };
    Kernel {
        name: "matmul".into(),
        buffers: vec![
            buffer("a", &[Dim::Fixed(m), Dim::Fixed(k)], Access::Read),
            buffer("b", &[Dim::Fixed(k), Dim::Fixed(n)], Access::Read),
            buffer("out", &[Dim::Fixed(m), Dim::Fixed(n)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Fixed(m),
            n: Dim::Fixed(n),
            k: Dim::Fixed(k),
            a: operand(0, k, 1),
            b: if b_transposed {
                operand(1, 1, k)
            } else {
                operand(1, n, 1)
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

/// The fastest of `reps` launches with `threads` threads, or with `idle` the median of
/// launches that each follow 200 us of work on the calling thread alone.
fn timed(kernel: &Kernel, sizes: [u64; 3], threads: usize, reps: usize, idle: bool) -> Duration {
    let code = JitCode::compile(&emit_clif(std::slice::from_ref(kernel)).unwrap()).unwrap();
    let f = [code.get(&kernel.name).unwrap()];
    let mut storage: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n as usize]).collect();
    let ptrs: Vec<*mut u8> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
    let options = LaunchOptions {
        threads: Some(threads),
        min_work_per_thread: 1,
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        if idle {
            // Work on the caller alone first, as between a recurrent step's launches.
            let until = Instant::now() + Duration::from_micros(200);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let started = Instant::now();
        // SAFETY: every buffer has its declared size; `f` is `kernel`'s code, alive.
        unsafe { launch_with(kernel, &f, &ptrs, 1, &options) };
        times.push(started.elapsed());
    }
    times.sort();
    if idle {
        times[times.len() / 2]
    } else {
        times[0]
    }
}

fn main() {
    println!(
        "{:>28} {:>10} {:>12} {:>12} {:>16}",
        "kernel", "work", "1 thread", "2 threads", "2 after idle"
    );
    let report = |what: String, work: u64, one: Duration, two: Duration, cold: Duration| {
        println!(
            "{what:>28} {work:>10} {:>9.1} us {:>9.1} us {:>13.1} us",
            one.as_secs_f64() * 1e6,
            two.as_secs_f64() * 1e6,
            cold.as_secs_f64() * 1e6
        );
    };
    // The fixed costs: a launch of two points, run by one thread or split between two.
    let tiny = map(2, 1);
    report(
        "map 2 x 1".into(),
        2,
        timed(&tiny, [2, 2, 2], 1, 2000, false),
        timed(&tiny, [2, 2, 2], 2, 2000, false),
        timed(&tiny, [2, 2, 2], 2, 200, true),
    );
    for rows in [4u64, 16, 64, 256, 1024, 4096] {
        let k = map(rows, 256);
        let n = rows * 256;
        let reps = (4_000_000 / n).clamp(20, 2000) as usize;
        report(
            format!("map {rows} x 256"),
            n,
            timed(&k, [n, n, n], 1, reps, false),
            timed(&k, [n, n, n], 2, reps, false),
            timed(&k, [n, n, n], 2, reps.min(200), true),
        );
    }
    for (m, n, k) in [
        (1u64, 512, 128),
        (8, 512, 128),
        (32, 512, 128),
        (64, 128, 128),
        (64, 512, 128),
        (64, 128, 512),
        (128, 512, 128),
        (512, 512, 128),
    ] {
        // Batch 1 reads the weight transposed, as a recurrent step's `h W_hhᵀ` does.
        let kernel = matmul(m, n, k, m == 1);
        let sizes = [m * k, k * n, m * n];
        let reps = (200_000_000 / (m * n * k)).clamp(20, 2000) as usize;
        report(
            format!("matmul {m} x {n} x {k}"),
            m * n * k,
            timed(&kernel, sizes, 1, reps, false),
            timed(&kernel, sizes, 2, reps, false),
            timed(&kernel, sizes, 2, reps.min(200), true),
        );
    }
}
