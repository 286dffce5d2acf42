//! `conv1d`, `max_pool1d` and `avg_pool1d` over `[batch, C, L]`, and conv2d's padding
//! forms: the interpreter against the definitions written out here (PyTorch's `Conv1d`,
//! `MaxPool1d`, `AvgPool1d`), the CPU and GPU backends against the interpreter, and a
//! train step against the interpreter's.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::source::SourceFile;
use strata_tests::TestRng;
use strata_tests::infer_check::check_backends;

const MODEL: &str = r#"
model Seq {
    input x: f32[batch, 2, 7]
    layer same = conv1d(3, 3, padding = "same", dilation = 2)
    layer sided = conv1d(2, 2, stride = 2, padding = [1, 0], bias = false)
    output y = x |> same
    output z = x |> sided
    output p = max_pool1d(x, 2)
    output a = avg_pool1d(x, 3, stride = 2)
}
"#;

fn random(rng: &mut TestRng, shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor {
        shape,
        data: (0..n)
            .map(|_| f64::from(rng.uniform()) * 2.0 - 1.0)
            .collect(),
    }
}

/// Element `[b, c, i]` of a `[batch, C, L]` tensor, zero outside `0..L`.
fn at(x: &Tensor, b: usize, c: usize, i: i64) -> f64 {
    let (cs, l) = (x.shape[1], x.shape[2]);
    if i < 0 || i >= l as i64 {
        return 0.0;
    }
    x.data[(b * cs + c) * l + i as usize]
}

/// PyTorch's `conv1d` with `(left, right)` zeros.
fn conv1d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: (usize, usize),
    dil: usize,
) -> Tensor {
    let (n, c, l) = (x.shape[0], x.shape[1], x.shape[2]);
    let (o, k) = (w.shape[0], w.shape[2]);
    let out_len = (l + pad.0 + pad.1 - dil * (k - 1) - 1) / stride + 1;
    let mut data = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            for t in 0..out_len {
                let mut acc = bias.map_or(0.0, |b| b.data[oc]);
                for ic in 0..c {
                    for j in 0..k {
                        let i = (t * stride + j * dil) as i64 - pad.0 as i64;
                        acc += w.data[(oc * c + ic) * k + j] * at(x, b, ic, i);
                    }
                }
                data.push(acc);
            }
        }
    }
    Tensor {
        shape: vec![n, o, out_len],
        data,
    }
}

fn pool1d(x: &Tensor, k: usize, stride: usize, max: bool) -> Tensor {
    let (n, c, l) = (x.shape[0], x.shape[1], x.shape[2]);
    let out_len = (l - k) / stride + 1;
    let mut data = Vec::new();
    for b in 0..n {
        for ch in 0..c {
            for t in 0..out_len {
                let window = (0..k).map(|j| at(x, b, ch, (t * stride + j) as i64));
                data.push(if max {
                    window.fold(f64::NEG_INFINITY, f64::max)
                } else {
                    window.sum::<f64>() / k as f64
                });
            }
        }
    }
    Tensor {
        shape: vec![n, c, out_len],
        data,
    }
}

fn max_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape, want.shape);
    got.data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn conv1d_and_pooling_compute_pytorchs_definitions() {
    let source = SourceFile::new("seq.strata", MODEL.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut rng = TestRng::new(7);
    let x = random(&mut rng, vec![3, 2, 7]);
    let params = HashMap::from([
        ("same.weight".to_string(), random(&mut rng, vec![3, 2, 3])),
        ("same.bias".to_string(), random(&mut rng, vec![3])),
        ("sided.weight".to_string(), random(&mut rng, vec![2, 2, 2])),
    ]);
    let out = interpret(
        &compiled.typed,
        &HashMap::from([("x".to_string(), x.clone())]),
        &params,
    )
    .expect("interprets");
    // "same" at dilation 2 and kernel 3: 4 zeros, 2 on each side; the length stays 7.
    let y = conv1d(
        &x,
        &params["same.weight"],
        Some(&params["same.bias"]),
        1,
        (2, 2),
        2,
    );
    assert_eq!(y.shape, vec![3, 3, 7]);
    assert!(max_error(&out["y"], &y) < 1e-12);
    let z = conv1d(&x, &params["sided.weight"], None, 2, (1, 0), 1);
    assert_eq!(z.shape, vec![3, 2, 4]);
    assert!(max_error(&out["z"], &z) < 1e-12);
    assert!(max_error(&out["p"], &pool1d(&x, 2, 2, true)) < 1e-12);
    assert!(max_error(&out["a"], &pool1d(&x, 3, 2, false)) < 1e-12);
}

#[test]
fn conv1d_models_match_the_interpreter_on_cpu_and_gpu() {
    let source = SourceFile::new("seq.strata", MODEL.to_string());
    check_backends(
        "conv1d_models_match_the_interpreter_on_cpu_and_gpu",
        &source,
        &[1, 5, 32],
    );
}

#[test]
fn a_temporal_conv_net_train_step_matches_the_interpreter() {
    let text = r#"
model Tcn {
    input x: f32[batch, 1, 20]
    h = x |> conv1d(4, 3, padding = [2, 0]) |> relu |> max_pool1d(2)
    g = h |> conv1d(4, 3, padding = "same", dilation = 2) |> relu |> avg_pool1d(2)
    output logits = g |> flatten |> dense(3)
}
train Tcn {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;
    strata_tests::train_check::assert_train_steps_match("tcn", text, &[1, 20], 3, 8, 4);
}

#[test]
fn conv1d_mistakes_are_located_errors() {
    strata_tests::assert_located_errors(
        "f32[batch, 2, 7]",
        &[
            (
                "conv1d(x, 2, 3, padding = \"same\", stride = 2)",
                "\"same\" only at stride 1",
            ),
            ("conv1d(x, 2, 9)", "does not fit a sequence of 7"),
            (
                "conv1d(x, 2, 3, padding = [1])",
                "must be a non-negative integer",
            ),
            ("conv1d(reshape(x, [batch, 14]), 2, 3)", "needs a sequence"),
        ],
    );
}

/// conv2d's padding forms: `[h, w]` and `[top, bottom, left, right]` written out as zeros
/// equal the window's own padding where they mean the same, and `"same"` keeps the
/// size with an even kernel (the extra zero at the bottom and the right).
#[test]
fn conv2d_padding_written_out_equals_the_windows_and_same_keeps_the_size() {
    let text = r#"
model Pad {
    input x: f32[batch, 2, 5, 6]
    layer w = conv2d(3, 3, bias = false)
    layer e = conv2d(2, 4, bias = false)
    output inside = x |> w(padding = 1)
    output pair = x |> w(padding = [1, 1])
    output four = x |> w(padding = [1, 1, 1, 1])
    output same3 = x |> w(padding = "same")
    output same4 = x |> e(padding = "same")
    output even = x |> e(padding = [1, 2, 1, 2])
    output uneven = x |> w(padding = [0, 2, 1, 0])
}
"#;
    let source = SourceFile::new("pad.strata", text.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut rng = TestRng::new(3);
    let x = random(&mut rng, vec![2, 2, 5, 6]);
    let params = HashMap::from([
        ("w.weight".to_string(), random(&mut rng, vec![3, 2, 3, 3])),
        ("e.weight".to_string(), random(&mut rng, vec![2, 2, 4, 4])),
    ]);
    let out = interpret(
        &compiled.typed,
        &HashMap::from([("x".to_string(), x)]),
        &params,
    )
    .expect("interprets");
    for name in ["pair", "four", "same3"] {
        assert!(max_error(&out[name], &out["inside"]) < 1e-12, "{name}");
    }
    assert_eq!(out["same4"].shape, vec![2, 2, 5, 6]);
    assert!(max_error(&out["same4"], &out["even"]) < 1e-12);
    // Rows: 5 + 0 + 2 - 2 = 5; columns: 6 + 1 + 0 - 2 = 5.
    assert_eq!(out["uneven"].shape, vec![2, 3, 5, 5]);
    check_backends(
        "conv2d_padding_written_out_equals_the_windows_and_same_keeps_the_size",
        &source,
        &[1, 4],
    );
}
