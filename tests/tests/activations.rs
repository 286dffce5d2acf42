//! `gelu` (exact and tanh), `leaky_relu`, `softplus` and `upsample2d` compute their definitions (checked in the
//! reference interpreter against closed forms).

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::source::SourceFile;

fn run(text: &str, x: Tensor) -> HashMap<String, Tensor> {
    let source = SourceFile::new("act.strata", text.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let inputs = HashMap::from([("x".to_string(), x)]);
    interpret(&compiled.typed, &inputs, &HashMap::new()).expect("interprets")
}

/// PyTorch's `F.gelu` (`x Φ(x)`, from Python's `math.erf`) and `F.gelu(approximate =
/// "tanh")`.
#[test]
fn gelu_is_exact_by_default_and_tanh_on_request() {
    let exact = [
        (-6.0, -5.919525869479969e-09),
        (-3.0, -0.00404969409489031),
        (-1.0, -0.15865525393145707),
        (-0.5, -0.15426876936299344),
        (0.0, 0.0),
        (0.5, 0.34573123063700656),
        (1.0, 0.8413447460685429),
        (2.0, 1.9544997361036416),
        (6.0, 5.999999994080474),
    ];
    let xs: Vec<f64> = exact.iter().map(|(x, _)| *x).collect();
    let out = run(
        r#"
model Gelu {
    input x: f32[batch, 9]
    output exact = gelu(x)
    output none = x |> gelu(approximate = "none")
    output tanh = x |> gelu(approximate = tanh)
}
"#,
        Tensor::new(vec![1, 9], xs.clone()).unwrap(),
    );
    for (i, &(x, want)) in exact.iter().enumerate() {
        for name in ["exact", "none"] {
            let got = out[name].data[i];
            assert!(
                (got - want).abs() <= 1e-15,
                "{name} gelu({x}) = {got}, want {want}"
            );
        }
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let tanh = 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh());
        assert!(
            (out["tanh"].data[i] - tanh).abs() <= 1e-15,
            "tanh gelu({x})"
        );
    }
    // The two forms differ (by about 1e-4 at x = 2, 3e-4 at x = -3).
    let gap = (0..xs.len())
        .map(|i| (out["tanh"].data[i] - out["exact"].data[i]).abs())
        .fold(0.0, f64::max);
    assert!(gap > 5e-5, "tanh and exact forms agree to {gap:e}");
}

#[test]
fn unknown_gelu_approximations_and_layer_activations_are_errors_at_the_word() {
    for (text, word, message) in [
        (
            "model A {\n    input x: f32[batch, 4]\n    output y = gelu(x, approximate = sigmoid)\n}\n",
            "sigmoid",
            "unknown GELU approximation `sigmoid`",
        ),
        (
            "model B {\n    input x: f32[batch, 3, 4]\n    output y = transformer_encoder_layer(x, 2, 8, activation = tanh)\n}\n",
            "tanh",
            "unknown activation `tanh`",
        ),
    ] {
        let source = SourceFile::new("act.strata", text.to_string());
        let Err(e) = compile(&source, &CompileOptions::default()) else {
            panic!("{text} compiles");
        };
        let rendered = e.render(&source);
        assert!(rendered.contains(message), "{rendered}");
        assert!(rendered.contains("E0"), "an error code: {rendered}");
        let line = text.lines().nth(2).expect("third line");
        let col = line.find(&format!("= {word}")).expect("the word") + 2;
        assert!(
            rendered.contains(&format!("act.strata:3:{}", col + 1)),
            "located at the word: {rendered}"
        );
    }
}

#[test]
fn leaky_relu_and_softplus_match_their_definitions() {
    let xs = [-800.0, -30.0, -2.5, -0.1, 0.0, 0.3, 4.0, 50.0, 800.0];
    let out = run(
        r#"
model Act {
    input x: f32[batch, 9]
    output leaky = leaky_relu(x, slope = 0.2)
    output soft = softplus(x)
}
"#,
        Tensor::new(vec![1, 9], xs.to_vec()).unwrap(),
    );
    for (i, &x) in xs.iter().enumerate() {
        let leaky = if x > 0.0 { x } else { 0.2 * x };
        assert_eq!(out["leaky"].data[i], leaky, "leaky_relu({x})");
        // ln(1 + e^x), written to stay exact at both ends.
        let soft = if x > 30.0 {
            x + (-x).exp()
        } else {
            x.exp().ln_1p()
        };
        let got = out["soft"].data[i];
        // Without a log1p op, `log(1 + e^-|x|)` is exact to the rounding of `1 + …`:
        // an absolute error of one epsilon (relative for large results).
        assert!(
            (got - soft).abs() <= 4.0 * f64::EPSILON * soft.abs().max(1.0),
            "softplus({x}) = {got}, want {soft}"
        );
        assert!(got.is_finite());
    }
}

#[test]
fn upsample2d_repeats_every_pixel() {
    let x: Vec<f64> = (0..12).map(f64::from).collect();
    let out = run(
        r#"
model Up {
    input x: f32[batch, 2, 2, 3]
    output y = upsample2d(x, factor = 2)
}
"#,
        Tensor::new(vec![1, 2, 2, 3], x.clone()).unwrap(),
    );
    let y = &out["y"];
    assert_eq!(y.shape, vec![1, 2, 4, 6]);
    for c in 0..2 {
        for i in 0..4 {
            for j in 0..6 {
                let want = x[(c * 2 + i / 2) * 3 + j / 2];
                assert_eq!(y.data[(c * 4 + i) * 6 + j], want, "channel {c}, ({i}, {j})");
            }
        }
    }
}

/// A grouped convolution is the convolutions of its channel groups side by side: with
/// one group's weights zeroed, that group's outputs are its bias alone.
#[test]
fn grouped_conv2d_keeps_groups_apart() {
    let text = r#"
model G {
    input x: f32[batch, 2, 3, 3]
    output y = conv2d(x, 2, 3, padding = 1, groups = 2)
}
"#;
    let source = SourceFile::new("g.strata", text.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let x: Vec<f64> = (0..18).map(|i| f64::from(i) * 0.1 - 0.5).collect();
    // Output channel 0 reads only input channel 0 (weights [2, 1, 3, 3]).
    let mut w = vec![0.0; 18];
    w[4] = 1.0; // channel 0: the centre tap copies its input
    let params = HashMap::from([
        (
            "conv2d0.weight".to_string(),
            Tensor::new(vec![2, 1, 3, 3], w).unwrap(),
        ),
        (
            "conv2d0.bias".to_string(),
            Tensor::new(vec![2], vec![0.0, 0.25]).unwrap(),
        ),
    ]);
    let inputs = HashMap::from([(
        "x".to_string(),
        Tensor::new(vec![1, 2, 3, 3], x.clone()).unwrap(),
    )]);
    let y = &interpret(&compiled.typed, &inputs, &params).expect("interprets")["y"];
    assert_eq!(y.shape, vec![1, 2, 3, 3]);
    assert_eq!(&y.data[..9], &x[..9], "group 0 copies channel 0");
    assert!(
        y.data[9..].iter().all(|&v| v == 0.25),
        "group 1 is its bias: {:?}",
        &y.data[9..]
    );
}

#[test]
fn overlapping_max_pooling_takes_each_windows_maximum() {
    let text = r#"
model P {
    input x: f32[batch, 1, 5, 5]
    output y = max_pool2d(x, 3, stride = 2)
    output z = avg_pool2d(x, 2, stride = 3)
}
"#;
    let x: Vec<f64> = (0..25).map(|i| f64::from((i * 7) % 11)).collect();
    let out = run(text, Tensor::new(vec![1, 1, 5, 5], x.clone()).unwrap());
    let at = |i: usize, j: usize| x[i * 5 + j];
    let y = &out["y"];
    assert_eq!(y.shape, vec![1, 1, 2, 2]);
    for (k, (oi, oj)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
        let mut m = f64::MIN;
        for i in 0..3 {
            for j in 0..3 {
                m = m.max(at(2 * oi + i, 2 * oj + j));
            }
        }
        assert_eq!(y.data[k], m, "window ({oi}, {oj})");
    }
    // 2x2 windows every 3 pixels: rows/cols 0-1 and 3-4.
    let z = &out["z"];
    assert_eq!(z.shape, vec![1, 1, 2, 2]);
    let mean = (at(3, 3) + at(3, 4) + at(4, 3) + at(4, 4)) / 4.0;
    assert!((z.data[3] - mean).abs() < 1e-12);
}

#[test]
fn split_cuts_into_the_parts_concat_joins() {
    let x: Vec<f64> = (0..10).map(f64::from).collect();
    let out = run(
        r#"
model S {
    input x: f32[batch, 10]
    a, b = split(x, [3, 7])
    c, d = split(x, 2)
    output first = a
    output rest = b
    output again = concat(c, d)
}
"#,
        Tensor::new(vec![1, 10], x.clone()).unwrap(),
    );
    assert_eq!(out["first"].data, x[..3]);
    assert_eq!(out["rest"].data, x[3..]);
    assert_eq!(out["again"].data, x);
}
