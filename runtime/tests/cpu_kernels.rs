//! The CPU backend end to end: kernels built by hand, emitted as CLIF, JIT-compiled,
//! launched, and compared with the reference evaluator (`strata_kernels::eval`).

use strata_kernels::cpu::{Features, emit_clif_for};
use strata_kernels::eval::eval_kernel;
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ReduceOp, ScalarType, Store, UnaryOp,
};
use strata_runtime::cpu::{
    JitCode, LaunchOptions, LaunchPlan, SeatShares, SeatedLaunch, launch, launch_seated,
    launch_with,
};

// ---------------------------------------------------------------------------------------
// Harness

/// Runs `kernel` on the CPU backend, its code emitted for the baseline target;
/// `buffers[slot]` holds each slot's initial contents (rounded to the slot's dtype) and
/// comes back with the results.
fn run_cpu(
    kernel: &Kernel,
    buffers: &[Vec<f64>],
    batch: u64,
    options: Option<&LaunchOptions>,
) -> Vec<Vec<f64>> {
    run_cpu_on(Features::default(), kernel, buffers, batch, options)
}

/// The targets whose code the math tests run: the baseline (no FMA) and this host, when
/// it has more (a session's code).
fn targets() -> Vec<Features> {
    let mut all = vec![Features::default(), Features::host()];
    all.dedup();
    all
}

/// The CLIF of `kernels` for the baseline target.
fn emit_clif_base(kernels: &[Kernel]) -> Result<String, strata_kernels::ir::KernelError> {
    emit_clif_for(kernels, Features::default())
}

/// [`run_cpu`] with the code emitted for a target with `features`.
fn run_cpu_on(
    features: Features,
    kernel: &Kernel,
    buffers: &[Vec<f64>],
    batch: u64,
    options: Option<&LaunchOptions>,
) -> Vec<Vec<f64>> {
    let text = emit_clif_for(std::slice::from_ref(kernel), features).unwrap();
    let code = JitCode::compile(&text).unwrap();
    let f: Vec<_> = kernel
        .function_names()
        .iter()
        .map(|name| code.get(name).unwrap())
        .collect();
    let mut storage: Vec<Vec<u32>> = kernel
        .buffers
        .iter()
        .zip(buffers)
        .map(|(decl, values)| values.iter().map(|v| to_bits(decl.dtype, *v)).collect())
        .collect();
    let ptrs: Vec<*mut u8> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
    // SAFETY: each buffer has exactly its declared size at `batch` (checked by the
    // reference run on the same data), and `f` was compiled from `kernel` by `code`, alive.
    unsafe {
        match options {
            Some(o) => launch_with(kernel, &f, &ptrs, batch, o),
            None => launch(kernel, &f, &ptrs, batch),
        }
    }
    kernel
        .buffers
        .iter()
        .zip(&storage)
        .map(|(decl, bits)| bits.iter().map(|b| from_bits(decl.dtype, *b)).collect())
        .collect()
}

fn to_bits(dtype: ScalarType, v: f64) -> u32 {
    match dtype {
        ScalarType::F32 => (v as f32).to_bits(),
        ScalarType::I32 => (v as i32) as u32,
    }
}

fn from_bits(dtype: ScalarType, b: u32) -> f64 {
    match dtype {
        ScalarType::F32 => f64::from(f32::from_bits(b)),
        ScalarType::I32 => f64::from(b as i32),
    }
}

/// The reference results, from the same inputs rounded to their dtype.
fn run_reference(kernel: &Kernel, buffers: &[Vec<f64>], batch: u64) -> Vec<Vec<f64>> {
    let mut rounded: Vec<Vec<f64>> = kernel
        .buffers
        .iter()
        .zip(buffers)
        .map(|(decl, values)| {
            values
                .iter()
                .map(|v| from_bits(decl.dtype, to_bits(decl.dtype, *v)))
                .collect()
        })
        .collect();
    eval_kernel(kernel, &mut rounded, batch).unwrap();
    rounded
}

/// `|got - want| <= rel * |want| + abs` element-wise on every written buffer, where `want`
/// is the exact result rounded to f32 (so beyond f32's range it is an infinity); NaN
/// matches NaN and infinities match exactly.
fn assert_matches_reference(kernel: &Kernel, buffers: &[Vec<f64>], batch: u64, rel: f64, abs: f64) {
    let want = run_reference(kernel, buffers, batch);
    let got = run_cpu(kernel, buffers, batch, None);
    for (slot, decl) in kernel.buffers.iter().enumerate() {
        if decl.access == Access::Read {
            continue;
        }
        for (i, (g, w)) in got[slot].iter().zip(&want[slot]).enumerate() {
            let w = &f64::from(*w as f32);
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= rel * w.abs() + abs;
            assert!(
                ok,
                "{} batch {batch}: `{}`[{i}] = {g}, reference {w}",
                kernel.name, decl.name
            );
        }
    }
}

/// Deterministic pseudo-random values in `lo..hi` (xorshift64*).
fn values(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * u
        })
        .collect()
}

fn buffer(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape: shape.to_vec(),
        access,
    }
}

fn var(v: usize) -> Index {
    Index::Var(v)
}

fn row_major(coords: &[Index], shape: &[Dim]) -> Index {
    Index::row_major(coords, shape)
}

fn identity_index(shape: &[Dim]) -> Index {
    row_major(&(0..shape.len()).map(var).collect::<Vec<_>>(), shape)
}

fn numel(shape: &[Dim], batch: u64) -> usize {
    shape.iter().map(|d| d.resolve(batch) as usize).product()
}

/// Zero-filled (output) or random (input) contents for every buffer of `kernel`.
fn inputs(kernel: &Kernel, batch: u64, lo: f64, hi: f64) -> Vec<Vec<f64>> {
    kernel
        .buffers
        .iter()
        .enumerate()
        .map(|(slot, decl)| {
            let n = numel(&decl.shape, batch);
            match decl.access {
                Access::Write => vec![0.0; n],
                _ => values(n, lo, hi, slot as u64 + 1),
            }
        })
        .collect()
}

fn map_kernel(name: &str, buffers: Vec<BufferDecl>, space: &[Dim], stores: Vec<Store>) -> Kernel {
    Kernel {
        name: name.into(),
        buffers,
        body: KernelBody::Map {
            space: space.to_vec(),
            stores,
        },
    }
}

/// `out = value` point by point over `space`, `value` reading slot 0, `x` (of shape
/// `input`); `out` (slot 1) has the space's shape.
fn map_of_x(name: &str, input: &[Dim], space: &[Dim], value: Expr) -> Kernel {
    map_kernel(
        name,
        vec![
            buffer("x", input, Access::Read),
            buffer("out", space, Access::Write),
        ],
        space,
        vec![Store {
            buf: 1,
            index: identity_index(space),
            value,
        }],
    )
}

/// `out[i] = op(x[i])` over `n` elements.
fn unary_map(op: UnaryOp, n: u64) -> Kernel {
    let shape = [Dim::Fixed(n)];
    map_of_x(
        op.name(),
        &shape,
        &shape,
        Expr::unary(op, Expr::load(0, var(0))),
    )
}

// ---------------------------------------------------------------------------------------
// Maps

/// `out[b, j] = x[b, j] + bias[j]` over `[batch, 5]`.
fn bias_add() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(5)];
    map_kernel(
        "bias_add",
        vec![
            buffer("x", &shape, Access::Read),
            buffer("bias", &[Dim::Fixed(5)], Access::Read),
            buffer("out", &shape, Access::Write),
        ],
        &shape,
        vec![Store {
            buf: 2,
            index: identity_index(&shape),
            value: Expr::binary(
                BinaryOp::Add,
                Expr::load(0, identity_index(&shape)),
                Expr::load(1, var(1)),
            ),
        }],
    )
}

#[test]
fn broadcast_add_over_the_batch_matches_the_reference() {
    let kernel = bias_add();
    for batch in [1, 7, 33] {
        let bufs = inputs(&kernel, batch, -10.0, 10.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 0.0);
    }
}

#[test]
fn zero_batch_runs_nothing() {
    let kernel = bias_add();
    let bufs = inputs(&kernel, 0, -1.0, 1.0);
    let got = run_cpu(&kernel, &bufs, 0, None);
    assert!(got[2].is_empty());
}

#[test]
fn transpose_map_matches_the_reference() {
    let (rows, cols) = (Dim::Fixed(37), Dim::Fixed(19));
    let kernel = map_kernel(
        "transpose",
        vec![
            buffer("x", &[rows, cols], Access::Read),
            buffer("out", &[cols, rows], Access::Write),
        ],
        &[rows, cols],
        vec![Store {
            buf: 1,
            index: row_major(&[var(1), var(0)], &[cols, rows]),
            value: Expr::load(0, identity_index(&[rows, cols])),
        }],
    );
    let bufs = inputs(&kernel, 1, -1.0, 1.0);
    assert_matches_reference(&kernel, &bufs, 1, 0.0, 0.0);
}

#[test]
fn elementwise_activations_match_the_reference() {
    let n = 4096;
    for (op, lo, hi) in [
        (UnaryOp::Relu, -5.0, 5.0),
        (UnaryOp::Exp, -80.0, 80.0),
        (UnaryOp::Log, 1e-30, 1e30),
        (UnaryOp::Tanh, -12.0, 12.0),
        (UnaryOp::Erf, -6.0, 6.0),
        (UnaryOp::Sigmoid, -80.0, 80.0),
        (UnaryOp::Sqrt, 0.0, 1e6),
        (UnaryOp::Recip, 0.1, 1e3),
        (UnaryOp::Neg, -1.0, 1.0),
        (UnaryOp::Abs, -1.0, 1.0),
    ] {
        let kernel = unary_map(op, n);
        let mut bufs = inputs(&kernel, 1, lo, hi);
        // Extremes and special values at the front.
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e-40,
            -1e-40,
            3e38,
            -3e38,
        ];
        bufs[0][..specials.len()].copy_from_slice(&specials);
        assert_matches_reference(&kernel, &bufs, 1, 1e-6, 0.0);
    }
}

/// A map with two stores into an `i32` and an `f32` buffer, a comparison of an `i32` load
/// with a loop index (one-hot) and a guarded select whose arms load out of range for the
/// other half (concatenation).
#[test]
fn one_hot_concat_and_integer_stores_match_the_reference() {
    let (rows, classes) = (Dim::Fixed(9), Dim::Fixed(4));
    let labels = BufferDecl {
        name: "labels".into(),
        dtype: ScalarType::I32,
        shape: vec![rows],
        access: Access::Read,
    };
    let counts = BufferDecl {
        name: "scaled".into(),
        dtype: ScalarType::I32,
        shape: vec![rows, classes],
        access: Access::Write,
    };
    let one_hot = Expr::binary(
        BinaryOp::Eq,
        Expr::load(0, var(0)),
        Expr::IndexValue(var(1)),
    );
    // concat along columns: j < 2 ? a[i, j] : b[i, j - 2]
    let concat = Expr::Select {
        cond: Box::new(Expr::binary(
            BinaryOp::Lt,
            Expr::IndexValue(var(1)),
            Expr::Const(2.0),
        )),
        then: Box::new(Expr::load(
            1,
            row_major(&[var(0), var(1)], &[rows, Dim::Fixed(2)]),
        )),
        otherwise: Box::new(Expr::load(
            2,
            row_major(
                &[var(0), var(1).add(Index::Const(-2))],
                &[rows, Dim::Fixed(2)],
            ),
        )),
    };
    let kernel = map_kernel(
        "one_hot_concat",
        vec![
            labels,
            buffer("a", &[rows, Dim::Fixed(2)], Access::Read),
            buffer("b", &[rows, Dim::Fixed(2)], Access::Read),
            buffer("one_hot", &[rows, classes], Access::Write),
            buffer("concat", &[rows, classes], Access::Write),
            counts,
        ],
        &[rows, classes],
        vec![
            Store {
                buf: 3,
                index: identity_index(&[rows, classes]),
                value: one_hot,
            },
            Store {
                buf: 4,
                index: identity_index(&[rows, classes]),
                value: concat.clone(),
            },
            Store {
                buf: 5,
                index: identity_index(&[rows, classes]),
                value: Expr::binary(BinaryOp::Mul, concat, Expr::Const(10.0)),
            },
        ],
    );
    let mut bufs = inputs(&kernel, 1, -3.0, 3.0);
    bufs[0] = (0..9).map(|i| f64::from(i % 4)).collect();
    assert_matches_reference(&kernel, &bufs, 1, 0.0, 0.0);
}

#[test]
fn index_division_and_remainder_match_the_reference() {
    // out[i] = x[i / 3] * 10 + x[i % 5] + x[(i / 4) % 2], from a flat space of 30.
    let n = Dim::Fixed(30);
    let div = |i: Index, d| Index::Div(Box::new(i), d);
    let rem = |i: Index, d| Index::Rem(Box::new(i), d);
    let value = Expr::binary(
        BinaryOp::Add,
        Expr::binary(
            BinaryOp::Mul,
            Expr::load(0, div(var(0), 3)),
            Expr::Const(10.0),
        ),
        Expr::binary(
            BinaryOp::Add,
            Expr::load(0, rem(var(0), 5)),
            Expr::load(0, rem(div(var(0), 4), 2)),
        ),
    );
    let kernel = map_kernel(
        "div_rem",
        vec![
            buffer("x", &[Dim::Fixed(10)], Access::Read),
            buffer("out", &[n], Access::Write),
        ],
        &[n],
        vec![Store {
            buf: 1,
            index: var(0),
            value,
        }],
    );
    let bufs = inputs(&kernel, 1, -1.0, 1.0);
    assert_matches_reference(&kernel, &bufs, 1, 1e-6, 0.0);
}

/// Divisions the emitter counts per loop instead of dividing per point (chained, with
/// large and carried steps, offsets, a power of two a counter needs, operands over two
/// variables) and some it must keep (a division of a remainder, a batch stride), over odd
/// extents, each stored as an index value; plus a nested reduction dividing its own
/// variable.
fn division_patterns() -> Kernel {
    let space = [Dim::Batch, Dim::Fixed(7), Dim::Fixed(37)];
    let div = |i: Index, d| Index::Div(Box::new(i), d);
    let rem = |i: Index, d| Index::Rem(Box::new(i), d);
    let c = Index::Const;
    let patterns = vec![
        div(var(2), 5),
        rem(var(2), 5),
        rem(div(var(2), 5), 3),
        div(var(2), 37),
        rem(var(2).mul(c(24)).add(c(3)), 5),
        div(var(2).mul(c(24)).add(c(3)), 5),
        div(var(1).mul(c(37)).add(var(2)), 9),
        rem(var(1).mul(c(37)).add(var(2)), 9),
        rem(var(2).add(c(13)), 12),
        rem(div(var(2).mul(c(3)), 4), 5),
        div(rem(div(var(2), 3), 4), 3),
        div(var(2).mul(Index::Batch), 3),
        rem(var(0).mul(c(7)).add(var(1)), 6),
        div(div(var(2), 6).mul(c(11)).add(var(1)), 7),
    ];
    let n = patterns.len() as u64;
    let out = [Dim::Batch, Dim::Fixed(7), Dim::Fixed(37), Dim::Fixed(n + 1)];
    let at = |k: u64| row_major(&[var(0), var(1), var(2), Index::Const(k as i64)], &out);
    let mut stores: Vec<Store> = patterns
        .into_iter()
        .enumerate()
        .map(|(k, ix)| Store {
            buf: 1,
            index: at(k as u64),
            value: Expr::IndexValue(ix),
        })
        .collect();
    // sum over j < 10 of x[b, (i2 + 3 j) / 7 % 5]: divisions of the fold's own variable.
    stores.push(Store {
        buf: 1,
        index: at(n),
        value: Expr::Reduce {
            op: ReduceOp::Sum,
            extent: vec![Dim::Fixed(10)],
            value: Box::new(Expr::load(
                0,
                row_major(
                    &[var(0), rem(div(var(2).add(var(3).mul(c(3))), 7), 5)],
                    &[Dim::Batch, Dim::Fixed(5)],
                ),
            )),
        },
    });
    map_kernel(
        "division_patterns",
        vec![
            buffer("x", &[Dim::Batch, Dim::Fixed(5)], Access::Read),
            buffer("out", &out, Access::Write),
        ],
        &space,
        stores,
    )
}

#[test]
fn counted_divisions_match_the_reference_for_every_row_split() {
    let kernel = division_patterns();
    for batch in [1, 3] {
        let bufs = inputs(&kernel, batch, -1.0, 1.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 0.0);
    }
    // Rows that start past 0 start every counter there.
    assert_thread_count_invariant(&kernel, 5);
}

/// `out[b, y, x] = max over a 3 x 3 window + sum over a 2 x 2 window weighted by the tap`:
/// nested reductions small enough to be emitted without loops.
fn window_reductions() -> Kernel {
    let image = [Dim::Batch, Dim::Fixed(7), Dim::Fixed(9)];
    let out = [Dim::Batch, Dim::Fixed(5), Dim::Fixed(7)];
    let tap = |di: usize, dj: usize| {
        row_major(&[var(0), var(1).add(var(di)), var(2).add(var(dj))], &image)
    };
    let max = Expr::Reduce {
        op: ReduceOp::Max,
        extent: vec![Dim::Fixed(3), Dim::Fixed(3)],
        value: Box::new(Expr::load(0, tap(3, 4))),
    };
    let weighted = Expr::Reduce {
        op: ReduceOp::Sum,
        extent: vec![Dim::Fixed(2), Dim::Fixed(2)],
        value: Box::new(Expr::binary(
            BinaryOp::Mul,
            Expr::load(0, tap(3, 4)),
            Expr::IndexValue(var(3).mul(Index::Const(2)).add(var(4))),
        )),
    };
    map_of_x(
        "window_reductions",
        &image,
        &out,
        Expr::binary(BinaryOp::Add, max, weighted),
    )
}

#[test]
fn unrolled_window_reductions_match_the_reference() {
    let kernel = window_reductions();
    for batch in [1, 2] {
        let bufs = inputs(&kernel, batch, -1.0, 1.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-6);
    }
}

/// `out[b, r, j] = op over w < stride of x[b, r, j * stride + w]`: a pooling window's
/// reduction, whose loads step by `stride` from one output to the next.
fn strided_pool(op: ReduceOp, stride: u64) -> Kernel {
    let cols = 4 * 2 + 3;
    let space = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(cols)];
    let image = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(cols * stride)];
    let column = var(2).mul(Index::Const(stride as i64)).add(var(3));
    Kernel {
        name: "strided_pool".into(),
        buffers: vec![
            buffer("x", &image, Access::Read),
            buffer("out", &space, Access::Write),
        ],
        body: KernelBody::Reduce {
            space: space.to_vec(),
            reduce: vec![Dim::Fixed(stride)],
            op,
            value: Expr::load(0, row_major(&[var(0), var(1), column], &image)),
            out: Store {
                buf: 1,
                index: identity_index(&space),
                value: Expr::Acc,
            },
        },
    }
}

#[test]
fn a_pooling_window_reads_strided_elements_four_outputs_at_a_time() {
    for stride in [2, 3, 16] {
        for op in [ReduceOp::Max, ReduceOp::Sum] {
            let kernel = strided_pool(op, stride);
            let text = emit_clif_base(std::slice::from_ref(&kernel)).unwrap();
            assert!(
                text.contains("f32x4"),
                "stride {stride} is not vectorized:\n{text}"
            );
            // Step 2: two overlapping loads of four and a shuffle; larger steps: one load
            // per lane (a sum shuffles its halves anyway).
            assert_eq!(text.contains("insertlane"), stride > 2, "{text}");
            if op == ReduceOp::Max {
                assert_eq!(text.contains("shuffle"), stride == 2, "{text}");
            }
            for batch in [1, 3] {
                let bufs = inputs(&kernel, batch, -1.0, 1.0);
                assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-6);
            }
        }
    }
}

/// `out[b, i, j] = exp(x[b, i, j] - max_k x[b, i, k]) / sum_k exp(x[b, i, k] - max) +
/// min_k x[b, i, k]`: a softmax's row folds nested in the map, over rows of `cols`.
fn row_folds(cols: u64) -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(cols)];
    let at = |k: usize| row_major(&[var(0), var(1), var(k)], &shape);
    let fold = |op, value: Expr| Expr::Reduce {
        op,
        extent: vec![Dim::Fixed(cols)],
        value: Box::new(value),
    };
    // A fold's variable is the next one after those bound where it is: 3 in the map, 4
    // inside the sum's fold.
    let max = |scope: usize| fold(ReduceOp::Max, Expr::load(0, at(scope)));
    let shifted = |k: usize| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(BinaryOp::Sub, Expr::load(0, at(k)), max(k + 1)),
        )
    };
    let softmax = Expr::binary(BinaryOp::Div, shifted(2), fold(ReduceOp::Sum, shifted(3)));
    let value = Expr::binary(
        BinaryOp::Add,
        softmax,
        fold(ReduceOp::Min, Expr::load(0, at(3))),
    );
    map_of_x("row_folds", &shape, &shape, value)
}

#[test]
fn row_folds_run_four_points_at_a_time_and_match_the_reference() {
    for cols in [7, 8, 11, 64, 4 * 9 + 3] {
        let kernel = row_folds(cols);
        let text = emit_clif_base(std::slice::from_ref(&kernel)).unwrap();
        // Rows of more than nine points fold in lanes (the lanes combined at the end);
        // shorter ones are unrolled.
        assert_eq!(
            text.contains("extractlane.f64x2"),
            cols > 9,
            "{cols}:\n{text}"
        );
        for batch in [1, 2] {
            let bufs = inputs(&kernel, batch, -3.0, 3.0);
            assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-7);
        }
        assert_thread_count_invariant(&kernel, 2);
    }
}

/// A max pool's backward over windows of `w` in a row: `out[b, r, j, k] = (x[b, r, j w + k]
/// == max_i x[b, r, j w + i]) * g[b, r, j] / count of the maxima`, over `[batch, 3, 11, w]`
/// (the lanes run along `j`, each point of `k` unrolled; the stores step by `w`).
fn window_backward(w: u64) -> Kernel {
    let space = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(11), Dim::Fixed(w)];
    let image = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(11 * w)];
    let pooled = [Dim::Batch, Dim::Fixed(3), Dim::Fixed(11)];
    let tap = |k: usize| {
        let column = var(2).mul(Index::Const(w as i64)).add(var(k));
        Expr::load(0, row_major(&[var(0), var(1), column], &image))
    };
    let window = |op, value: Expr| Expr::Reduce {
        op,
        extent: vec![Dim::Fixed(w)],
        value: Box::new(value),
    };
    // A fold's variable is the next after those bound where it is.
    let is_max = |k: usize| Expr::binary(BinaryOp::Eq, tap(k), window(ReduceOp::Max, tap(k + 1)));
    let count = window(ReduceOp::Sum, is_max(4));
    let g = Expr::load(1, row_major(&[var(0), var(1), var(2)], &pooled));
    map_kernel(
        "window_backward",
        vec![
            buffer("x", &image, Access::Read),
            buffer("g", &pooled, Access::Read),
            buffer("out", &space, Access::Write),
        ],
        &space,
        vec![Store {
            buf: 2,
            index: identity_index(&space),
            value: Expr::binary(
                BinaryOp::Div,
                Expr::binary(BinaryOp::Mul, is_max(3), g),
                count,
            ),
        }],
    )
}

#[test]
fn lanes_run_along_a_row_of_windows_unrolling_each_window() {
    for w in [1, 2, 3] {
        let kernel = window_backward(w);
        let text = emit_clif_base(std::slice::from_ref(&kernel)).unwrap();
        assert!(text.contains("f32x4"), "window of {w}:\n{text}");
        // A window wider than one element stores each lane alone.
        assert_eq!(text.contains(" = extractlane "), w > 1, "{text}");
        for batch in [1, 2] {
            let mut bufs = inputs(&kernel, batch, -1.0, 1.0);
            // Ties inside windows, so that counts above one occur.
            for (i, x) in bufs[0].iter_mut().enumerate() {
                if i % 5 == 1 {
                    *x = 0.75;
                }
            }
            bufs[0].iter_mut().step_by(7).for_each(|x| *x = 0.75);
            assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-7);
        }
        assert_thread_count_invariant(&kernel, 2);
    }
}

#[test]
fn pow_matches_the_reference() {
    let n = Dim::Fixed(512);
    let x = || Expr::load(0, var(0));
    let y = || Expr::load(1, var(0));
    let stores = [
        Expr::binary(BinaryOp::Pow, x(), Expr::Const(2.0)),
        Expr::binary(BinaryOp::Pow, x(), Expr::Const(3.0)),
        Expr::binary(BinaryOp::Pow, x(), Expr::Const(-1.0)),
        Expr::binary(
            BinaryOp::Pow,
            Expr::unary(UnaryOp::Abs, x()),
            Expr::Const(0.5),
        ),
        Expr::binary(
            BinaryOp::Pow,
            Expr::unary(UnaryOp::Abs, x()),
            Expr::Const(-0.5),
        ),
        Expr::binary(
            BinaryOp::Pow,
            Expr::unary(UnaryOp::Abs, x()),
            Expr::Const(1.7),
        ),
        Expr::binary(BinaryOp::Pow, Expr::unary(UnaryOp::Abs, x()), y()),
        // Negative bases with integer exponents.
        Expr::binary(
            BinaryOp::Pow,
            x(),
            Expr::unary(UnaryOp::Neg, Expr::Const(3.0)),
        ),
    ];
    let mut buffers = vec![
        buffer("x", &[n], Access::Read),
        buffer("y", &[n], Access::Read),
    ];
    let mut kernel_stores = Vec::new();
    for (i, value) in stores.into_iter().enumerate() {
        buffers.push(buffer(&format!("out{i}"), &[n], Access::Write));
        kernel_stores.push(Store {
            buf: i + 2,
            index: var(0),
            value,
        });
    }
    let kernel = map_kernel("pow", buffers, &[n], kernel_stores);
    let mut bufs = inputs(&kernel, 1, -4.0, 4.0);
    bufs[0][0] = 0.0;
    bufs[1][1] = 0.0;
    // |b log a| <= 4 * 1.4 here: pow's error bound is ~|b log a| * 6e-8.
    assert_matches_reference(&kernel, &bufs, 1, 2e-6, 1e-30);
}

// ---------------------------------------------------------------------------------------
// Math accuracy against f64, over the f32 range where the result is normal.

/// Distance in f32 ulps between `got` and the exact `want`, measured in units of the
/// spacing of f32 numbers at `want`.
fn ulps(got: f32, want: f64) -> f64 {
    if got as f64 == want {
        return 0.0;
    }
    let w = want as f32;
    let spacing = if w.is_finite() && w != 0.0 {
        let bits = w.abs().to_bits();
        f64::from(f32::from_bits(bits + 1)) - f64::from(f32::from_bits(bits))
    } else {
        f64::from(f32::MIN_POSITIVE) * f64::from(f32::EPSILON)
    };
    (f64::from(got) - want).abs() / spacing
}

struct Accuracy {
    max_ulps: f64,
    max_rel: f64,
    worst_x: f32,
}

/// Runs `op` on the CPU over `xs` and measures it against its `f64` semantics
/// ([`UnaryOp::apply`], what both reference evaluators compute).
fn measure(op: UnaryOp, xs: &[f32]) -> Accuracy {
    let kernel = unary_map(op, xs.len() as u64);
    let bufs = vec![
        xs.iter().map(|x| f64::from(*x)).collect(),
        vec![0.0; xs.len()],
    ];
    let mut acc = Accuracy {
        max_ulps: 0.0,
        max_rel: 0.0,
        worst_x: 0.0,
    };
    // The worst over every target's code (multiply-adds fused or not).
    let results: Vec<f64> = targets()
        .into_iter()
        .flat_map(|f| run_cpu_on(f, &kernel, &bufs, 1, None).swap_remove(1))
        .collect();
    for (x, g) in xs.iter().cycle().zip(&results) {
        let want = op.apply(f64::from(*x));
        if want.abs() < f64::from(f32::MIN_POSITIVE) || want.abs() > f64::from(f32::MAX) {
            continue;
        }
        let u = ulps(*g as f32, want);
        if u > acc.max_ulps {
            acc.max_ulps = u;
            acc.worst_x = *x;
        }
        acc.max_rel = acc.max_rel.max((g - want).abs() / want.abs());
    }
    eprintln!(
        "{op:?}: max {:.2} ulp (at x = {:e}), max relative error {:.2e}",
        acc.max_ulps, acc.worst_x, acc.max_rel
    );
    acc
}

/// `n` f32 values evenly spread over `lo..hi`, plus every 4099th f32 bit pattern inside
/// that range (so every exponent, with many mantissas).
fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect();
    for bits in (0..u32::MAX).step_by(4099) {
        let x = f32::from_bits(bits);
        if x >= lo && x <= hi {
            xs.push(x);
        }
    }
    xs
}

#[test]
fn exp_is_within_2_ulp() {
    let acc = measure(UnaryOp::Exp, &sweep(-87.336_54, 88.722_83, 200_000));
    assert!(acc.max_ulps <= 2.0 && acc.max_rel < 1e-6);
}

#[test]
fn log_is_within_2_ulp() {
    let acc = measure(UnaryOp::Log, &sweep(0.0, f32::MAX, 200_000));
    assert!(acc.max_ulps <= 2.0 && acc.max_rel < 1e-6);
}

#[test]
fn tanh_is_within_2_5_ulp() {
    let acc = measure(UnaryOp::Tanh, &sweep(-20.0, 20.0, 200_000));
    // expm1 (as exp's), an addition and a division (2.29 ulp at worst, near x = 0.06).
    assert!(acc.max_ulps <= 2.5 && acc.max_rel < 1e-6);
}

/// erf's error is absolute (see `strata_kernels::erf`): near zero it is relative too,
/// since the polynomial is odd, and near ±1 a few ulp of the result.
#[test]
fn erf_is_within_1_5e_7_absolute_and_keeps_its_special_values() {
    for features in targets() {
        let xs = sweep(-8.0, 8.0, 400_000);
        let kernel = unary_map(UnaryOp::Erf, xs.len() as u64);
        let bufs = vec![
            xs.iter().map(|x| f64::from(*x)).collect(),
            vec![0.0; xs.len()],
        ];
        let got = run_cpu_on(features, &kernel, &bufs, 1, None);
        let mut worst = (0.0f64, 0.0f32);
        for (x, g) in xs.iter().zip(&got[1]) {
            let err = (g - UnaryOp::Erf.apply(f64::from(*x))).abs();
            if err > worst.0 {
                worst = (err, *x);
            }
        }
        eprintln!(
            "Erf: max absolute error {:.2e} at x = {:e}",
            worst.0, worst.1
        );
        assert!(worst.0 < 1.5e-7, "erf off by {} at {}", worst.0, worst.1);
        for (x, want) in [
            (f64::INFINITY, 1.0),
            (f64::NEG_INFINITY, -1.0),
            (-0.0, -0.0),
            (0.0, 0.0),
        ] {
            let got = run_cpu_on(
                features,
                &unary_map(UnaryOp::Erf, 1),
                &[vec![x], vec![0.0]],
                1,
                None,
            )[1][0];
            assert!(
                got == want && got.is_sign_negative() == f64::is_sign_negative(want),
                "erf({x}) = {got}"
            );
        }
        let got = run_cpu_on(
            features,
            &unary_map(UnaryOp::Erf, 1),
            &[vec![f64::NAN], vec![0.0]],
            1,
            None,
        )[1][0];
        assert!(got.is_nan(), "erf(NaN) = {got}");
    }
}

#[test]
fn sigmoid_is_within_2_5_ulp() {
    let acc = measure(UnaryOp::Sigmoid, &sweep(-87.0, 40.0, 200_000));
    // exp, an addition and a division, as tanh.
    assert!(acc.max_ulps <= 2.5 && acc.max_rel < 1e-6);
}

#[test]
fn math_special_cases() {
    for features in targets() {
        // `kernel` at one point `x`.
        let one = |kernel: &Kernel, x: f64| {
            run_cpu_on(features, kernel, &[vec![x], vec![0.0]], 1, None)[1][0]
        };
        let inf = f64::INFINITY;
        let cases: [(UnaryOp, f64, f64); 20] = [
            (UnaryOp::Exp, inf, inf),
            (UnaryOp::Exp, -inf, 0.0),
            (UnaryOp::Exp, 89.0, inf),
            (UnaryOp::Exp, -104.0, 0.0),
            (UnaryOp::Exp, 0.0, 1.0),
            (UnaryOp::Log, 0.0, -inf),
            (UnaryOp::Log, -0.0, -inf),
            (UnaryOp::Log, -1.0, f64::NAN),
            (UnaryOp::Log, inf, inf),
            (UnaryOp::Log, -inf, f64::NAN),
            (UnaryOp::Log, 1.0, 0.0),
            (UnaryOp::Tanh, inf, 1.0),
            (UnaryOp::Tanh, -inf, -1.0),
            (UnaryOp::Tanh, 100.0, 1.0),
            (UnaryOp::Tanh, -0.0, -0.0),
            (UnaryOp::Sigmoid, inf, 1.0),
            (UnaryOp::Sigmoid, -inf, 0.0),
            (UnaryOp::Sigmoid, 0.0, 0.5),
            (UnaryOp::Relu, -0.0, 0.0),
            (UnaryOp::Relu, -inf, 0.0),
        ];
        for (op, x, want) in cases {
            let kernel = unary_map(op, 1);
            let got = one(&kernel, x);
            let ok = (got.is_nan() && want.is_nan())
                || (got == want && got.is_sign_negative() == want.is_sign_negative());
            assert!(ok, "{op:?}({x}) = {got}, expected {want}");
        }
        for op in [UnaryOp::Exp, UnaryOp::Log, UnaryOp::Tanh, UnaryOp::Sigmoid] {
            let kernel = unary_map(op, 1);
            let got = one(&kernel, f64::NAN);
            assert!(got.is_nan(), "{op:?}(NaN) = {got}");
        }
        // Results that would be subnormal are 0 (the runtime flushes subnormals anyway); the
        // smallest normal results are exact to an ulp, down to ln 2^-126.
        let kernel = unary_map(UnaryOp::Exp, 1);
        let got = one(&kernel, -100.0);
        assert_eq!(got, 0.0);
        let edge = -87.336_54f32;
        let got = one(&kernel, f64::from(edge));
        let want = f64::from(edge).exp();
        assert!(got >= f64::from(f32::MIN_POSITIVE), "exp({edge}) = {got}");
        assert!(
            ulps(got as f32, want) <= 1.0,
            "exp({edge}) = {got}, want {want}"
        );
        let top = 88.722_83f32;
        let got = one(&kernel, f64::from(top));
        assert!(
            got.is_finite() && ulps(got as f32, f64::from(top).exp()) <= 1.0,
            "exp({top}) = {got}"
        );
        let got = one(&kernel, 88.722_84);
        assert_eq!(got, f64::INFINITY);
        let kernel = unary_map(UnaryOp::Log, 1);
        let got = one(&kernel, 1e-40);
        assert!(
            (got - (1e-40f32 as f64).ln()).abs() < 1e-5,
            "log(1e-40) = {got}"
        );
        let kernel = unary_map(UnaryOp::Sigmoid, 1);
        let got = one(&kernel, -100.0);
        assert_eq!(got, 0.0);
        let got = one(&kernel, -80.0);
        assert!(
            ulps(got as f32, (-80f64).exp() / (1.0 + (-80f64).exp())) <= 2.5,
            "{got}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Vector code: the innermost loop of a map runs four points at a time in `f32x4`.

/// What a point of [`elementwise`] stores, from its `x` and `y`.
type PointValue = dyn Fn(Expr, Expr) -> Expr;

/// `out[p] = value(x[p], y[p])` over `n` points: as a map over `[n]` (four points at a
/// time, the last `n % 4` one at a time) or over `[n, 1]` (one at a time throughout).
fn elementwise(value: &PointValue, n: u64, vector: bool) -> Kernel {
    let shape = if vector {
        vec![Dim::Fixed(n)]
    } else {
        vec![Dim::Fixed(n), Dim::Fixed(1)]
    };
    let point = identity_index(&shape);
    map_kernel(
        "elementwise",
        vec![
            buffer("x", &shape, Access::Read),
            buffer("y", &shape, Access::Read),
            buffer("out", &shape, Access::Write),
        ],
        &shape,
        vec![Store {
            buf: 2,
            index: point.clone(),
            value: value(Expr::load(0, point.clone()), Expr::load(1, point)),
        }],
    )
}

#[test]
fn vector_lanes_compute_the_bits_of_the_scalar_loop() {
    for features in targets() {
        // Ordinary values, both signs, special values and subnormals, in an order that puts
        // each kind in every lane and in the scalar tail (1001 points: 250 vectors and 1).
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e-40,
            -1e-40,
            1.0,
            -1.0,
            0.5,
            2.0,
            3.0,
            100.0,
            -100.0,
        ];
        let n = 1001;
        let x: Vec<f64> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    specials[(i / 3) % specials.len()]
                } else {
                    values(1, -30.0, 30.0, i as u64)[0]
                }
            })
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    specials[(i / 5 + 3) % specials.len()]
                } else {
                    values(1, -4.0, 4.0, 7 + i as u64)[0].round()
                }
            })
            .collect();
        let unary = |op: UnaryOp| move |x: Expr, _: Expr| Expr::unary(op, x);
        let binary = |op: BinaryOp| move |x: Expr, y: Expr| Expr::binary(op, x, y);
        let cases: Vec<(String, Box<PointValue>)> = vec![
            ("exp".into(), Box::new(unary(UnaryOp::Exp))),
            ("log".into(), Box::new(unary(UnaryOp::Log))),
            ("tanh".into(), Box::new(unary(UnaryOp::Tanh))),
            ("erf".into(), Box::new(unary(UnaryOp::Erf))),
            ("sigmoid".into(), Box::new(unary(UnaryOp::Sigmoid))),
            ("sqrt".into(), Box::new(unary(UnaryOp::Sqrt))),
            ("recip".into(), Box::new(unary(UnaryOp::Recip))),
            ("relu".into(), Box::new(unary(UnaryOp::Relu))),
            ("abs".into(), Box::new(unary(UnaryOp::Abs))),
            ("neg".into(), Box::new(unary(UnaryOp::Neg))),
            ("pow".into(), Box::new(binary(BinaryOp::Pow))),
            ("max".into(), Box::new(binary(BinaryOp::Max))),
            ("min".into(), Box::new(binary(BinaryOp::Min))),
            ("div".into(), Box::new(binary(BinaryOp::Div))),
            ("lt".into(), Box::new(binary(BinaryOp::Lt))),
            ("eq".into(), Box::new(binary(BinaryOp::Eq))),
            (
                "pow 3".into(),
                Box::new(|x, _| Expr::binary(BinaryOp::Pow, x, Expr::Const(3.0))),
            ),
            (
                "pow 1.5".into(),
                Box::new(|x, _| Expr::binary(BinaryOp::Pow, x, Expr::Const(1.5))),
            ),
            (
                "select".into(),
                Box::new(|x: Expr, y: Expr| Expr::Select {
                    cond: Box::new(Expr::binary(BinaryOp::Gt, x.clone(), y.clone())),
                    then: Box::new(Expr::unary(UnaryOp::Tanh, x)),
                    otherwise: Box::new(Expr::binary(BinaryOp::Mul, y, Expr::Const(0.5))),
                }),
            ),
        ];
        for (name, value) in &cases {
            let text = emit_clif_for(&[elementwise(value, n as u64, true)], features).unwrap();
            assert!(text.contains("f32x4"), "{name} is not vectorized:\n{text}");
            let bufs = vec![x.clone(), y.clone(), vec![0.0; n]];
            let vector = run_cpu_on(
                features,
                &elementwise(value, n as u64, true),
                &bufs,
                1,
                None,
            );
            let scalar = run_cpu_on(
                features,
                &elementwise(value, n as u64, false),
                &bufs,
                1,
                None,
            );
            for i in 0..n {
                let (v, s) = (vector[2][i] as f32, scalar[2][i] as f32);
                assert!(
                    v.to_bits() == s.to_bits() || (v.is_nan() && s.is_nan()),
                    "{name} at point {i} (x = {}, y = {}): {v:e} in a vector, {s:e} alone",
                    x[i],
                    y[i]
                );
            }
            // And both are what the reference computes, for finite inputs (the special cases
            // have tests of their own).
            let kernel = elementwise(value, n as u64, true);
            let want = run_reference(&kernel, &bufs, 1);
            for i in (0..n).filter(|&i| x[i].is_finite() && y[i].is_finite()) {
                // The reference computes in f64: compare at f32.
                let (g, w) = (vector[2][i], f64::from(want[2][i] as f32));
                let close = (g.is_nan() && w.is_nan())
                    || g == w
                    || (g - w).abs() <= 1e-5 * w.abs().max(1e-30);
                assert!(close, "{name} at point {i}: {g:e}, reference {w:e}");
            }
        }
    }
}

#[test]
fn an_in_place_update_reads_each_old_value_once_in_vectors() {
    // `m = 0.9 m + g; w = w - 0.1 m'` with m' the new m: the Adam-like shape of the
    // optimizer updates, every buffer read at the index it is written. 4k + 3 points.
    let n = 4 * 37 + 3;
    let shape = [Dim::Fixed(n)];
    let p = var(0);
    let m = || Expr::load(0, var(0));
    let new_m = || {
        Expr::binary(
            BinaryOp::Add,
            Expr::binary(BinaryOp::Mul, Expr::Const(0.9), m()),
            Expr::load(2, var(0)),
        )
    };
    let kernel = map_kernel(
        "update",
        vec![
            buffer("m", &shape, Access::ReadWrite),
            buffer("w", &shape, Access::ReadWrite),
            buffer("g", &shape, Access::Read),
        ],
        &shape,
        vec![
            Store {
                buf: 0,
                index: p.clone(),
                value: new_m(),
            },
            Store {
                buf: 1,
                index: p,
                value: Expr::binary(
                    BinaryOp::Sub,
                    Expr::load(1, var(0)),
                    Expr::binary(BinaryOp::Mul, Expr::Const(0.1), new_m()),
                ),
            },
        ],
    );
    let text = emit_clif_base(std::slice::from_ref(&kernel)).unwrap();
    assert!(text.contains("load.f32x4"), "{text}");
    assert_matches_reference(&kernel, &inputs(&kernel, 1, -1.0, 1.0), 1, 1e-6, 1e-6);
}

/// `out[j] = epilogue(fold_b value(g[b, j]))` over `[cols]`, folded over the batch: four
/// columns at a time when `cols` is the innermost extent, one at a time when the space is
/// `[cols, 1]`.
fn column_fold(op: ReduceOp, cols: u64, vector: bool) -> Kernel {
    let space = if vector {
        vec![Dim::Fixed(cols)]
    } else {
        vec![Dim::Fixed(cols), Dim::Fixed(1)]
    };
    // The batch variable comes after the space's.
    let b = Index::Var(space.len());
    let g = Expr::load(0, b.mul(Index::Const(cols as i64)).add(var(0)));
    Kernel {
        name: "column_fold".into(),
        buffers: vec![
            buffer("g", &[Dim::Batch, Dim::Fixed(cols)], Access::Read),
            buffer("scale", &[Dim::Fixed(cols)], Access::Read),
            buffer("out", &space, Access::Write),
        ],
        body: KernelBody::Reduce {
            space: space.clone(),
            reduce: vec![Dim::Batch],
            op,
            value: Expr::binary(BinaryOp::Mul, g, Expr::Const(0.37)),
            out: Store {
                buf: 2,
                index: identity_index(&space),
                value: Expr::binary(BinaryOp::Mul, Expr::Acc, Expr::load(1, var(0))),
            },
        },
    }
}

#[test]
fn a_reduction_over_the_batch_folds_four_columns_at_a_time_with_the_scalar_bits() {
    // Three passes of four vectors, one of one vector, three columns alone.
    let cols = 16 * 3 + 4 + 3;
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        let vector = column_fold(op, cols, true);
        let text = emit_clif_base(std::slice::from_ref(&vector)).unwrap();
        assert!(text.contains("f32x4"), "{op:?} is not vectorized:\n{text}");
        for batch in [0, 1, 7, 100] {
            let bufs = vec![
                values(batch as usize * cols as usize, -10.0, 10.0, 3),
                values(cols as usize, 0.5, 2.0, 4),
                vec![0.0; cols as usize],
            ];
            let got = run_cpu(&vector, &bufs, batch, None);
            let scalar = run_cpu(&column_fold(op, cols, false), &bufs, batch, None);
            for j in 0..cols as usize {
                assert_eq!(
                    (got[2][j] as f32).to_bits(),
                    (scalar[2][j] as f32).to_bits(),
                    "{op:?} column {j} at batch {batch}: {} in a vector, {} alone",
                    got[2][j],
                    scalar[2][j]
                );
            }
            if batch > 0 {
                assert_matches_reference(&vector, &bufs, batch, 1e-6, 1e-6);
            }
        }
    }
}

#[test]
fn a_column_reduction_splits_its_outputs_in_chunks_across_threads_with_the_same_bits() {
    // `[192]` and `[1, 1, 192]`: three chunks of 64 columns, rows a thread may take.
    for shape in [vec![192], vec![1, 1, 192]] {
        let space: Vec<Dim> = shape.iter().map(|&n| Dim::Fixed(n)).collect();
        let cols = 192;
        let last = space.len() - 1;
        let b = Index::Var(space.len());
        let g = Expr::load(0, b.mul(Index::Const(cols)).add(var(last)));
        let kernel = Kernel {
            name: "chunked_column_sum".into(),
            buffers: vec![
                buffer("g", &[Dim::Batch, Dim::Fixed(cols as u64)], Access::Read),
                buffer("out", &space, Access::Write),
            ],
            body: KernelBody::Reduce {
                space: space.clone(),
                reduce: vec![Dim::Batch],
                op: ReduceOp::Sum,
                value: g,
                out: Store {
                    buf: 1,
                    index: identity_index(&space),
                    value: Expr::Acc,
                },
            },
        };
        assert_eq!(
            strata_kernels::cpu::row_count(&kernel.body, 5),
            3,
            "{shape:?}"
        );
        for batch in [1, 37] {
            assert_thread_count_invariant(&kernel, batch);
            assert_matches_reference(
                &kernel,
                &inputs(&kernel, batch, -1.0, 1.0),
                batch,
                1e-6,
                1e-6,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reductions

/// `out[i] = log(sum_j exp(x[i, j] - max[i])) + max[i]` after `max[i] = max_j x[i, j]`.
fn log_sum_exp(rows: Dim, cols: Dim) -> (Kernel, Kernel) {
    let shape = [rows, cols];
    let x = || Expr::load(0, row_major(&[var(0), var(1)], &shape));
    let row_max = Kernel {
        name: "row_max".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("max", &[rows], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![rows],
            reduce: vec![cols],
            op: ReduceOp::Max,
            value: x(),
            out: Store {
                buf: 1,
                index: var(0),
                value: Expr::Acc,
            },
        },
    };
    let max = || Expr::load(1, var(0));
    let lse = Kernel {
        name: "log_sum_exp".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("max", &[rows], Access::Read),
            buffer("out", &[rows], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![rows],
            reduce: vec![cols],
            op: ReduceOp::Sum,
            value: Expr::unary(UnaryOp::Exp, Expr::binary(BinaryOp::Sub, x(), max())),
            out: Store {
                buf: 2,
                index: var(0),
                value: Expr::binary(BinaryOp::Add, Expr::unary(UnaryOp::Log, Expr::Acc), max()),
            },
        },
    };
    (row_max, lse)
}

#[test]
fn softmax_style_max_then_sum_matches_the_reference() {
    let (rows, cols) = (Dim::Batch, Dim::Fixed(100));
    let (row_max, lse) = log_sum_exp(rows, cols);
    for batch in [1, 7, 33] {
        let x = values(numel(&[rows, cols], batch), -30.0, 30.0, 7);
        let max_bufs = vec![x.clone(), vec![0.0; batch as usize]];
        assert_matches_reference(&row_max, &max_bufs, batch, 0.0, 0.0);
        let max = run_reference(&row_max, &max_bufs, batch).remove(1);
        let lse_bufs = vec![x, max, vec![0.0; batch as usize]];
        assert_matches_reference(&lse, &lse_bufs, batch, 1e-6, 0.0);
    }
}

/// A row softmax over `[rows, cols]` as one map, the row max and sum nested reductions
/// (the max nested again inside the sum): `exp(x - max) / sum(exp(x - max))`.
fn nested_softmax(rows: Dim, cols: u64) -> Kernel {
    let shape = [rows, Dim::Fixed(cols)];
    let x = |col: Index| Expr::load(0, var(0).mul(Index::Const(cols as i64)).add(col));
    let row_max = |scope: usize| Expr::Reduce {
        op: ReduceOp::Max,
        extent: vec![Dim::Fixed(cols)],
        value: Box::new(x(var(scope))),
    };
    let shifted_exp = |col: Index, scope: usize| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(BinaryOp::Sub, x(col), row_max(scope)),
        )
    };
    let sum = Expr::Reduce {
        op: ReduceOp::Sum,
        extent: vec![Dim::Fixed(cols)],
        value: Box::new(shifted_exp(var(2), 3)),
    };
    map_kernel(
        "nested_softmax",
        vec![
            buffer("x", &shape, Access::Read),
            buffer("out", &shape, Access::Write),
        ],
        &shape,
        vec![Store {
            buf: 1,
            index: identity_index(&shape),
            value: Expr::binary(BinaryOp::Div, shifted_exp(var(1), 2), sum),
        }],
    )
}

#[test]
fn nested_reductions_in_a_map_match_the_reference() {
    let kernel = nested_softmax(Dim::Batch, 10);
    for batch in [1, 7, 33] {
        let bufs = inputs(&kernel, batch, -30.0, 30.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-12);
    }
}

#[test]
fn a_nested_reduction_in_a_reduction_over_the_batch_matches_the_reference() {
    // out = sum_{i, j} log(x[i, j] - min_k x[i, k] + 1) / batch: the row min is hoisted
    // out of the reduction's loop over the row.
    let shape = [Dim::Batch, Dim::Fixed(12)];
    let x = |col: Index| Expr::load(0, var(0).mul(Index::Const(12)).add(col));
    let row_min = Expr::Reduce {
        op: ReduceOp::Min,
        extent: vec![Dim::Fixed(12)],
        value: Box::new(x(var(2))),
    };
    let kernel = Kernel {
        name: "centered_log_total".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("out", &[], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![],
            reduce: shape.to_vec(),
            op: ReduceOp::Sum,
            value: Expr::unary(
                UnaryOp::Log,
                Expr::binary(
                    BinaryOp::Add,
                    Expr::binary(BinaryOp::Sub, x(var(1)), row_min),
                    Expr::Const(1.0),
                ),
            ),
            out: Store {
                buf: 1,
                index: Index::Const(0),
                value: Expr::binary(BinaryOp::Div, Expr::Acc, Expr::IndexValue(Index::Batch)),
            },
        },
    };
    for batch in [1, 7, 33] {
        let bufs = inputs(&kernel, batch, -5.0, 5.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 0.0);
    }
}

#[test]
fn sum_over_the_middle_axis_matches_the_reference() {
    // out[i, k] = sum_j x[i, j, k] over x: [4, 6, 5]; variables: i = 0, k = 1, j = 2.
    let shape = [Dim::Fixed(4), Dim::Fixed(6), Dim::Fixed(5)];
    let kernel = Kernel {
        name: "sum_axis1".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("out", &[shape[0], shape[2]], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![shape[0], shape[2]],
            reduce: vec![shape[1]],
            op: ReduceOp::Sum,
            value: Expr::load(0, row_major(&[var(0), var(2), var(1)], &shape)),
            out: Store {
                buf: 1,
                index: identity_index(&[shape[0], shape[2]]),
                value: Expr::Acc,
            },
        },
    };
    let bufs = inputs(&kernel, 1, -1.0, 1.0);
    assert_matches_reference(&kernel, &bufs, 1, 1e-6, 1e-7);
}

#[test]
fn full_reduction_to_a_scalar_matches_the_reference() {
    let shape = [Dim::Fixed(300), Dim::Fixed(7)];
    let kernel = Kernel {
        name: "min_all".into(),
        buffers: vec![
            buffer("x", &shape, Access::Read),
            buffer("out", &[], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![],
            reduce: shape.to_vec(),
            op: ReduceOp::Min,
            value: Expr::load(0, identity_index(&shape)),
            out: Store {
                buf: 1,
                index: Index::Const(0),
                value: Expr::Acc,
            },
        },
    };
    let bufs = inputs(&kernel, 1, -5.0, 5.0);
    assert_matches_reference(&kernel, &bufs, 1, 0.0, 0.0);
}

// ---------------------------------------------------------------------------------------
// Contractions

fn operand(buf: usize, offset: Index, row_stride: i64, col_stride: i64) -> MatrixOperand {
    MatrixOperand {
        buf,
        offset,
        row_stride: Index::Const(row_stride),
        col_stride: Index::Const(col_stride),
        window: None,
    }
}

/// `g = s @ w` (`s: [batch, n]`, `w: [n, 2n]`) and `s = tanh(g[.., j]) * sigmoid(g[.., j +
/// n])`: a recurrent step's product and cell, two kernels over the same slots `(s, w, g)`.
fn recurrent_step(n: u64) -> [Kernel; 2] {
    let slots = || {
        vec![
            buffer("s", &[Dim::Batch, Dim::Fixed(n)], Access::ReadWrite),
            buffer("w", &[Dim::Fixed(n), Dim::Fixed(2 * n)], Access::Read),
            buffer("g", &[Dim::Batch, Dim::Fixed(2 * n)], Access::ReadWrite),
        ]
    };
    let n_ = n as i64;
    let product = Kernel {
        name: "step_product".into(),
        buffers: slots(),
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Batch,
            n: Dim::Fixed(2 * n),
            k: Dim::Fixed(n),
            a: operand(0, Index::Const(0), n_, 1),
            b: operand(1, Index::Const(0), 2 * n_, 1),
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    };
    let gate = |offset: i64| {
        Expr::load(
            2,
            var(0)
                .mul(Index::Const(2 * n_))
                .add(var(1).add(Index::Const(offset))),
        )
    };
    let cell = map_kernel(
        "step_cell",
        slots(),
        &[Dim::Batch, Dim::Fixed(n)],
        vec![Store {
            buf: 0,
            index: identity_index(&[Dim::Batch, Dim::Fixed(n)]),
            value: Expr::binary(
                BinaryOp::Mul,
                Expr::unary(UnaryOp::Tanh, gate(0)),
                Expr::unary(UnaryOp::Sigmoid, gate(n_)),
            ),
        }],
    );
    [product, cell]
}

#[test]
fn a_seated_loop_computes_the_bits_of_launches_one_by_one() {
    let (n, steps) = (128, 12);
    let kernels = recurrent_step(n);
    let code = JitCode::compile(&emit_clif_base(&kernels).unwrap()).unwrap();
    let functions: Vec<Vec<_>> = kernels
        .iter()
        .map(|k| {
            k.function_names()
                .iter()
                .map(|f| code.get(f).unwrap())
                .collect()
        })
        .collect();
    // Small work per thread, so that both kernels split on every seat.
    let options = LaunchOptions {
        threads: Some(2),
        min_work_per_thread: 64,
    };
    for batch in [1, 3, 17, 40] {
        let plans: Vec<LaunchPlan> = kernels.iter().map(|k| LaunchPlan::new(k, batch)).collect();
        // Both kernels touch the state and the gates only at their points' batch rows.
        for plan in &plans {
            assert_eq!(plan.batch_rows(), Some(&[Some(n), None, Some(2 * n)][..]));
        }
        // Weights of at most 2 / n, so that the recurrence does not amplify rounding.
        let scale = [1.0, 2.0 / n as f64, 1.0];
        let start: Vec<Vec<f32>> = inputs(&kernels[0], batch, -1.0, 1.0)
            .iter()
            .zip(scale)
            .map(|(b, scale)| b.iter().map(|&v| (v * scale) as f32).collect())
            .collect();
        let run = |seated: Option<SeatShares>| {
            let mut storage = start.clone();
            let ptrs: Vec<*mut u8> = storage.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
            let launches: Vec<SeatedLaunch> = (0..steps)
                .flat_map(|_| 0..2)
                .map(|k| SeatedLaunch {
                    kernel: &kernels[k],
                    plan: &plans[k],
                    functions: &functions[k],
                    bufs: &ptrs,
                    row_major: &[],
                })
                .collect();
            let mut times = vec![std::time::Duration::ZERO; launches.len()];
            // SAFETY: every slot has its declared size at `batch`; the functions are the
            // kernels' code, alive with `code`.
            unsafe {
                match seated {
                    Some(shares) => launch_seated(&launches, &options, shares, Some(&mut times)),
                    None => launches.iter().for_each(|l| {
                        strata_runtime::cpu::launch_planned(
                            l.kernel,
                            l.plan,
                            l.functions,
                            l.bufs,
                            &[],
                            &options,
                        )
                    }),
                }
            }
            assert!(
                seated.is_none() || times.iter().all(|t| !t.is_zero()),
                "every launch timed"
            );
            storage
        };
        let (one_by_one, seated) = (run(None), run(Some(SeatShares::Launches)));
        assert!(
            one_by_one[0].iter().any(|&v| v != start[0][0]),
            "the state changed"
        );
        for (slot, (a, b)) in one_by_one.iter().zip(&seated).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "batch {batch}: slot {slot} differs seated");
        }
        // Each seat its own batch rows through every step, when a seat's share of the
        // product is enough rows (8) to be computed as the whole product.
        let keeps_bits = plans.iter().all(|p| p.rows_split_keeps_bits(batch / 2));
        assert_eq!(keeps_bits, batch >= 16, "batch {batch}");
        if keeps_bits {
            let by_rows = run(Some(SeatShares::BatchRows));
            for (slot, (a, b)) in one_by_one.iter().zip(&by_rows).enumerate() {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "batch {batch}: slot {slot} differs seated by batch rows"
                );
            }
        }
        // And the reference's: the step `steps` times.
        let mut want: Vec<Vec<f64>> = start
            .iter()
            .map(|b| b.iter().map(|&v| f64::from(v)).collect())
            .collect();
        for _ in 0..steps {
            for k in &kernels {
                want = run_reference(k, &want, batch);
            }
        }
        for (got, want) in seated[0].iter().zip(&want[0]) {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5,
                "{got} vs the reference's {want}"
            );
        }
    }
}

/// `out[b, j] = sigmoid(x[b, j]) * tanh(x[b, j] + h[b, j])` over `[batch, n]`: the
/// arithmetic of an LSTM cell.
fn cell_like(n: u64) -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(n)];
    let x = || Expr::load(0, identity_index(&shape));
    map_kernel(
        "cell_like",
        vec![
            buffer("x", &shape, Access::Read),
            buffer("h", &shape, Access::Read),
            buffer("out", &shape, Access::Write),
        ],
        &shape,
        vec![Store {
            buf: 2,
            index: identity_index(&shape),
            value: Expr::binary(
                BinaryOp::Mul,
                Expr::unary(UnaryOp::Sigmoid, x()),
                Expr::unary(
                    UnaryOp::Tanh,
                    Expr::binary(BinaryOp::Add, x(), Expr::load(1, identity_index(&shape))),
                ),
            ),
        }],
    )
}

#[test]
fn a_map_over_long_rows_runs_by_chunks_of_a_row_and_matches_the_reference() {
    use strata_kernels::cpu::{Rows, row_count, rows_of};
    let kernel = cell_like(192);
    assert_eq!(rows_of(&kernel.body), Rows::Chunks);
    assert_eq!(row_count(&kernel.body, 2), 6);
    for batch in [1, 3] {
        let bufs = inputs(&kernel, batch, -3.0, 3.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-6, 1e-6);
        // Rows that start inside a batch index: chunk 1 of 3 alone, and so on.
        assert_thread_count_invariant(&kernel, batch);
    }
    // A row of 200: not whole chunks, one row per batch index.
    let kernel = cell_like(200);
    assert_eq!(rows_of(&kernel.body), Rows::Leading);
    assert_matches_reference(&kernel, &inputs(&kernel, 2, -3.0, 3.0), 2, 1e-6, 1e-6);
}

/// An LSTM cell's chain over `space` (its last dimension `n`, the rest the batch):
/// `out = σ(o) tanh(σ(f) h + σ(i) tanh(g))` with the gates `i, f, g, o` at `x[.., j +
/// q n]` and `h`: activations applied to activations.
fn lstm_cell(space: &[Dim]) -> Kernel {
    let n = match space.last() {
        Some(Dim::Fixed(n)) => *n as i64,
        _ => panic!("a fixed last dimension"),
    };
    let vars: Vec<Index> = (0..space.len()).map(var).collect();
    let gates: Vec<Dim> = space[..space.len() - 1]
        .iter()
        .copied()
        .chain([Dim::Fixed(4 * n as u64)])
        .collect();
    let gate = |q: i64| {
        let mut at = vars.clone();
        let last = at.len() - 1;
        at[last] = var(last).add(Index::Const(q * n));
        Expr::load(0, row_major(&at, &gates))
    };
    let sigmoid = |q: i64| Expr::unary(UnaryOp::Sigmoid, gate(q));
    let c = Expr::binary(
        BinaryOp::Add,
        Expr::binary(
            BinaryOp::Mul,
            sigmoid(1),
            Expr::load(1, identity_index(space)),
        ),
        Expr::binary(
            BinaryOp::Mul,
            sigmoid(0),
            Expr::unary(UnaryOp::Tanh, gate(2)),
        ),
    );
    map_kernel(
        "lstm_cell",
        vec![
            buffer("x", &gates, Access::Read),
            buffer("h", space, Access::Read),
            buffer("out", space, Access::Write),
            buffer("c", space, Access::Write),
        ],
        space,
        vec![
            Store {
                buf: 2,
                index: identity_index(space),
                value: Expr::binary(
                    BinaryOp::Mul,
                    sigmoid(3),
                    Expr::unary(UnaryOp::Tanh, c.clone()),
                ),
            },
            Store {
                buf: 3,
                index: identity_index(space),
                value: c,
            },
        ],
    )
}

#[test]
fn a_cell_whose_activations_run_in_a_loop_of_their_own_computes_the_same_bits() {
    use strata_kernels::cpu::{Rows, rows_of};
    let n = 128;
    // Chunked rows: its activations are staged (`cpu/lower/stages.rs`).
    let staged = lstm_cell(&[Dim::Batch, Dim::Fixed(n)]);
    assert_eq!(rows_of(&staged.body), Rows::Chunks);
    // The same points over `[batch, 1, n]`: one loop.
    let plain = lstm_cell(&[Dim::Batch, Dim::Fixed(1), Dim::Fixed(n)]);
    assert_eq!(rows_of(&plain.body), Rows::Leading);
    let text = emit_clif_for(std::slice::from_ref(&staged), Features::host()).unwrap();
    assert!(
        text.contains("explicit_slot"),
        "the staged cell keeps its stages on the stack"
    );
    let text = emit_clif_for(std::slice::from_ref(&plain), Features::host()).unwrap();
    assert!(!text.contains("explicit_slot"));
    for batch in [1, 3] {
        let bufs = inputs(&staged, batch, -4.0, 4.0);
        assert_matches_reference(&staged, &bufs, batch, 1e-5, 1e-6);
        for features in targets() {
            let a = run_cpu_on(features, &staged, &bufs, batch, None);
            let b = run_cpu_on(features, &plain, &bufs, batch, None);
            for slot in [2, 3] {
                let same = a[slot]
                    .iter()
                    .zip(&b[slot])
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "batch {batch}, {features:?}: slot {slot} differs staged"
                );
            }
        }
        assert_thread_count_invariant(&staged, batch);
    }
}

/// `out = relu(x @ w + bias)` with `x: [m, k]`, `w: [k, n]`.
fn dense_relu(m: Dim, n: u64, k: u64) -> Kernel {
    Kernel {
        name: "dense_relu".into(),
        buffers: vec![
            buffer("x", &[m, Dim::Fixed(k)], Access::Read),
            buffer("w", &[Dim::Fixed(k), Dim::Fixed(n)], Access::Read),
            buffer("bias", &[Dim::Fixed(n)], Access::Read),
            buffer("out", &[m, Dim::Fixed(n)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m,
            n: Dim::Fixed(n),
            k: Dim::Fixed(k),
            a: operand(0, Index::Const(0), k as i64, 1),
            b: operand(1, Index::Const(0), n as i64, 1),
            out: 3,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, var(1))),
            ),
            terms: Vec::new(),
        }),
    }
}

#[test]
fn contraction_with_bias_relu_epilogue_matches_the_reference() {
    // 150 rows: two full row blocks and a partial one.
    let kernel = dense_relu(Dim::Fixed(150), 37, 29);
    let bufs = inputs(&kernel, 1, -1.0, 1.0);
    assert_matches_reference(&kernel, &bufs, 1, 1e-5, 1e-5);
}

#[test]
fn contraction_over_the_batch_matches_the_reference() {
    let kernel = dense_relu(Dim::Batch, 8, 16);
    for batch in [1, 7, 33] {
        let bufs = inputs(&kernel, batch, -1.0, 1.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-5, 1e-5);
    }
}

/// A weight gradient summed over the batch, `out = Σ_b x[b]ᵀ @ g[b]` (`x: [batch, t, d]`,
/// `g: [batch, t, o]`), with `x` read in place (`stored_dk`: stored `[batch, d, t]`, so
/// its depth axis is contiguous within a sample but not across samples, which the CPU
/// cannot fold into one deep product and accumulates sample by sample instead).
fn summed_weight_gradient(t: i64, d: i64, o: i64, stored_dk: bool) -> Kernel {
    let fixed = |n: i64| Dim::Fixed(n as u64);
    let x_shape = match stored_dk {
        true => [Dim::Batch, fixed(d), fixed(t)],
        false => [Dim::Batch, fixed(t), fixed(d)],
    };
    let (x_rows, x_depth) = match stored_dk {
        true => (t, 1),
        false => (1, d),
    };
    Kernel {
        name: "summed_weight_gradient".into(),
        buffers: vec![
            buffer("x", &x_shape, Access::Read),
            buffer("g", &[Dim::Batch, fixed(t), fixed(o)], Access::Read),
            buffer("out", &[fixed(d), fixed(o)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![Dim::Batch],
            m: fixed(d),
            n: fixed(o),
            k: fixed(t),
            a: operand(0, var(0).mul(Index::Const(t * d)), x_rows, x_depth),
            b: operand(1, var(0).mul(Index::Const(t * o)), o, 1),
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

#[test]
fn contractions_summed_over_the_batch_match_the_reference_folded_or_not() {
    for stored_dk in [false, true] {
        let kernel = summed_weight_gradient(5, 7, 3, stored_dk);
        for batch in [1, 4, 9] {
            let bufs = inputs(&kernel, batch, -1.0, 1.0);
            assert_matches_reference(&kernel, &bufs, batch, 1e-5, 1e-5);
        }
    }
}

/// `out[b, h] = q[b, h] @ kᵀ[b, h] * scale` with `k` stored `[b, h, n, d]` (transposed by
/// its strides), plus a residual shared across the outer batch.
fn batched_attention_scores(heads: u64, m: u64, n: u64, d: u64) -> Kernel {
    let (b, h) = (Dim::Batch, Dim::Fixed(heads));
    let (md, nd, dd) = (Dim::Fixed(m), Dim::Fixed(n), Dim::Fixed(d));
    let matrix =
        |rows, cols| row_major(&[var(0), var(1)], &[b, h]).mul(Index::Const((rows * cols) as i64));
    Kernel {
        name: "attention_scores".into(),
        buffers: vec![
            buffer("q", &[b, h, md, dd], Access::Read),
            buffer("k", &[b, h, nd, dd], Access::Read),
            buffer("mask", &[h, md, nd], Access::Read),
            buffer("out", &[b, h, md, nd], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![b, h],
            summed: vec![],
            m: md,
            n: nd,
            k: dd,
            a: operand(0, matrix(m, d), d as i64, 1),
            b: operand(1, matrix(n, d), 1, d as i64),
            out: 3,
            epilogue: Expr::binary(
                BinaryOp::Add,
                Expr::binary(BinaryOp::Mul, Expr::Acc, Expr::Const(0.25)),
                Expr::load(2, row_major(&[var(1), var(2), var(3)], &[h, md, nd])),
            ),
            terms: Vec::new(),
        }),
    }
}

#[test]
fn batched_contraction_with_a_transposed_operand_matches_the_reference() {
    let kernel = batched_attention_scores(3, 5, 6, 16);
    for batch in [1, 7, 33] {
        let bufs = inputs(&kernel, batch, -1.0, 1.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-5, 1e-5);
    }
}

#[test]
fn contraction_with_zero_depth_gives_the_epilogue_of_zero() {
    let kernel = dense_relu(Dim::Fixed(3), 4, 0);
    let mut bufs = inputs(&kernel, 1, -1.0, 1.0);
    bufs[3] = vec![f64::NAN; 12];
    assert_matches_reference(&kernel, &bufs, 1, 0.0, 0.0);
}

// ---------------------------------------------------------------------------------------
// Threads

/// Runs `kernel` with one thread and with several, and checks the bits agree.
fn assert_thread_count_invariant(kernel: &Kernel, batch: u64) {
    let bufs = inputs(kernel, batch, -2.0, 2.0);
    let one = LaunchOptions {
        threads: Some(1),
        min_work_per_thread: 1,
    };
    let single = run_cpu(kernel, &bufs, batch, Some(&one));
    for threads in [2, 3, 8] {
        let many = LaunchOptions {
            threads: Some(threads),
            min_work_per_thread: 1,
        };
        let multi = run_cpu(kernel, &bufs, batch, Some(&many));
        for (a, b) in single.iter().zip(&multi) {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{}: {threads} threads differ from 1", kernel.name);
        }
    }
}

/// `out = exp(x - max(row)) / sum(exp(x - max(row)))` over `[batch, heads, t, t]`: an
/// attention softmax, whose function's rows are `(batch, head)` pairs.
fn softmax_over_heads(heads: u64, t: u64) -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(heads), Dim::Fixed(t), Dim::Fixed(t)];
    let at = |last: usize| Index::row_major(&[var(0), var(1), var(2), var(last)], &shape);
    let row_max = |inner: usize| Expr::Reduce {
        op: ReduceOp::Max,
        extent: vec![Dim::Fixed(t)],
        value: Box::new(Expr::load(0, at(inner))),
    };
    let shifted = |v: usize, inner: usize| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(BinaryOp::Sub, Expr::load(0, at(v)), row_max(inner)),
        )
    };
    let sum = Expr::Reduce {
        op: ReduceOp::Sum,
        extent: vec![Dim::Fixed(t)],
        value: Box::new(shifted(4, 5)),
    };
    map_of_x(
        "softmax_over_heads",
        &shape,
        &shape,
        Expr::binary(BinaryOp::Div, shifted(3, 4), sum),
    )
}

#[test]
fn rows_of_batch_and_head_pairs_match_the_reference_and_any_split() {
    assert_eq!(
        strata_kernels::cpu::row_dims(&[Dim::Batch, Dim::Fixed(3), Dim::Fixed(7)]),
        2
    );
    assert_eq!(
        strata_kernels::cpu::row_dims(&[Dim::Batch, Dim::Fixed(3)]),
        1
    );
    assert_eq!(
        strata_kernels::cpu::row_dims(&[Dim::Fixed(5), Dim::Fixed(3), Dim::Fixed(7)]),
        1
    );
    let kernel = softmax_over_heads(3, 7);
    for batch in [0, 1, 2, 5] {
        let bufs = inputs(&kernel, batch, -3.0, 3.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-5, 1e-6);
    }
    // Splits inside one batch index (3 rows at batch 1) and across them.
    assert_thread_count_invariant(&kernel, 1);
    assert_thread_count_invariant(&kernel, 5);
    // A log-sum-exp's reduction over `[batch, 5, 1]`, rows of pairs too.
    let shape = [Dim::Batch, Dim::Fixed(5), Dim::Fixed(1)];
    let reduce = Kernel {
        name: "row_sums".into(),
        buffers: vec![
            buffer(
                "x",
                &[Dim::Batch, Dim::Fixed(5), Dim::Fixed(9)],
                Access::Read,
            ),
            buffer("out", &shape, Access::Write),
        ],
        body: KernelBody::Reduce {
            space: shape.to_vec(),
            reduce: vec![Dim::Fixed(9)],
            op: ReduceOp::Sum,
            value: Expr::load(
                0,
                Index::row_major(
                    &[var(0), var(1), var(3)],
                    &[Dim::Batch, Dim::Fixed(5), Dim::Fixed(9)],
                ),
            ),
            out: Store {
                buf: 1,
                index: identity_index(&shape),
                value: Expr::unary(UnaryOp::Log, Expr::Acc),
            },
        },
    };
    for batch in [1, 3] {
        let bufs = inputs(&reduce, batch, 0.5, 2.0);
        assert_matches_reference(&reduce, &bufs, batch, 1e-6, 1e-6);
    }
    assert_thread_count_invariant(&reduce, 3);
}

#[test]
fn multithreaded_launches_are_bitwise_identical_to_single_threaded() {
    assert_thread_count_invariant(&unary_map(UnaryOp::Tanh, 100_003), 1);
    assert_thread_count_invariant(&log_sum_exp(Dim::Batch, Dim::Fixed(257)).0, 101);
    let (_, lse) = log_sum_exp(Dim::Batch, Dim::Fixed(257));
    assert_thread_count_invariant(&lse, 101);
    assert_thread_count_invariant(&dense_relu(Dim::Batch, 70, 300), 333);
    assert_thread_count_invariant(&batched_attention_scores(2, 33, 40, 24), 9);
}

// ---------------------------------------------------------------------------------------
// Parts

/// A map, a reduction and a contraction as the parts of one kernel.
fn three_parts() -> Kernel {
    Kernel::join(
        "three_parts",
        &[
            bias_add(),
            log_sum_exp(Dim::Batch, Dim::Fixed(257)).0,
            dense_relu(Dim::Batch, 70, 300),
        ],
    )
}

#[test]
fn parts_of_one_launch_match_the_reference() {
    let kernel = three_parts();
    for batch in [0, 1, 7, 333] {
        let bufs = inputs(&kernel, batch, -2.0, 2.0);
        // The product sums 300 terms in f32 (the reference in f64).
        assert_matches_reference(&kernel, &bufs, batch, 1e-4, 1e-4);
    }
}

#[test]
fn parts_split_across_threads_are_bitwise_identical_to_single_threaded() {
    assert_thread_count_invariant(&three_parts(), 333);
}

#[test]
fn a_product_of_one_row_block_among_parts_shares_its_columns_and_its_epilogue_rows() {
    // At these batch sizes the product (70 columns) is one row block, so with two or
    // more threads it runs by columns before the other parts, its epilogue by rows.
    let kernel = three_parts();
    for batch in [1, 3] {
        assert_thread_count_invariant(&kernel, batch);
        let bufs = inputs(&kernel, batch, -2.0, 2.0);
        let many = LaunchOptions {
            threads: Some(2),
            min_work_per_thread: 1,
        };
        let want = run_reference(&kernel, &bufs, batch);
        let got = run_cpu(&kernel, &bufs, batch, Some(&many));
        for (slot, decl) in kernel.buffers.iter().enumerate() {
            if decl.access == Access::Read {
                continue;
            }
            for (g, w) in got[slot].iter().zip(&want[slot]) {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs() + 1e-4,
                    "`{}`: {g} vs {w}",
                    decl.name
                );
            }
        }
    }
}

/// A recurrent step's product at batch 1 plus the step's input projection, `g = h W +
/// x`, the epilogue's addend on either side.
fn step_onto_projection(addend_first: bool) -> Kernel {
    let epilogue = match addend_first {
        true => "(x[i0 * 512 + i1] + acc)",
        false => "(acc + x[i0 * 512 + i1])",
    };
    strata_kernels::parse::parse_kernel(&format!(
        "kernel step contract batch [] m batch n 512 k 128 (h: f32[batch, 896] r, w: f32[512, 128] r, g: f32[batch, 512] w, x: f32[batch, 512] r) {{
  a = h[0 + row * 896 + col * 1]
  b = w[0 + row * 1 + col * 128]
  acc = sum_k a[m, k] * b[k, n]
  g[row-major] = {epilogue}
}}"
    ))
    .expect("parses")
}

#[test]
fn a_one_row_product_split_by_columns_adds_itself_onto_its_addend_with_the_epilogues_bits() {
    // On two or more threads the one row runs by columns, each thread's starting at `x`
    // with the product added on (no epilogue pass); on one, product then epilogue.
    for addend_first in [true, false] {
        let kernel = step_onto_projection(addend_first);
        assert_thread_count_invariant(&kernel, 1);
        let bufs = inputs(&kernel, 1, -2.0, 2.0);
        assert_matches_reference(&kernel, &bufs, 1, 1e-5, 1e-5);
    }
}

/// A recurrent step with its input's projection as a term: `g = x_t W_ihᵀ + h W_hhᵀ +
/// epilogue`, the weights read transposed (`w_hh`) or row-major (`w_ih`); `addend`
/// makes the epilogue `y + acc` (the one-row path that starts at `y`), else a bias.
fn step_with_input_term(addend: bool) -> Kernel {
    let epilogue = match addend {
        true => "(y[i0 * 512 + i1] + acc)",
        false => "((acc + bias[i1]) + 0.5)",
    };
    strata_kernels::parse::parse_kernel(&format!(
        "kernel step contract batch [] m batch n 512 k 128 terms [32] (h: f32[batch, 896] r, w_hh: f32[512, 128] r, g: f32[batch, 512] w, x: f32[batch, 32] r, w_ih: f32[32, 512] r, bias: f32[512] r, y: f32[batch, 512] r) {{
  a = h[0 + row * 896 + col * 1]
  b = w_hh[0 + row * 1 + col * 128]
  a1 = x[0 + row * 32 + col * 1]
  b1 = w_ih[0 + row * 512 + col * 1]
  acc = sum_k a[m, k] * b[k, n] + sum_k a1[m, k] * b1[k, n]
  g[row-major] = {epilogue}
}}"
    ))
    .expect("parses")
}

#[test]
fn a_product_with_a_term_adds_both_products_at_every_batch_and_thread_count() {
    // Batch 1 runs `gemv` (onto the addend, or then the epilogue), 3 and 32 one block of
    // `gemm` calls by columns, 300 several row blocks.
    for addend in [true, false] {
        let kernel = step_with_input_term(addend);
        kernel.validate().expect("valid");
        for batch in [1, 3, 32, 300] {
            // Two and three threads (a session's): the same bits as one. (At eight, a
            // 3-row product is cut otherwise and differs in its last bits with or
            // without terms.)
            let bufs = inputs(&kernel, batch, -2.0, 2.0);
            let run = |threads| {
                let options = LaunchOptions {
                    threads: Some(threads),
                    min_work_per_thread: 1,
                };
                run_cpu(&kernel, &bufs, batch, Some(&options))
            };
            let single = run(1);
            for threads in [2, 3] {
                let bits = |r: &[Vec<f64>]| -> Vec<u32> {
                    r.iter().flatten().map(|v| (*v as f32).to_bits()).collect()
                };
                assert_eq!(
                    bits(&single),
                    bits(&run(threads)),
                    "batch {batch}, {threads} threads"
                );
            }
            assert_matches_reference(&kernel, &bufs, batch, 1e-5, 1e-4);
        }
    }
}

/// Attention's scores: a `[batch, 4]` batch of 64 x 64 products over 32, scaled. At
/// batch 1 they are one block of four matrices.
fn scores_of_heads() -> Kernel {
    strata_kernels::parse::parse_kernel(
        "kernel scores contract batch [batch, 4] m 64 n 64 k 32 (q: f32[batch, 4, 64, 32] r, k: f32[batch, 4, 32, 64] r, s: f32[batch, 4, 64, 64] w) {
  a = q[(i0 * 4 + i1) * 64 * 32 + row * 32 + col * 1]
  b = k[(i0 * 4 + i1) * 32 * 64 + row * 64 + col * 1]
  acc = sum_k a[m, k] * b[k, n]
  s[row-major] = (acc * 0.125)
}",
    )
    .expect("parses")
}

#[test]
fn the_matrices_of_one_block_are_shared_out_whole_across_threads() {
    // At batch 1 the four heads are one block: threads take whole matrices (at 2, 3 or 4
    // threads) instead of cutting each matrix's 64 columns.
    let kernel = scores_of_heads();
    for batch in [1, 2] {
        assert_thread_count_invariant(&kernel, batch);
        let bufs = inputs(&kernel, batch, -2.0, 2.0);
        assert_matches_reference(&kernel, &bufs, batch, 1e-4, 1e-4);
    }
}

/// `out = x w` for `x: [m, k]` and `w` stored `[k, n]`, or `[n, k]` read transposed (a
/// training step's dense weight).
fn product(m: u64, n: u64, k: u64, transposed: bool) -> Kernel {
    let (w_shape, b) = match transposed {
        true => (format!("{n}, {k}"), format!("w[0 + row * 1 + col * {k}]")),
        false => (format!("{k}, {n}"), format!("w[0 + row * {n} + col * 1]")),
    };
    strata_kernels::parse::parse_kernel(&format!(
        "kernel product contract batch [] m {m} n {n} k {k} (x: f32[{m}, {k}] r, w: f32[{w_shape}] r, out: f32[{m}, {n}] w) {{
  a = x[0 + row * {k} + col * 1]
  b = {b}
  acc = sum_k a[m, k] * b[k, n]
  out[row-major] = acc
}}"
    ))
    .expect("parses")
}

/// A session lets a whole run, or a loop, go on one thread when that has been faster
/// lately, only where `LaunchPlan::same_bits_as_one_thread` says the bits are those of
/// one thread: over products of 1-40 rows, narrow and wide, shallow and deep, from a
/// row-major and a transposed weight, on 2, 3 and 8 threads, the claim holds wherever it
/// is made, and it is made for most of them (the few-row products cut into calls that
/// `gemm` sums as dot products are the ones refused, some of which do differ).
#[test]
fn a_plan_that_claims_the_bits_of_one_thread_has_them() {
    let (mut claimed, mut refused, mut differing) = (0, 0, 0);
    for m in [1, 2, 3, 5, 8, 9, 16, 17, 40] {
        for n in [8, 40, 70, 300] {
            for k in [5, 600] {
                for transposed in [false, true] {
                    let kernel = product(m, n, k, transposed);
                    let plan = LaunchPlan::new(&kernel, 1);
                    let bufs = inputs(&kernel, 1, -2.0, 2.0);
                    let run = |threads| {
                        let options = LaunchOptions {
                            threads: Some(threads),
                            min_work_per_thread: 1,
                        };
                        let out = run_cpu(&kernel, &bufs, 1, Some(&options));
                        out[2]
                            .iter()
                            .map(|v| (*v as f32).to_bits())
                            .collect::<Vec<_>>()
                    };
                    let single = run(1);
                    for threads in [2, 3, 8] {
                        let options = LaunchOptions {
                            threads: Some(threads),
                            min_work_per_thread: 1,
                        };
                        if !plan.same_bits_as_one_thread(&options, false) {
                            refused += 1;
                            differing += usize::from(single != run(threads));
                            continue;
                        }
                        claimed += 1;
                        assert_eq!(
                            single,
                            run(threads),
                            "{m} x {k} x {n}, transposed {transposed}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
    assert!(
        claimed > 4 * refused,
        "{claimed} claimed, {refused} refused"
    );
    // The refusals guard a real difference: a transposed weight's product of 2-8 rows
    // (`5 x 5 x 70` on two threads) has other bits than on one.
    assert!(differing > 0, "{refused} refused, none differs");
}
