//! Tests of the reference interpreter: hand-checked examples of every op, run through
//! whole graphs so the driver (batch resolution, shape checks) is exercised too.

use super::*;
use crate::ir::op::Init;
use crate::ir::op::{BinaryOp, ReduceOp, UnaryOp};
use crate::ir::types::TensorType;
use crate::source::Span;

fn fixed(dims: &[u64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn input(g: &mut Graph, name: &str, dims: Vec<Dim>) -> ValueId {
    g.add_leaf(
        Op::Input { name: name.into() },
        TensorType::f32(dims),
        Span::default(),
    )
}

fn param(g: &mut Graph, path: &str, dims: &[u64]) -> ValueId {
    g.add_leaf(
        Op::Param {
            path: path.into(),
            init: Init::XavierUniform,
        },
        TensorType::f32(fixed(dims)),
        Span::default(),
    )
}

fn t(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::new(shape.to_vec(), data.to_vec()).expect("test tensor sizes match")
}

fn feeds(pairs: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

/// Applies `op` to fixed-shape inputs `a`, `b`, … and returns the single output.
fn run(op: Op, operands: &[Tensor]) -> Tensor {
    let mut g = Graph::new("t");
    let names = ["a", "b", "c", "d"];
    let ids: Vec<ValueId> = operands
        .iter()
        .zip(names)
        .map(|(x, n)| {
            input(
                &mut g,
                n,
                x.shape.iter().map(|&d| Dim::Fixed(d as u64)).collect(),
            )
        })
        .collect();
    let y = g
        .add(op, &ids, Span::default())
        .expect("well-typed test op");
    g.outputs.push(("y".into(), y));
    let inputs: HashMap<String, Tensor> = operands
        .iter()
        .zip(names)
        .map(|(x, n)| (n.to_string(), x.clone()))
        .collect();
    let mut out = interpret(&g, &inputs, &HashMap::new()).expect("evaluates");
    out.remove("y").expect("output y")
}

fn assert_close(actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.shape, expected.shape);
    let err = actual.max_relative_error(expected);
    assert!(err < 1e-12, "{actual:?} vs {expected:?}: error {err}");
}

/// A unary op's textbook definition.
type Reference = fn(f64) -> f64;

#[test]
fn unary_ops_match_their_definitions() {
    let x = t(&[4], &[-2.0, -0.5, 0.25, 3.0]);
    let cases: [(UnaryOp, Reference); 9] = [
        (UnaryOp::Neg, |x| -x),
        (UnaryOp::Abs, f64::abs),
        (UnaryOp::Exp, f64::exp),
        (UnaryOp::Log, f64::ln),
        (UnaryOp::Sqrt, f64::sqrt),
        (UnaryOp::Recip, |x| 1.0 / x),
        (UnaryOp::Tanh, f64::tanh),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Relu, |x| x.max(0.0)),
    ];
    for (op, f) in cases {
        let y = run(Op::Unary(op), std::slice::from_ref(&x));
        for (got, &x) in y.data.iter().zip(&x.data) {
            let want = f(x);
            let close = (got - want).abs() <= 1e-15 * want.abs();
            assert!(
                close || got == &want || (got.is_nan() && want.is_nan()),
                "{}({x}) = {got}, want {want}",
                op.name()
            );
        }
    }
}

#[test]
fn sigmoid_saturates_without_overflow() {
    let y = run(Op::Unary(UnaryOp::Sigmoid), &[t(&[2], &[-1000.0, 1000.0])]);
    assert_eq!(y.data, vec![0.0, 1.0]);
}

#[test]
fn binary_ops_broadcast_a_row_over_a_matrix() {
    let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3], &[10.0, 20.0, 30.0]);
    let y = run(Op::Binary(BinaryOp::Add), &[a, b]);
    assert_eq!(y, t(&[2, 3], &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]));
}

#[test]
fn binary_ops_broadcast_a_column_against_a_row() {
    let a = t(&[2, 1], &[1.0, 2.0]);
    let b = t(&[1, 3], &[1.0, 10.0, 100.0]);
    let y = run(Op::Binary(BinaryOp::Mul), &[a, b]);
    assert_eq!(y, t(&[2, 3], &[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]));
}

#[test]
fn binary_ops_broadcast_a_scalar() {
    let y = run(
        Op::Binary(BinaryOp::Sub),
        &[Tensor::scalar(1.0), t(&[2], &[3.0, 5.0])],
    );
    assert_eq!(y, t(&[2], &[-2.0, -4.0]));
}

#[test]
fn arithmetic_ops_compute_elementwise() {
    let a = t(&[3], &[2.0, -1.0, 9.0]);
    let b = t(&[3], &[4.0, 2.0, 0.5]);
    let cases = [
        (BinaryOp::Div, [0.5, -0.5, 18.0]),
        (BinaryOp::Max, [4.0, 2.0, 9.0]),
        (BinaryOp::Min, [2.0, -1.0, 0.5]),
        (BinaryOp::Pow, [16.0, 1.0, 3.0]),
    ];
    for (op, want) in cases {
        let y = run(Op::Binary(op), &[a.clone(), b.clone()]);
        assert_close(&y, &t(&[3], &want));
    }
}

#[test]
fn comparisons_give_one_or_zero() {
    let a = t(&[3], &[1.0, 2.0, 3.0]);
    let b = t(&[3], &[2.0, 2.0, 2.0]);
    let cases = [
        (BinaryOp::Lt, [1.0, 0.0, 0.0]),
        (BinaryOp::Le, [1.0, 1.0, 0.0]),
        (BinaryOp::Gt, [0.0, 0.0, 1.0]),
        (BinaryOp::Ge, [0.0, 1.0, 1.0]),
        (BinaryOp::Eq, [0.0, 1.0, 0.0]),
    ];
    for (op, want) in cases {
        let y = run(Op::Binary(op), &[a.clone(), b.clone()]);
        assert_eq!(y.data, want, "{}", op.name());
    }
}

#[test]
fn max_and_min_propagate_nan() {
    let a = t(&[2], &[f64::NAN, 1.0]);
    let b = t(&[2], &[0.0, f64::NAN]);
    let y = run(Op::Binary(BinaryOp::Max), &[a.clone(), b.clone()]);
    assert!(y.data.iter().all(|x| x.is_nan()));
    let r = run(
        Op::Reduce {
            op: ReduceOp::Min,
            axes: vec![0],
            keep_dims: false,
        },
        &[a],
    );
    assert!(r.data[0].is_nan());
}

#[test]
fn matmul_multiplies_matrices() {
    let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let y = run(Op::MatMul, &[a, b]);
    assert_eq!(y, t(&[2, 2], &[58.0, 64.0, 139.0, 154.0]));
}

#[test]
fn matmul_shares_a_rank_2_rhs_across_leading_dims() {
    let a = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], &[1.0, 0.0, 1.0, 1.0]);
    let y = run(Op::MatMul, &[a, b]);
    assert_eq!(y, t(&[2, 1, 2], &[3.0, 2.0, 7.0, 4.0]));
}

#[test]
fn matmul_pairs_equal_leading_dims() {
    let a = t(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2, 1], &[1.0, 1.0, 2.0, -1.0]);
    let y = run(Op::MatMul, &[a, b]);
    assert_eq!(y, t(&[2, 1, 1], &[3.0, 2.0]));
}

#[test]
fn reduce_sum_drops_or_keeps_the_reduced_axes() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let sum = |axes: Vec<usize>, keep_dims| Op::Reduce {
        op: ReduceOp::Sum,
        axes,
        keep_dims,
    };
    let rows = run(sum(vec![1], false), std::slice::from_ref(&x));
    assert_eq!(rows, t(&[2], &[6.0, 15.0]));
    let cols = run(sum(vec![0], true), std::slice::from_ref(&x));
    assert_eq!(cols, t(&[1, 3], &[5.0, 7.0, 9.0]));
    let all = run(sum(vec![0, 1], false), std::slice::from_ref(&x));
    assert_eq!(all, Tensor::scalar(21.0));
}

#[test]
fn reduce_max_and_min_fold_the_middle_axis() {
    let x = t(&[2, 2, 2], &[1.0, 8.0, 3.0, 4.0, -5.0, 6.0, 7.0, -2.0]);
    let reduce = |op| Op::Reduce {
        op,
        axes: vec![1],
        keep_dims: false,
    };
    let max = run(reduce(ReduceOp::Max), std::slice::from_ref(&x));
    assert_eq!(max, t(&[2, 2], &[3.0, 8.0, 7.0, 6.0]));
    let min = run(reduce(ReduceOp::Min), std::slice::from_ref(&x));
    assert_eq!(min, t(&[2, 2], &[1.0, 4.0, -5.0, -2.0]));
}

#[test]
fn reshape_keeps_row_major_data() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = run(
        Op::Reshape {
            shape: Shape(fixed(&[3, 2])),
        },
        &[x],
    );
    assert_eq!(y, t(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
}

#[test]
fn transpose_swaps_a_matrix() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = run(Op::Transpose { perm: vec![1, 0] }, &[x]);
    assert_eq!(y, t(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
}

#[test]
fn transpose_output_dim_i_is_input_dim_perm_i() {
    // x[i, j, k] = 100 i + 10 j + k with shape [2, 3, 4].
    let data: Vec<f64> = (0..24)
        .map(|n| f64::from(100 * (n / 12) + 10 * (n / 4 % 3) + n % 4))
        .collect();
    let x = t(&[2, 3, 4], &data);
    let y = run(
        Op::Transpose {
            perm: vec![2, 0, 1],
        },
        &[x],
    );
    assert_eq!(y.shape, vec![4, 2, 3]);
    // y[k, i, j] = x[i, j, k]: y[3, 1, 2] is at 3*6 + 1*3 + 2.
    assert_eq!(y.data[3 * 6 + 3 + 2], 123.0);
    assert_eq!(y.data[1 + 1], 20.0);
}

#[test]
fn concat_joins_along_the_axis() {
    let a = t(&[2, 1], &[1.0, 2.0]);
    let b = t(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
    let y = run(Op::Concat { axis: 1 }, &[a.clone(), b]);
    assert_eq!(y, t(&[2, 3], &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]));
    let z = run(Op::Concat { axis: 0 }, &[a.clone(), a]);
    assert_eq!(z, t(&[4, 1], &[1.0, 2.0, 1.0, 2.0]));
}

#[test]
fn const_is_a_scalar() {
    let mut g = Graph::new("c");
    let c = g
        .add(Op::Const { value: 2.5 }, &[], Span::default())
        .expect("const");
    g.outputs.push(("c".into(), c));
    let out = interpret(&g, &HashMap::new(), &HashMap::new()).expect("evaluates");
    assert_eq!(out["c"], Tensor::scalar(2.5));
}

/// `y = relu(x W1ᵀ + b1) W2ᵀ + b2` with PyTorch-layout weights, as `dense` elaborates.
fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let s = Span::default();
    let x = input(&mut g, "x", vec![Dim::Batch, Dim::Fixed(2)]);
    let w1 = param(&mut g, "l1.weight", &[3, 2]);
    let b1 = param(&mut g, "l1.bias", &[3]);
    let w2 = param(&mut g, "l2.weight", &[1, 3]);
    let b2 = param(&mut g, "l2.bias", &[1]);
    let w1t = g.add(Op::Transpose { perm: vec![1, 0] }, &[w1], s).unwrap();
    let h = g.add(Op::MatMul, &[x, w1t], s).unwrap();
    let h = g.add(Op::Binary(BinaryOp::Add), &[h, b1], s).unwrap();
    let h = g.add(Op::Unary(UnaryOp::Relu), &[h], s).unwrap();
    let w2t = g.add(Op::Transpose { perm: vec![1, 0] }, &[w2], s).unwrap();
    let y = g.add(Op::MatMul, &[h, w2t], s).unwrap();
    let y = g.add(Op::Binary(BinaryOp::Add), &[y, b2], s).unwrap();
    g.outputs.push(("y".into(), y));
    g
}

fn mlp_params() -> HashMap<String, Tensor> {
    feeds(&[
        ("l1.weight", t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, -1.0])),
        ("l1.bias", t(&[3], &[0.0, 0.5, -1.0])),
        ("l2.weight", t(&[1, 3], &[1.0, 2.0, 3.0])),
        ("l2.bias", t(&[1], &[0.25])),
    ])
}

#[test]
fn tiny_mlp_matches_hand_computation() {
    // Row [1, 2]: h = relu([1, 2.5, -2]) = [1, 2.5, 0]; y = 1 + 5 + 0 + 0.25 = 6.25.
    // Row [3, -1]: h = relu([3, -0.5, 3]) = [3, 0, 3]; y = 3 + 0 + 9 + 0.25 = 12.25.
    let inputs = feeds(&[("x", t(&[2, 2], &[1.0, 2.0, 3.0, -1.0]))]);
    let out = interpret(&mlp(), &inputs, &mlp_params()).expect("evaluates");
    assert_eq!(out["y"], t(&[2, 1], &[6.25, 12.25]));
}

#[test]
fn the_batch_size_comes_from_the_inputs() {
    // x = 0: h = relu(b1) = [0, 0.5, 0]; y = 2 * 0.5 + 0.25 = 1.25 on every row.
    let inputs = feeds(&[("x", t(&[5, 2], &[0.0; 10]))]);
    let out = interpret(&mlp(), &inputs, &mlp_params()).expect("evaluates");
    assert_eq!(out["y"], Tensor::full(vec![5, 1], 1.25));
}

#[test]
fn interpret_values_returns_every_node() {
    let g = mlp();
    let inputs = feeds(&[("x", t(&[1, 2], &[1.0, 2.0]))]);
    let values = interpret_values(&g, &inputs, &mlp_params()).expect("evaluates");
    assert_eq!(values.len(), g.len());
    let relu = g
        .values()
        .into_iter()
        .find(|&v| g.node(v).op == Op::Unary(UnaryOp::Relu))
        .expect("relu node");
    assert_eq!(values[&relu], t(&[1, 3], &[1.0, 2.5, 0.0]));
}

#[test]
fn inputs_with_different_batch_sizes_are_rejected() {
    let mut g = Graph::new("two");
    let x = input(&mut g, "x", vec![Dim::Batch, Dim::Fixed(2)]);
    let y = input(&mut g, "y", vec![Dim::Batch, Dim::Fixed(2)]);
    let s = g
        .add(Op::Binary(BinaryOp::Add), &[x, y], Span::default())
        .unwrap();
    g.outputs.push(("s".into(), s));
    let inputs = feeds(&[
        ("x", Tensor::zeros(vec![4, 2])),
        ("y", Tensor::zeros(vec![3, 2])),
    ]);
    let err = interpret(&g, &inputs, &HashMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `y` has shape [3, 2] (batch 3), but input `x` has shape [4, 2] (batch 4); \
         every input must have the same batch size"
    );
}

#[test]
fn a_fixed_dimension_mismatch_names_the_input_and_both_shapes() {
    let inputs = feeds(&[("x", Tensor::zeros(vec![4, 3]))]);
    let err = interpret(&mlp(), &inputs, &mlp_params()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `x` has shape [4, 3], but the graph declares [batch, 2]"
    );
}

#[test]
fn missing_inputs_and_params_are_errors() {
    let err = interpret(&mlp(), &HashMap::new(), &mlp_params()).unwrap_err();
    assert!(matches!(err, InterpretError::MissingInput { ref name, .. } if name == "x"));
    let inputs = feeds(&[("x", Tensor::zeros(vec![1, 2]))]);
    let mut params = mlp_params();
    params.remove("l2.bias");
    let err = interpret(&mlp(), &inputs, &params).unwrap_err();
    assert_eq!(err.to_string(), "missing parameter `l2.bias` of shape [1]");
}

#[test]
fn a_param_of_the_wrong_shape_is_an_error() {
    let inputs = feeds(&[("x", Tensor::zeros(vec![1, 2]))]);
    let mut params = mlp_params();
    params.insert("l1.weight".into(), Tensor::zeros(vec![2, 3]));
    let err = interpret(&mlp(), &inputs, &params).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter `l1.weight` has shape [2, 3], but the graph declares [3, 2]"
    );
}

#[test]
fn initial_params_draw_each_parameter_from_its_init() {
    let g = mlp();
    let params = initial_params(&g, 9).expect("fixed shapes");
    assert_eq!(params.len(), 4);
    let w = &params["l1.weight"];
    assert_eq!(w.shape, vec![3, 2]);
    let drawn = init_param("l1.weight", &Init::XavierUniform, &[3, 2], 9);
    assert_eq!(w.to_f32(), drawn);
    let inputs = feeds(&[("x", Tensor::zeros(vec![2, 2]))]);
    assert!(interpret(&g, &inputs, &params).is_ok());
}

#[test]
fn tensor_new_checks_the_element_count() {
    let err = Tensor::new(vec![2, 2], vec![1.0; 3]).unwrap_err();
    assert_eq!(err.to_string(), "a tensor of shape [2, 2] holds 3 elements");
    assert!(Tensor::new(vec![usize::MAX, 2], vec![]).is_err());
}

#[test]
fn a_hand_built_tensor_of_the_wrong_size_is_rejected() {
    let inputs = feeds(&[(
        "x",
        Tensor {
            shape: vec![2, 2],
            data: vec![1.0; 3],
        },
    )]);
    let err = interpret(&mlp(), &inputs, &mlp_params()).unwrap_err();
    assert_eq!(err.to_string(), "a tensor of shape [2, 2] holds 3 elements");
}

#[test]
fn relative_error_is_judged_against_the_reference_scale() {
    let reference = t(&[3], &[100.0, 1.0, 0.0]);
    // 1 off on the large element: 1% of the scale.
    assert_close_to(
        t(&[3], &[101.0, 1.0, 0.0]).max_relative_error(&reference),
        0.01,
    );
    // 0.05 off on a zero element is 0.05 / 100 of the scale, not infinitely wrong.
    assert_close_to(
        t(&[3], &[100.0, 1.0, 0.05]).max_relative_error(&reference),
        0.0005,
    );
    // An all-zero reference gives the absolute error.
    let zeros = Tensor::zeros(vec![2]);
    assert_close_to(t(&[2], &[0.0, 1e-9]).max_relative_error(&zeros), 1e-9);
}

#[test]
fn error_measures_treat_nan_and_shape_mismatch_as_infinite() {
    let a = t(&[2], &[f64::NAN, 1.0]);
    assert_eq!(a.max_abs_error(&a), 0.0);
    assert_eq!(a.max_relative_error(&t(&[2], &[0.0, 1.0])), f64::INFINITY);
    assert_eq!(
        a.max_abs_error(&t(&[1, 2], &[f64::NAN, 1.0])),
        f64::INFINITY
    );
    assert_close_to(
        t(&[2], &[1.5, -1.0]).max_abs_error(&t(&[2], &[1.0, 1.0])),
        2.0,
    );
}

fn assert_close_to(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-12, "{actual} vs {expected}");
}

#[test]
fn slice_takes_a_range_of_one_axis() {
    let x = t(&[2, 4], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let op = Op::Slice {
        axis: 1,
        start: 1,
        len: 2,
    };
    assert_close(&run(op, &[x]), &t(&[2, 2], &[1.0, 2.0, 5.0, 6.0]));
}

#[test]
fn broadcast_stretches_to_the_target_shape() {
    let x = t(&[2, 1], &[1.0, 2.0]);
    let op = Op::Broadcast {
        shape: Shape(fixed(&[3, 2, 2])),
    };
    let expected = t(&[3, 2, 2], &[1.0, 1.0, 2.0, 2.0].repeat(3));
    assert_close(&run(op, &[x]), &expected);
}

#[test]
fn a_cast_to_i32_truncates_toward_zero_saturates_and_maps_nan_to_zero() {
    let x = t(&[7], &[2.9, -2.9, 0.5, f64::NAN, 1e10, -1e10, -0.0]);
    let got = run(
        Op::Cast {
            to: crate::ir::DType::I32,
        },
        &[x],
    );
    let max = f64::from(i32::MAX);
    let min = f64::from(i32::MIN);
    assert_eq!(got.data, vec![2.0, -2.0, 0.0, 0.0, max, min, 0.0]);
    let back = run(
        Op::Cast {
            to: crate::ir::DType::F32,
        },
        std::slice::from_ref(&got),
    );
    assert_eq!(back.data, got.data);
}

#[test]
fn stop_gradient_is_the_identity() {
    let x = t(&[3], &[1.0, -2.0, 3.0]);
    assert_close(&run(Op::StopGradient, std::slice::from_ref(&x)), &x);
}

#[test]
fn one_hot_marks_each_label_column_and_nothing_for_out_of_range_labels() {
    let mut g = Graph::new("t");
    let labels = g.add_leaf(
        Op::Input { name: "y".into() },
        TensorType::new(crate::ir::DType::I32, vec![Dim::Batch]),
        Span::default(),
    );
    let y = g
        .add(Op::OneHot { classes: 3 }, &[labels], Span::default())
        .expect("well-typed");
    assert_eq!(g.ty(y), &TensorType::f32(vec![Dim::Batch, Dim::Fixed(3)]));
    g.outputs.push(("y".into(), y));
    let out = interpret(
        &g,
        &feeds(&[("y", t(&[3], &[2.0, 0.0, 7.0]))]),
        &HashMap::new(),
    )
    .expect("evaluates");
    let expected = t(&[3, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_close(&out["y"], &expected);
}

#[test]
fn matmul_may_contract_over_the_batch() {
    let mut g = Graph::new("t");
    let a = input(&mut g, "a", vec![Dim::Batch, Dim::Fixed(2)]);
    let b = input(&mut g, "b", vec![Dim::Batch, Dim::Fixed(3)]);
    let at = g
        .add(Op::Transpose { perm: vec![1, 0] }, &[a], Span::default())
        .expect("well-typed");
    let c = g
        .add(Op::MatMul, &[at, b], Span::default())
        .expect("k may be the batch");
    assert_eq!(g.ty(c), &TensorType::f32(fixed(&[2, 3])));
    g.outputs.push(("c".into(), c));
    let a_val = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b_val = t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    let out =
        interpret(&g, &feeds(&[("a", a_val), ("b", b_val)]), &HashMap::new()).expect("evaluates");
    // aᵀ b = [[1, 3], [2, 4]] x [[1, 0, 1], [0, 1, 1]]
    assert_close(&out["c"], &t(&[2, 3], &[1.0, 3.0, 4.0, 2.0, 4.0, 6.0]));
}

#[test]
fn new_ops_reject_ill_typed_operands() {
    let f = |dims: &[u64]| TensorType::f32(fixed(dims));
    let slice = Op::Slice {
        axis: 1,
        start: 2,
        len: 3,
    };
    assert!(slice.infer(&[&f(&[2, 4])]).is_err());
    assert!(slice.infer(&[&f(&[2, 5])]).is_ok());
    let batch_slice = Op::Slice {
        axis: 0,
        start: 0,
        len: 1,
    };
    assert!(
        batch_slice
            .infer(&[&TensorType::f32(vec![Dim::Batch])])
            .is_err()
    );
    let broadcast = Op::Broadcast {
        shape: Shape(fixed(&[3, 2])),
    };
    assert!(broadcast.infer(&[&f(&[2, 2])]).is_err());
    assert!(broadcast.infer(&[&f(&[3, 1])]).is_ok());
    assert!(Op::OneHot { classes: 3 }.infer(&[&f(&[2])]).is_err());
    assert!(
        Op::OneHot { classes: 0 }
            .infer(&[&TensorType::new(crate::ir::DType::I32, fixed(&[2]))])
            .is_err()
    );
}
