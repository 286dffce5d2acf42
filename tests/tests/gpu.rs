//! The GPU backend: every example's kernels emit WGSL that naga accepts; every example's
//! `infer` entry, run through wgpu, agrees with the reference interpreter; and single
//! kernels of every strategy agree with the kernel IR's reference evaluator.
//!
//! The GPU tests need an adapter (on a machine without a GPU: Mesa's lavapipe,
//! `apt-get install mesa-vulkan-drivers libvulkan1`). Without one they are skipped with a
//! message, except in CI (`CI=true`), where a missing adapter fails them.

use strata_artifact::manifest::{BufferInfo, Entry, EntryPort, Extent, Launch, Location, Manifest};
use strata_artifact::weights::encode_weights;
use strata_artifact::{Artifact, HostTensor};
use strata_compiler::driver::{Backend, CompileOptions, compile};
use strata_compiler::ir::interpret::Tensor;
use strata_kernels::eval::eval_kernel;
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ReduceOp, ScalarType, Store, UnaryOp,
};
use strata_runtime::Session;
use strata_tests::infer_check::assert_infer_matches;
use strata_tests::{TestRng, example_files, gpu_available, load_example};

/// The tolerance the GPU issue sets for the GPU against the interpreter.
const MAX_RELATIVE_ERROR: f64 = 1e-4;

#[test]
fn every_example_kernel_emits_wgsl_that_naga_validates() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        for kernel in &compiled.lowered.kernels {
            // `emit_kernel` validates with naga and names the kernel on failure.
            strata_kernels::gpu::emit_kernel(kernel)
                .unwrap_or_else(|e| panic!("{}: {e}", source.name));
        }
    }
}

#[test]
fn a_gpu_build_carries_one_wgsl_module_per_kernel() {
    let path = example_files()
        .into_iter()
        .find(|p| p.ends_with("mlp.strata"))
        .expect("mlp.strata exists");
    let source = load_example(&path);
    let options = CompileOptions {
        target: Backend::Gpu,
        ..CompileOptions::default()
    };
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let modules = strata_kernels::gpu::split_modules(&compiled.artifact.wgsl);
    let names: Vec<&str> = modules.iter().map(|(n, _)| *n).collect();
    let kernels: Vec<&str> = compiled
        .lowered
        .kernels
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, kernels);
    let cpu = compile(&source, &CompileOptions::default()).expect("compiles");
    assert!(cpu.artifact.wgsl.is_empty(), "a CPU build has no WGSL");
}

#[test]
fn every_example_matches_the_interpreter_on_gpu() {
    if !gpu_available("every_example_matches_the_interpreter_on_gpu") {
        return;
    }
    let files = example_files();
    assert!(files.len() >= 3, "the examples are there");
    for path in files {
        let source = load_example(&path);
        let options = CompileOptions {
            target: Backend::Gpu,
            ..CompileOptions::default()
        };
        let compiled =
            compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let mut session = Session::new_with(&compiled.artifact, Backend::Gpu)
            .unwrap_or_else(|e| panic!("{}: {e}", source.name));
        assert_infer_matches(
            &source.name,
            &mut session,
            &compiled.optimized,
            &[1, 5, 64, 7],
            MAX_RELATIVE_ERROR,
        );
    }
}

// ---- single kernels against the reference evaluator ----

fn decl(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape: shape.to_vec(),
        access,
    }
}

fn row_major(shape: &[Dim]) -> Index {
    Index::row_major(&(0..shape.len()).map(Index::Var).collect::<Vec<_>>(), shape)
}

/// A model of one kernel: every slot is its own I/O buffer; readable slots are the
/// entry's inputs and writable ones its outputs (named after the slots).
fn single_kernel_artifact(kernel: &Kernel) -> Artifact {
    let mut buffers = Vec::new();
    let mut next = Extent::default();
    for b in &kernel.buffers {
        let info = BufferInfo {
            name: b.name.clone(),
            dtype: b.dtype,
            shape: b.shape.clone(),
            location: Location::Io { offset: next },
        };
        let size = info.byte_size().expect("small");
        next = Extent {
            fixed: (next.fixed + size.fixed).next_multiple_of(16),
            per_batch: (next.per_batch + size.per_batch).next_multiple_of(16),
        };
        buffers.push(info);
    }
    let ports = |pick: &dyn Fn(Access) -> bool| -> Vec<EntryPort> {
        kernel
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| pick(b.access))
            .map(|(i, b)| EntryPort {
                name: b.name.clone(),
                buffer: i,
            })
            .collect()
    };
    let manifest = Manifest {
        model: kernel.name.clone(),
        compiler: "test".into(),
        buffers,
        kernels: vec![kernel.clone()],
        entries: vec![Entry {
            name: "infer".into(),
            inputs: ports(&|a| a != Access::Write),
            outputs: ports(&|a| a != Access::Read),
            launches: vec![Launch {
                kernel: 0,
                bindings: (0..kernel.buffers.len()).collect(),
            }],
            loops: vec![],
        }],
        arena: Extent::default(),
        io: next,
        train: None,
    };
    Artifact {
        clif: strata_kernels::cpu::emit_clif(&manifest.kernels).expect("CLIF"),
        wgsl: strata_kernels::gpu::emit_wgsl(&manifest.kernels).expect("WGSL"),
        manifest,
        weights: encode_weights(std::iter::empty())
            .expect("empty weights")
            .into(),
        machine_code: None,
        onnx: Vec::new(),
    }
}

/// Runs `kernel` on the GPU and with the reference evaluator on the same random inputs
/// at each batch size, and compares every writable slot.
fn check_kernel_on_gpu(kernel: &Kernel, batches: &[u64]) {
    let artifact = single_kernel_artifact(kernel);
    let mut session = Session::new_with(&artifact, Backend::Gpu)
        .unwrap_or_else(|e| panic!("kernel `{}`: {e}", kernel.name));
    for &batch in batches {
        let mut rng = TestRng::new(batch);
        let mut reference: Vec<Vec<f64>> = Vec::new();
        let mut inputs: Vec<(&str, HostTensor)> = Vec::new();
        for b in &kernel.buffers {
            let shape: Vec<u64> = b.shape.iter().map(|d| d.resolve(batch)).collect();
            let n = shape.iter().product::<u64>() as usize;
            let data: Vec<f32> = (0..n).map(|_| rng.uniform() * 2.0).collect();
            reference.push(data.iter().map(|&x| f64::from(x)).collect());
            if b.access != Access::Write {
                inputs.push((
                    b.name.as_str(),
                    HostTensor::f32(shape, data).expect("sizes"),
                ));
            }
        }
        eval_kernel(kernel, &mut reference, batch).expect("the evaluator runs");
        let outputs = session
            .run("infer", &inputs)
            .unwrap_or_else(|e| panic!("kernel `{}` batch {batch}: {e}", kernel.name));
        for (name, got) in outputs {
            let slot = kernel
                .buffers
                .iter()
                .position(|b| b.name == name)
                .expect("an output is a slot");
            let shape: Vec<usize> = got.shape.iter().map(|&d| d as usize).collect();
            let got = Tensor::from_f32(shape.clone(), got.as_f32().expect("f32")).expect("sizes");
            let want = Tensor::new(shape, reference[slot].clone()).expect("sizes");
            let err = got.max_relative_error(&want);
            assert!(
                err <= MAX_RELATIVE_ERROR,
                "kernel `{}` slot `{name}` at batch {batch}: relative error {err:e}",
                kernel.name
            );
        }
    }
}

#[test]
fn a_fused_map_broadcasts_over_batch_rows_on_gpu() {
    if !gpu_available("a_fused_map_broadcasts_over_batch_rows_on_gpu") {
        return;
    }
    // out = sigmoid(tanh(x + bias) * 3) - max(x, bias) ** 2 + exp(-|x|), over [batch, 300]
    let shape = [Dim::Batch, Dim::Fixed(300)];
    let x = || Expr::load(0, row_major(&shape));
    let bias = || Expr::load(1, Index::Var(1));
    let value = Expr::binary(
        BinaryOp::Add,
        Expr::binary(
            BinaryOp::Sub,
            Expr::unary(
                UnaryOp::Sigmoid,
                Expr::binary(
                    BinaryOp::Mul,
                    Expr::unary(UnaryOp::Tanh, Expr::binary(BinaryOp::Add, x(), bias())),
                    Expr::Const(3.0),
                ),
            ),
            Expr::binary(
                BinaryOp::Pow,
                Expr::binary(BinaryOp::Max, x(), bias()),
                Expr::Const(2.0),
            ),
        ),
        Expr::unary(
            UnaryOp::Exp,
            Expr::unary(UnaryOp::Neg, Expr::unary(UnaryOp::Abs, x())),
        ),
    );
    let kernel = Kernel {
        name: "fused_map".into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("bias", &[Dim::Fixed(300)], Access::Read),
            decl("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 2,
                index: row_major(&shape),
                value,
            }],
        },
    };
    check_kernel_on_gpu(&kernel, &[1, 7, 33]);
}

/// `out[i] = epilogue(op_j x[i, j])` over `[batch, cols]`.
fn row_reduce(name: &str, cols: u64, op: ReduceOp) -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(cols)];
    Kernel {
        name: name.into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("out", &[Dim::Batch], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![Dim::Batch],
            reduce: vec![Dim::Fixed(cols)],
            op,
            value: Expr::unary(UnaryOp::Exp, Expr::load(0, row_major(&shape))),
            out: Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::unary(UnaryOp::Log, Expr::Acc),
            },
        },
    }
}

#[test]
fn short_and_long_reductions_match_the_evaluator_on_gpu() {
    if !gpu_available("short_and_long_reductions_match_the_evaluator_on_gpu") {
        return;
    }
    for (name, cols, op) in [
        ("logsumexp_short", 10, ReduceOp::Sum),
        ("logsumexp_long", 1000, ReduceOp::Sum),
        ("max_short", 63, ReduceOp::Max),
        ("max_long", 64, ReduceOp::Max),
        ("min_long", 777, ReduceOp::Min),
    ] {
        check_kernel_on_gpu(&row_reduce(name, cols, op), &[1, 7, 33]);
    }
}

/// `op_k x[i0, k]` over a row of `x: [batch, cols]`, binding `k` as variable `scope`.
fn nested_row(op: ReduceOp, cols: u64, scope: usize) -> Expr {
    Expr::Reduce {
        op,
        extent: vec![Dim::Fixed(cols)],
        value: Box::new(Expr::load(
            0,
            Index::Var(0)
                .mul(Index::Const(cols as i64))
                .add(Index::Var(scope)),
        )),
    }
}

#[test]
fn nested_reductions_match_the_evaluator_on_gpu() {
    if !gpu_available("nested_reductions_match_the_evaluator_on_gpu") {
        return;
    }
    let cols = 10;
    let shape = [Dim::Batch, Dim::Fixed(cols)];
    let x = |col: Index| Expr::load(0, Index::Var(0).mul(Index::Const(10)).add(col));
    let shifted_exp = |col: Index, scope: usize| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(
                BinaryOp::Sub,
                x(col),
                nested_row(ReduceOp::Max, cols, scope),
            ),
        )
    };
    // A softmax as one map: the row max nested in the map and again in the row sum.
    let softmax = Kernel {
        name: "nested_softmax".into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("probs", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 1,
                index: row_major(&shape),
                value: Expr::binary(
                    BinaryOp::Div,
                    shifted_exp(Index::Var(1), 2),
                    Expr::Reduce {
                        op: ReduceOp::Sum,
                        extent: vec![Dim::Fixed(cols)],
                        value: Box::new(shifted_exp(Index::Var(2), 3)),
                    },
                ),
            }],
        },
    };
    // A workgroup-tree reduction over the batch whose value nests the row min.
    let centered = Kernel {
        name: "centered_mean".into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("mean", &[], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![],
            reduce: shape.to_vec(),
            op: ReduceOp::Sum,
            value: Expr::binary(
                BinaryOp::Sub,
                x(Index::Var(1)),
                nested_row(ReduceOp::Min, cols, 2),
            ),
            out: Store {
                buf: 1,
                index: Index::Const(0),
                value: Expr::binary(BinaryOp::Div, Expr::Acc, Expr::IndexValue(Index::Batch)),
            },
        },
    };
    for kernel in [softmax, centered] {
        check_kernel_on_gpu(&kernel, &[1, 7, 33]);
    }
}

#[test]
fn a_reduction_over_the_batch_matches_on_gpu() {
    if !gpu_available("a_reduction_over_the_batch_matches_on_gpu") {
        return;
    }
    // Column sums over the batch (a bias gradient): out[j] = sum_b x[b, j].
    let shape = [Dim::Batch, Dim::Fixed(5)];
    let kernel = Kernel {
        name: "column_sum".into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("out", &[Dim::Fixed(5)], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![Dim::Fixed(5)],
            reduce: vec![Dim::Batch],
            op: ReduceOp::Sum,
            value: Expr::load(0, Index::Var(1).mul(Index::Const(5)).add(Index::Var(0))),
            out: Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::Acc,
            },
        },
    };
    check_kernel_on_gpu(&kernel, &[1, 7, 33, 300]);
}

#[test]
fn a_batched_contraction_with_transposed_operands_matches_on_gpu() {
    if !gpu_available("a_batched_contraction_with_transposed_operands_matches_on_gpu") {
        return;
    }
    // out[b] = relu(a[b]ᵀ x w[b]ᵀ + bias), a stored [batch, k, m], w stored [batch, n, k].
    let (m, n, k) = (37i64, 19i64, 45i64);
    let fixed = |x: i64| Dim::Fixed(x as u64);
    let kernel = Kernel {
        name: "batched_tt".into(),
        buffers: vec![
            decl("a", &[Dim::Batch, fixed(k), fixed(m)], Access::Read),
            decl("w", &[Dim::Batch, fixed(n), fixed(k)], Access::Read),
            decl("bias", &[fixed(n)], Access::Read),
            decl("out", &[Dim::Batch, fixed(m), fixed(n)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![Dim::Batch],
            summed: vec![],
            m: fixed(m),
            n: fixed(n),
            k: fixed(k),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Var(0).mul(Index::Const(k * m)),
                row_stride: Index::Const(1),
                col_stride: Index::Const(m),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Var(0).mul(Index::Const(n * k)),
                row_stride: Index::Const(1),
                col_stride: Index::Const(k),
                window: None,
            },
            out: 3,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, Index::Var(2))),
            ),
            terms: Vec::new(),
        }),
    };
    check_kernel_on_gpu(&kernel, &[1, 7, 33]);
}

#[test]
fn a_contraction_with_a_term_matches_on_gpu() {
    if !gpu_available("a_contraction_with_a_term_matches_on_gpu") {
        return;
    }
    // A recurrent step's `h W_hhᵀ + x W_ih + bias`, depths 45 and 21 (neither a whole
    // tile), 37 columns.
    let kernel = strata_kernels::parse::parse_kernel(
        "kernel step contract batch [] m batch n 37 k 45 terms [21] (h: f32[batch, 50] r, w_hh: f32[37, 45] r, g: f32[batch, 37] w, x: f32[batch, 21] r, w_ih: f32[21, 37] r, bias: f32[37] r) {
  a = h[0 + row * 50 + col * 1]
  b = w_hh[0 + row * 1 + col * 45]
  a1 = x[0 + row * 21 + col * 1]
  b1 = w_ih[0 + row * 37 + col * 1]
  acc = sum_k a[m, k] * b[k, n] + sum_k a1[m, k] * b1[k, n]
  g[row-major] = (acc + bias[i1])
}",
    )
    .expect("parses");
    check_kernel_on_gpu(&kernel, &[1, 7, 33]);
}

#[test]
fn a_contraction_summed_over_the_batch_matches_on_gpu() {
    if !gpu_available("a_contraction_summed_over_the_batch_matches_on_gpu") {
        return;
    }
    // A weight gradient: out = Σ_b x[b]ᵀ x g[b], x stored [batch, t, d], g [batch, t, o];
    // sizes beyond one 16x16 tile.
    let (t, d, o) = (21i64, 37i64, 19i64);
    let fixed = |x: i64| Dim::Fixed(x as u64);
    let kernel = Kernel {
        name: "summed_weight_gradient".into(),
        buffers: vec![
            decl("x", &[Dim::Batch, fixed(t), fixed(d)], Access::Read),
            decl("g", &[Dim::Batch, fixed(t), fixed(o)], Access::Read),
            decl("out", &[fixed(d), fixed(o)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![Dim::Batch],
            m: fixed(d),
            n: fixed(o),
            k: fixed(t),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Var(0).mul(Index::Const(t * d)),
                row_stride: Index::Const(1),
                col_stride: Index::Const(d),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Var(0).mul(Index::Const(t * o)),
                row_stride: Index::Const(o),
                col_stride: Index::Const(1),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    };
    check_kernel_on_gpu(&kernel, &[1, 6]);
}

#[test]
fn a_dense_layer_with_batch_rows_matches_on_gpu() {
    if !gpu_available("a_dense_layer_with_batch_rows_matches_on_gpu") {
        return;
    }
    check_kernel_on_gpu(&dense(), &[1, 7, 33]);
}

/// out = x wᵀ with x [batch, 70] and w [20, 70] (PyTorch's dense layout); m = batch.
fn dense() -> Kernel {
    Kernel {
        name: "dense".into(),
        buffers: vec![
            decl("x", &[Dim::Batch, Dim::Fixed(70)], Access::Read),
            decl("w", &[Dim::Fixed(20), Dim::Fixed(70)], Access::Read),
            decl("out", &[Dim::Batch, Dim::Fixed(20)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Batch,
            n: Dim::Fixed(20),
            k: Dim::Fixed(70),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(70),
                col_stride: Index::Const(1),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(1),
                col_stride: Index::Const(70),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

#[test]
fn the_parts_of_one_kernel_match_on_gpu() {
    if !gpu_available("the_parts_of_one_kernel_match_on_gpu") {
        return;
    }
    // One dispatch: a contraction, a workgroup-tree reduction and a looped one.
    let kernel = Kernel::join(
        "three_parts",
        &[
            dense(),
            row_reduce("max_long", 777, ReduceOp::Max),
            row_reduce("sum_short", 10, ReduceOp::Sum),
        ],
    );
    check_kernel_on_gpu(&kernel, &[1, 7, 33]);
}

#[test]
fn a_missing_wgsl_section_is_a_clear_error() {
    let shape = [Dim::Fixed(4)];
    let kernel = Kernel {
        name: "copy".into(),
        buffers: vec![
            decl("x", &shape, Access::Read),
            decl("out", &shape, Access::Write),
        ],
        body: KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::load(0, Index::Var(0)),
            }],
        },
    };
    let mut artifact = single_kernel_artifact(&kernel);
    artifact.wgsl.clear();
    let err = Session::new_with(&artifact, Backend::Gpu)
        .err()
        .expect("no GPU code")
        .to_string();
    assert_eq!(
        err,
        "this model holds no GPU code (build it with `--target gpu`)"
    );
}
