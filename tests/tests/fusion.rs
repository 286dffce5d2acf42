//! Fusion and memory-plan figures: what the issue's "done when" asks, checked on every
//! example, plus small graphs for the rules that must and must not fuse.

use strata_compiler::driver::{CompileOptions, Compiled, CompiledEntry, compile};
use strata_compiler::ir::{BinaryOp, Dim, Graph, Op, ReduceOp, TensorType, UnaryOp, ValueId};
use strata_compiler::lower::print::print_kernels;
use strata_compiler::lower::{BufferRole, lower};
use strata_compiler::plan::{check_plan, plan_memory};
use strata_compiler::source::SourceFile;
use strata_compiler::source::Span;
use strata_kernels::ir::{Expr, Kernel, KernelBody};
use strata_tests::{example_files, load_example};

fn options() -> CompileOptions {
    strata_tests::train_check::training_options()
}

/// `source` compiled with [`options`] (its training entries included).
fn compiled(source: &SourceFile) -> Compiled {
    compile(source, &options()).unwrap_or_else(|e| panic!("{}", e.render(source)))
}

/// The `train_step` entry of `compiled`.
fn train_step(compiled: &Compiled) -> &CompiledEntry {
    compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .expect("train_step")
}

/// `dsl-examples/mlp.strata` without its `normalize` setting. The features'
/// normalization is one map of its own over the raw input (a product takes no prologue),
/// apart from the dense layers these figures are about; it is counted by
/// [`normalization_adds_one_map_before_the_first_product`].
fn mlp_without_normalization() -> SourceFile {
    let example = load_example(&strata_tests::root().join("dsl-examples/mlp.strata"));
    let setting = "    normalize = scale(16)\n";
    assert!(example.text.contains(setting), "the example normalizes");
    SourceFile::new(example.name.clone(), example.text.replace(setting, ""))
}

#[test]
fn normalization_adds_one_map_before_the_first_product() {
    let with = load_example(&strata_tests::root().join("dsl-examples/mlp.strata"));
    let without = mlp_without_normalization();
    let kernels = |source: &SourceFile| {
        let compiled = compiled(source);
        let step = train_step(&compiled).lowered.kernels.len();
        (compiled.lowered.kernels.clone(), step)
    };
    let ((infer, step), (plain_infer, plain_step)) = (kernels(&with), kernels(&without));
    assert_eq!(infer.len(), plain_infer.len() + 1);
    assert_eq!(step, plain_step + 1);
    assert!(
        matches!(infer[0].body, KernelBody::Map { .. })
            && infer[0].to_string().contains("normalize_scale"),
        "the first kernel normalizes the input: {}",
        infer[0]
    );
}

#[test]
fn mlp_train_step_has_at_most_half_as_many_kernels_as_ops() {
    let source = mlp_without_normalization();
    let compiled = compiled(&source);
    let step = train_step(&compiled);
    let (ops, kernels) = (step.graph.len(), step.lowered.kernels.len());
    eprintln!("mlp train_step: {ops} ops after simplification, {kernels} kernels");
    assert!(2 * kernels <= ops, "{kernels} kernels for {ops} ops");
    let l = &step.lowered;
    let is_contract = |b: &KernelBody| matches!(b, KernelBody::Contract(_));
    // One contraction per dense layer forward; dx, dW per layer backward (none for the
    // first layer's dx).
    let contracts = l
        .kernels
        .iter()
        .flat_map(|k| k.body.bodies())
        .filter(|b| is_contract(b))
        .count();
    assert_eq!(contracts, 3 + 3 + 2);
    // One kernel per dense layer per direction: a layer's backward products (and its
    // bias gradient) are parts of one kernel.
    let with_products = l
        .kernels
        .iter()
        .filter(|k| k.body.bodies().iter().any(is_contract))
        .count();
    assert_eq!(with_products, 3 + 3, "{}", print_kernels(l));
    // The issue's bar: at most one kernel per dense layer per direction, plus the loss
    // (its value and its gradient) and the fused optimizer update.
    assert!(kernels <= 3 * 2 + 1 + 1, "{}", print_kernels(l));
    // One update map per parameter (its Adam moments with it), stored in place.
    let updates = l
        .launches
        .iter()
        .flat_map(|launch| {
            let kernel = &l.kernels[launch.kernel];
            kernel.body.bodies().iter().filter(move |b| {
                b.written_slots()
                    .iter()
                    .any(|s| matches!(l.buffers[launch.bindings[*s]].role, BufferRole::Param(_)))
            })
        })
        .count();
    assert_eq!(updates, step.graph.params().len() / 3);
}

#[test]
fn fuses_bias_and_relu_into_matmul() {
    let source = mlp_without_normalization();
    let compiled = compiled(&source);
    let first = &compiled.lowered.kernels[0];
    let KernelBody::Contract(c) = &first.body else {
        panic!("the first kernel is the first dense layer's product: {first}");
    };
    let text = format!("{first}");
    assert!(
        matches!(c.epilogue, Expr::Unary(..)),
        "relu(acc + bias): {text}"
    );
    assert!(first.name.contains("matmul_add_relu"), "{}", first.name);
}

#[test]
fn a_convolution_s_bias_and_relu_are_its_product_s_epilogue_in_inference_and_training() {
    let source = SourceFile::new(
        "conv.strata",
        "model C {\n    input x: f32[batch, 1, 12, 12]\n    \
         output y = x |> conv2d(4, 3) |> relu |> max_pool2d(2) |> flatten |> dense(3)\n}\n\
         train C {\n    label l: i32[batch]\n    loss = cross_entropy(y, l)\n    \
         optimizer = sgd(lr = 0.1)\n}\n",
    );
    let compiled = compiled(&source);
    let step = train_step(&compiled);
    for lowered in [&compiled.lowered, &step.lowered] {
        let listing = print_kernels(lowered);
        // The product `[batch, 4, 100]` is reshaped to the image `[batch, 4, 10, 10]`;
        // the relu, applied before that reshape, is the product's epilogue, and the
        // image's only kernel is the product's.
        let conv = lowered
            .kernels
            .iter()
            .find(|k| matches!(&k.body, KernelBody::Contract(c) if c.k.resolve(1) == 9))
            .unwrap_or_else(|| panic!("the convolution's product: {listing}"));
        assert!(conv.name.contains("matmul_add_relu"), "{listing}");
        assert!(
            !lowered
                .kernels
                .iter()
                .any(|k| matches!(&k.body, KernelBody::Map { .. }) && k.name.ends_with("_relu")),
            "a kernel of its own for the relu: {listing}"
        );
    }
}

fn leaf(g: &mut Graph, name: &str, dims: Vec<Dim>) -> strata_compiler::ir::ValueId {
    g.add_leaf(
        Op::Input { name: name.into() },
        TensorType::f32(dims),
        Span::default(),
    )
}

#[test]
fn does_not_duplicate_an_expensive_producer() {
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(8)]);
    let e = g
        .add(Op::Unary(UnaryOp::Exp), &[x], Span::default())
        .unwrap();
    let one = g
        .add(Op::Const { value: 1.0 }, &[], Span::default())
        .unwrap();
    let a = g
        .add(Op::Binary(BinaryOp::Add), &[e, one], Span::default())
        .unwrap();
    let b = g
        .add(Op::Binary(BinaryOp::Mul), &[e, e], Span::default())
        .unwrap();
    g.outputs = vec![("a".into(), a), ("b".into(), b)];
    let l = lower(&g).unwrap();
    let exps: usize = l
        .kernels
        .iter()
        .map(|k| format!("{k}").matches("exp(").count())
        .sum();
    assert_eq!(
        exps,
        1,
        "exp is computed once:\n{}",
        strata_compiler::lower::print::print_kernels(&l)
    );
    // The exp's kernel, then one kernel whose two parts compute `a` and `b`.
    let parts: Vec<usize> = l.kernels.iter().map(|k| k.part_count()).collect();
    assert_eq!(parts, [1, 2]);
}

#[test]
fn inlines_a_cheap_chain_into_one_loop() {
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(8)]);
    let y = leaf(&mut g, "y", vec![Dim::Fixed(8)]);
    let n = g
        .add(Op::Unary(UnaryOp::Neg), &[x], Span::default())
        .unwrap();
    let s = g
        .add(Op::Binary(BinaryOp::Add), &[n, y], Span::default())
        .unwrap();
    let r = g
        .add(Op::Unary(UnaryOp::Relu), &[s], Span::default())
        .unwrap();
    g.outputs = vec![("r".into(), r)];
    let l = lower(&g).unwrap();
    assert_eq!(
        l.kernels.len(),
        1,
        "{}",
        strata_compiler::lower::print::print_kernels(&l)
    );
}

#[test]
fn does_not_fuse_an_epilogue_that_a_second_user_needs_unfused() {
    // z = x @ w; out1 = relu(z); out2 = z: z is an output, so it is stored as is and relu
    // is a separate map.
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(4)]);
    let w = leaf(&mut g, "w", vec![Dim::Fixed(4), Dim::Fixed(3)]);
    let z = g.add(Op::MatMul, &[x, w], Span::default()).unwrap();
    let r = g
        .add(Op::Unary(UnaryOp::Relu), &[z], Span::default())
        .unwrap();
    g.outputs = vec![("r".into(), r), ("z".into(), z)];
    let l = lower(&g).unwrap();
    let KernelBody::Contract(c) = &l.kernels[0].body else {
        panic!()
    };
    assert_eq!(c.epilogue, Expr::Acc);
    assert_eq!(l.kernels.len(), 2);
}

/// Whether the kernel computes a nested reduction.
fn nests_a_reduction(k: &Kernel) -> bool {
    // The printer writes a nested reduction as `op(value for i2 < n)`.
    format!("{k}").contains(" for i")
}

#[test]
fn softmax_is_one_map_with_its_row_max_and_sum_nested() {
    let source = mlp_without_normalization();
    let compiled = compiled(&source);
    let kernels = &compiled.lowered.kernels;
    let text: String = kernels.iter().map(|k| format!("{k}")).collect();
    // Three dense layers, then the softmax.
    assert_eq!(kernels.len(), 4, "{text}");
    let softmax = &kernels[3];
    assert!(matches!(softmax.body, KernelBody::Map { .. }), "{text}");
    let body = format!("{softmax}");
    assert!(
        body.contains("max(t17[i0 * 10 + i2] for i2 < 10)"),
        "{body}"
    );
    assert!(body.contains("/ sum(exp("), "{body}");
}

/// `y = softmax(x)` over rows of 64, with `rows` rows per batch row.
fn wide_softmax(rows: u64) -> SourceFile {
    SourceFile::new(
        "wide_softmax.strata",
        format!(
            "model WideSoftmax {{\n    input x: f32[batch, {rows}, 64]\n    output y = softmax(x)\n}}\n"
        ),
    )
}

#[test]
fn a_wide_softmax_evaluates_its_exp_once_per_element_and_a_narrow_one_stays_one_map() {
    let exps = |k: &Kernel| format!("{k}").matches("exp(").count();
    // 16 x 64 points a batch row: `exp(x - max)` gets a buffer, read by the division and
    // by its row sum, so it is evaluated once per element.
    let wide = compiled(&wide_softmax(16));
    let kernels = &wide.lowered.kernels;
    let text: String = kernels.iter().map(|k| format!("{k}")).collect();
    assert_eq!(kernels.len(), 2, "{text}");
    assert_eq!(kernels.iter().map(exps).sum::<usize>(), 1, "{text}");
    assert!(
        nests_a_reduction(&kernels[0]) && nests_a_reduction(&kernels[1]),
        "{text}"
    );
    // 4 x 64: one map, evaluating `exp` in the sum and in the division.
    let narrow = compiled(&wide_softmax(4));
    let kernels = &narrow.lowered.kernels;
    let text: String = kernels.iter().map(|k| format!("{k}")).collect();
    assert_eq!(kernels.len(), 1, "{text}");
    assert_eq!(exps(&kernels[0]), 2, "{text}");
    // Both against the interpreter, on every backend at hand.
    for rows in [16, 4] {
        strata_tests::infer_check::check_backends("wide_softmax", &wide_softmax(rows), &[1, 3]);
    }
}

#[test]
fn the_mlp_loss_and_its_gradient_are_one_kernel() {
    let source = mlp_without_normalization();
    let compiled = compiled(&source);
    let step = train_step(&compiled);
    let l = &step.lowered;
    let text = strata_compiler::lower::print::print_kernels(l);
    // The logits: the buffer the last forward product writes.
    let last_forward = &l.launches[2];
    let KernelBody::Contract(c) = &l.kernels[last_forward.kernel].body else {
        panic!("the third kernel is the last dense layer: {text}");
    };
    let logits = last_forward.bindings[c.out];
    // Every loop nest that reads the logits, but the products.
    let readers: Vec<(usize, &KernelBody)> = l
        .launches
        .iter()
        .enumerate()
        .flat_map(|(i, launch)| {
            let kernel = &l.kernels[launch.kernel];
            kernel
                .body
                .bodies()
                .iter()
                .filter(move |b| b.read_slots().iter().any(|s| launch.bindings[*s] == logits))
                .map(move |b| (i, b))
        })
        .filter(|(_, b)| !matches!(b, KernelBody::Contract(_)))
        .collect();
    assert_eq!(readers.len(), 2, "the loss and dlogits: {text}");
    assert_eq!(readers[0].0, readers[1].0, "one launch: {text}");
    assert!(matches!(readers[0].1, KernelBody::Reduce { .. }), "{text}");
    assert!(matches!(readers[1].1, KernelBody::Map { .. }), "{text}");
    let kernel = &l.kernels[l.launches[readers[0].0].kernel];
    for (_, body) in &readers {
        let part = Kernel {
            body: (*body).clone(),
            ..kernel.clone()
        };
        assert!(nests_a_reduction(&part), "{text}");
    }
    // The mean's count, `sum(1.0)` over the batch, is the batch size: no kernel.
    assert!(format!("{kernel}").contains("float(batch)"), "{text}");
}

/// `reduce_sum(v, axes, keep_dims)` added to `g`.
fn sum(g: &mut Graph, v: ValueId, axes: Vec<usize>, keep_dims: bool) -> ValueId {
    let op = Op::Reduce {
        op: ReduceOp::Sum,
        axes,
        keep_dims,
    };
    g.add(op, &[v], Span::default()).unwrap()
}

/// `x - reduce_sum(x, axis, keep_dims)` over `x: dims`, output.
fn centered(dims: Vec<Dim>, axis: usize) -> Graph {
    let mut g = Graph::new("T");
    let x: ValueId = leaf(&mut g, "x", dims);
    let s = sum(&mut g, x, vec![axis], true);
    let d = g
        .add(Op::Binary(BinaryOp::Sub), &[x, s], Span::default())
        .unwrap();
    g.outputs = vec![("d".into(), d)];
    g
}

#[test]
fn nests_a_short_row_reduction_into_its_user() {
    let l = lower(&centered(vec![Dim::Batch, Dim::Fixed(64)], 1)).unwrap();
    let text = strata_compiler::lower::print::print_kernels(&l);
    assert_eq!(l.kernels.len(), 1, "{text}");
    assert!(nests_a_reduction(&l.kernels[0]), "{text}");
}

#[test]
fn does_not_nest_a_reduction_over_the_batch_or_a_long_row() {
    // A batch-norm style mean over the batch, and a row of 1000 points.
    for (dims, axis) in [
        (vec![Dim::Batch, Dim::Fixed(8)], 0),
        (vec![Dim::Batch, Dim::Fixed(1000)], 1),
    ] {
        let l = lower(&centered(dims, axis)).unwrap();
        let text = strata_compiler::lower::print::print_kernels(&l);
        assert_eq!(l.kernels.len(), 2, "{text}");
        assert!(
            matches!(l.kernels[0].body, KernelBody::Reduce { .. }),
            "{text}"
        );
        assert!(!l.kernels.iter().any(nests_a_reduction), "{text}");
    }
}

#[test]
fn every_example_train_step_plan_is_near_the_lower_bound_and_under_half_the_naive_sum() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compiled(&source);
        for e in &compiled.training {
            let plan = plan_memory(&e.lowered);
            check_plan(&e.lowered, &plan).expect("a safe plan");
            // Parameters, optimizer state, inputs and outputs live outside the arena.
            let l = &e.lowered;
            for (name, b) in l.inputs.iter().chain(&l.outputs) {
                assert!(
                    plan.offsets[*b].is_none(),
                    "{}: `{name}` in the arena",
                    source.name
                );
                assert!(
                    plan.io_offsets[*b].is_some(),
                    "{}: `{name}` has no I/O place",
                    source.name
                );
            }
            for (b, buf) in l.buffers.iter().enumerate() {
                if let BufferRole::Param(_) = buf.role {
                    assert!(plan.offsets[b].is_none(), "{}: `{}`", source.name, buf.name);
                }
            }
            let s = e.stats().unwrap();
            eprintln!("{} {}: {s:?}", source.name, e.name);
            if e.name != "train_step" {
                continue;
            }
            assert!(
                s.arena as f64 <= 1.10 * s.lower_bound as f64,
                "{}: {s:?}",
                source.name
            );
            assert!(
                s.arena as f64 <= 0.5 * s.naive_unfused as f64,
                "{}: {s:?}",
                source.name
            );
        }
    }
}

/// Two row sums of `x` (over each axis) and a sum of the first: the siblings share one
/// kernel; the sum of a sum waits for it.
#[test]
fn groups_siblings_but_not_a_kernel_with_its_consumer() {
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(8)]);
    let rows = sum(&mut g, x, vec![1], false);
    let cols = sum(&mut g, x, vec![0], false);
    let total = sum(&mut g, rows, vec![0], false);
    g.outputs = vec![
        ("rows".into(), rows),
        ("cols".into(), cols),
        ("total".into(), total),
    ];
    let l = lower(&g).unwrap();
    let parts: Vec<usize> = l.kernels.iter().map(|k| k.part_count()).collect();
    assert_eq!(parts, [2, 1], "{}", print_kernels(&l));
}

/// An update of a parameter never runs with a kernel that reads its old value, even
/// though neither reads what the other computes.
#[test]
fn does_not_group_an_update_with_a_reader_of_the_old_value() {
    let mut g = Graph::new("T");
    let p = g.add_leaf(
        Op::Param {
            path: "p".into(),
            init: strata_compiler::ir::Init::Uniform(0.1),
        },
        TensorType::f32(vec![Dim::Fixed(8)]),
        Span::default(),
    );
    let x = leaf(&mut g, "x", vec![Dim::Fixed(8)]);
    let total = sum(&mut g, p, vec![0], false);
    let new = g
        .add(Op::Binary(BinaryOp::Add), &[p, x], Span::default())
        .unwrap();
    g.outputs = vec![("total".into(), total)];
    g.updates = vec![(p, new)];
    let l = lower(&g).unwrap();
    let parts: Vec<usize> = l.kernels.iter().map(|k| k.part_count()).collect();
    assert_eq!(parts, [1, 1], "{}", print_kernels(&l));
    assert!(
        l.kernels[1].name.contains("update"),
        "{}",
        print_kernels(&l)
    );
}

/// An LSTM training step's loop bodies: the forward step's carry `[h, c]` and the gates
/// its tape records are one map after the product (operands of one shape); the
/// backward's gate gradients and the carry's cotangent write their own blocks of one
/// buffer, so they run as parts of the launches their inputs allow; the backward reads
/// the gates and `tanh(c)` from the tape instead of recomputing them; and the forward
/// product reads the recurrent weight transposed once before the loop.
#[test]
fn an_lstm_step_is_two_launches_forward_and_three_backward() {
    let source = load_example(&strata_tests::root().join("dsl-examples/lstm.strata"));
    let compiled = compiled(&source);
    let step = train_step(&compiled);
    let l = &step.lowered;
    let per_step: Vec<usize> = l.loops.iter().map(|lp| lp.end - lp.start).collect();
    assert_eq!(per_step, [2, 3], "{}", print_kernels(l));
    let backward = &l.launches[l.loops[1].start..l.loops[1].end];
    for launch in backward {
        let text = l.kernels[launch.kernel].to_string();
        assert!(
            !text.contains("sigmoid(") && !text.contains("tanh("),
            "the backward step recomputes an activation: {text}"
        );
    }
    // The forward product's right-hand side is read row by row: a temporary holding
    // the transposed weight, not the parameter through its strides.
    let forward = &l.launches[l.loops[0].start];
    let KernelBody::Contract(c) = &l.kernels[forward.kernel].body else {
        panic!(
            "the forward step starts with its product: {}",
            print_kernels(l)
        );
    };
    let rhs = forward.bindings[c.b.buf];
    assert_eq!(
        l.buffers[rhs].role,
        BufferRole::Temp,
        "{}",
        print_kernels(l)
    );
    assert_eq!(c.b.col_stride, strata_kernels::ir::Index::Const(1));
}

#[test]
fn a_concatenation_s_operands_are_parts_of_one_launch() {
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(8)]);
    let y = leaf(&mut g, "y", vec![Dim::Batch, Dim::Fixed(4)]);
    let e = g
        .add(Op::Unary(UnaryOp::Exp), &[x], Span::default())
        .unwrap();
    let t = g
        .add(Op::Unary(UnaryOp::Tanh), &[y], Span::default())
        .unwrap();
    let c = g
        .add(Op::Concat { axis: 1 }, &[e, t, x], Span::default())
        .unwrap();
    g.outputs = vec![("c".into(), c)];
    let l = lower(&g).unwrap();
    let parts: Vec<usize> = l.kernels.iter().map(|k| k.part_count()).collect();
    assert_eq!(parts, [3], "{}", print_kernels(&l));
}

/// Operands of one shape: one map with a store per operand, into which a value that
/// two operands use (an LSTM's `c` in `[o tanh(c), c]`) is inlined rather than stored.
#[test]
fn a_concatenation_of_one_shape_is_one_map_computing_shared_values_inside() {
    let mut g = Graph::new("T");
    let x = leaf(&mut g, "x", vec![Dim::Batch, Dim::Fixed(8)]);
    let y = leaf(&mut g, "y", vec![Dim::Batch, Dim::Fixed(8)]);
    let c = g
        .add(Op::Unary(UnaryOp::Sigmoid), &[x], Span::default())
        .unwrap();
    let t = g
        .add(Op::Unary(UnaryOp::Tanh), &[c], Span::default())
        .unwrap();
    let h = g
        .add(Op::Binary(BinaryOp::Mul), &[y, t], Span::default())
        .unwrap();
    let carry = g
        .add(Op::Concat { axis: 1 }, &[h, c], Span::default())
        .unwrap();
    g.outputs = vec![("carry".into(), carry)];
    let l = lower(&g).unwrap();
    assert_eq!(l.kernels.len(), 1, "{}", print_kernels(&l));
    let KernelBody::Map { space, stores } = &l.kernels[0].body else {
        panic!("one map: {}", print_kernels(&l));
    };
    use strata_kernels::ir::Dim as KernelDim;
    assert_eq!(space, &[KernelDim::Batch, KernelDim::Fixed(8)]);
    assert_eq!(stores.len(), 2, "{}", print_kernels(&l));
    assert_eq!(stores[0].buf, stores[1].buf);
    // No buffer besides the inputs and the output: `c` is computed inside.
    assert_eq!(l.buffers.len(), 3, "{}", print_kernels(&l));
}

/// Convolutions of every kind of window: padded, dilated, strided (the CPU's panel
/// path), of 20 output channels (three blocks of rows), with a bias and an activation.
fn convolutions() -> SourceFile {
    SourceFile::new(
        "convolutions.strata",
        "model Convolutions {\n    input x: f32[batch, 2, 11, 13]\n    \
         a = x |> conv2d(20, 3, padding = 1) |> relu\n    \
         b = a |> conv2d(5, [3, 2], dilation = 2, padding = 2) |> tanh\n    \
         output y = b |> conv2d(3, 3, stride = 2, padding = 1)\n}\n\n\
         train Convolutions {\n    label t: f32[batch, 3, 6, 8]\n    loss = mse(y, t)\n    \
         optimizer = sgd(lr = 0.1)\n    batch = 2   epochs = 1   seed = 0\n}\n",
    )
}

#[test]
fn an_inference_convolution_reads_its_image_through_a_window_and_training_keeps_the_columns() {
    let compiled = compiled(&convolutions());
    let text = print_kernels(&compiled.lowered);
    // Three products, each reading its image through a window; no im2col kernel.
    let windows: Vec<_> = compiled
        .lowered
        .kernels
        .iter()
        .filter_map(|k| match &k.body {
            KernelBody::Contract(c) => c.b.window.as_deref().copied(),
            _ => None,
        })
        .collect();
    assert_eq!(windows.len(), 3, "{text}");
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.stride, w.padding, w.dilation))
            .collect::<Vec<_>>(),
        [(1, 1, 1), (1, 2, 2), (2, 1, 1)],
        "{text}"
    );
    assert!(!text.contains("im2col"), "{text}");
    // The training step's weight gradients read the columns: they stay stored.
    let step = train_step(&compiled);
    let step_text = print_kernels(&step.lowered);
    assert!(step_text.contains("im2col"), "{step_text}");
    // Against the interpreter, on every backend at hand.
    strata_tests::infer_check::check_backends("convolutions", &convolutions(), &[1, 3]);
}

#[test]
fn a_recurrent_step_adds_its_input_projection_as_a_term_and_never_stores_it() {
    // The LSTM example (hidden 32, so gates of 4 x 32): in the training step the input
    // projection `x_t W_ihᵀ + b` of every step is a term of the step's product, and no
    // buffer holds it for the whole sequence (`[T, batch, 128]`). Inference keeps the
    // projection before its loop (cheaper at batch 1).
    let source = load_example(&strata_tests::root().join("dsl-examples/lstm.strata"));
    let compiled = compiled(&source);
    let step = train_step(&compiled);
    let has_terms = |k: &Kernel| {
        k.body
            .bodies()
            .iter()
            .any(|b| matches!(b, KernelBody::Contract(c) if !c.terms.is_empty()))
    };
    assert!(!compiled.lowered.kernels.iter().any(has_terms));
    let lowered = &step.lowered;
    let listing = print_kernels(lowered);
    let first_loop = lowered.loops.first().expect("the scan's loop");
    let with_terms: Vec<&Kernel> = (first_loop.start..first_loop.end)
        .map(|i| &lowered.kernels[lowered.launches[i].kernel])
        .filter(|k| {
            k.body
                .bodies()
                .iter()
                .any(|b| matches!(b, KernelBody::Contract(c) if c.terms.len() == 1))
        })
        .collect();
    assert_eq!(with_terms.len(), 1, "{listing}");
    use strata_kernels::ir::Dim as KDim;
    let stacked = lowered.buffers.iter().find(|b| {
        b.shape.len() == 3 && b.shape[1] == KDim::Batch && b.shape[2] == KDim::Fixed(4 * 32)
    });
    assert!(
        stacked.is_none(),
        "a stacked projection {stacked:?}: {listing}"
    );
}

#[test]
fn the_stage_dumps_show_the_projection_moved_into_a_training_step_s_loop() {
    // `strata ir --dump-dir`: a file for what lowering does to a training step's graph
    // before fusing it, and none for inference, which keeps its projection.
    let source = load_example(&strata_tests::root().join("dsl-examples/lstm.strata"));
    let compiled = compiled(&source);
    let names = |entry: &str, graph: &Graph| -> Vec<String> {
        strata_compiler::driver::stage_dumps(entry, graph)
            .unwrap_or_else(|e| panic!("{}", e.render(&source)))
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let step = names("train_step", &train_step(&compiled).unsimplified);
    let moved: Vec<&String> = step
        .iter()
        .filter(|n| n.ends_with("-scan_projection.ir"))
        .collect();
    assert_eq!(moved.len(), 1, "{step:?}");
    let infer = names("infer", &compiled.infer_unsimplified);
    assert!(
        !infer.iter().any(|n| n.contains("scan_projection")),
        "{infer:?}"
    );
}
