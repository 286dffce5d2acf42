//! `conv_transpose2d`, PyTorch's `ConvTranspose2d` (weight `[C, O, kh, kw]`): a case
//! worked by hand, the interpreter against the definition written out here over strides,
//! per-axis padding, output padding and dilation, gradients against finite differences,
//! the CPU and GPU backends against the interpreter, and a train step against the
//! interpreter's. PyTorch's own outputs are checked in `torch_fixtures.rs`.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::source::SourceFile;
use strata_tests::TestRng;
use strata_tests::gradient_check::assert_gradients_match_finite_differences;
use strata_tests::infer_check::check_backends;

fn random(rng: &mut TestRng, shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor {
        shape,
        data: (0..n)
            .map(|_| f64::from(rng.uniform()) * 2.0 - 1.0)
            .collect(),
    }
}

/// The settings of one transposed convolution, as PyTorch names them.
#[derive(Clone, Copy, Debug)]
struct Transposed {
    stride: usize,
    padding: [usize; 2],
    output_padding: [usize; 2],
    dilation: usize,
}

/// The definition: input pixel `(i, j)` of channel `c` adds `x · w[c, o, a, b]` to output
/// pixel `(i stride + a dilation - padding, j stride + b dilation - padding)` of channel
/// `o`, where that lies inside the output.
fn conv_transpose(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, t: Transposed) -> Tensor {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (o, kh, kw) = (w.shape[1], w.shape[2], w.shape[3]);
    let extent = |len: usize, k: usize, a: usize| {
        (len - 1) * t.stride + t.dilation * (k - 1) + t.output_padding[a] + 1 - 2 * t.padding[a]
    };
    let (oh, ow) = (extent(h, kh, 0), extent(wd, kw, 1));
    let mut y = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            for p in 0..oh * ow {
                y[(b * o + oc) * oh * ow + p] = bias.map_or(0.0, |bias| bias.data[oc]);
            }
        }
        for ic in 0..c {
            for i in 0..h {
                for j in 0..wd {
                    let v = x.data[((b * c + ic) * h + i) * wd + j];
                    for oc in 0..o {
                        for a in 0..kh {
                            for e in 0..kw {
                                let r =
                                    (i * t.stride + a * t.dilation) as i64 - t.padding[0] as i64;
                                let s =
                                    (j * t.stride + e * t.dilation) as i64 - t.padding[1] as i64;
                                if r < 0 || s < 0 || r >= oh as i64 || s >= ow as i64 {
                                    continue;
                                }
                                let wv = w.data[((ic * o + oc) * kh + a) * kw + e];
                                y[((b * o + oc) * oh + r as usize) * ow + s as usize] += v * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor {
        shape: vec![n, o, oh, ow],
        data: y,
    }
}

/// `y` of a one-layer model `conv_transpose2d(x, …, options)` by the interpreter.
fn interpreted(
    input: &[usize],
    call: &str,
    x: &Tensor,
    params: &HashMap<String, Tensor>,
) -> Tensor {
    let dims: Vec<String> = input.iter().map(|d| d.to_string()).collect();
    let text = format!(
        "model Up {{\n    input x: f32[batch, {}]\n    layer up = {call}\n    output y = up(x)\n}}\n",
        dims.join(", ")
    );
    let source = SourceFile::new("up.strata", text);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let out = interpret(
        &compiled.typed,
        &HashMap::from([("x".to_string(), x.clone())]),
        params,
    )
    .expect("interprets");
    out["y"].clone()
}

/// A 2x2 image through a 2x2 kernel of ones: at stride 1 the windows overlap and add
/// up; at stride 2 each pixel fills its own 2x2 block; padding 1 then crops the border
/// and output padding 1 adds a row and a column past the last block.
#[test]
fn a_hand_computed_case() {
    let x = Tensor {
        shape: vec![1, 1, 2, 2],
        data: vec![1.0, 2.0, 3.0, 4.0],
    };
    let params = HashMap::from([(
        "up.weight".to_string(),
        Tensor {
            shape: vec![1, 1, 2, 2],
            data: vec![1.0; 4],
        },
    )]);
    let run = |call: &str| interpreted(&[1, 2, 2], call, &x, &params);
    let y = run("conv_transpose2d(1, 2, bias = false)");
    assert_eq!(y.shape, vec![1, 1, 3, 3]);
    assert_eq!(y.data, [1., 3., 2., 4., 10., 6., 3., 7., 4.]);
    let y = run("conv_transpose2d(1, 2, stride = 2, bias = false)");
    assert_eq!(y.shape, vec![1, 1, 4, 4]);
    #[rustfmt::skip]
    assert_eq!(y.data, [
        1., 1., 2., 2.,
        1., 1., 2., 2.,
        3., 3., 4., 4.,
        3., 3., 4., 4.,
    ]);
    let y =
        run("conv_transpose2d(1, 2, stride = 2, padding = 1, output_padding = 1, bias = false)");
    assert_eq!(y.shape, vec![1, 1, 3, 3]);
    assert_eq!(y.data, [1., 2., 2., 3., 4., 4., 3., 4., 4.]);
}

#[test]
fn conv_transpose2d_computes_its_definition() {
    let mut rng = TestRng::new(5);
    for (kernel, t) in [
        (
            [3, 3],
            Transposed {
                stride: 1,
                padding: [0, 0],
                output_padding: [0, 0],
                dilation: 1,
            },
        ),
        (
            [3, 2],
            Transposed {
                stride: 2,
                padding: [1, 0],
                output_padding: [1, 1],
                dilation: 1,
            },
        ),
        (
            [2, 3],
            Transposed {
                stride: 3,
                padding: [2, 1],
                output_padding: [2, 0],
                dilation: 2,
            },
        ),
        (
            [4, 4],
            Transposed {
                stride: 2,
                padding: [1, 1],
                output_padding: [0, 0],
                dilation: 1,
            },
        ),
    ] {
        let x = random(&mut rng, vec![2, 3, 4, 5]);
        let params = HashMap::from([
            (
                "up.weight".to_string(),
                random(&mut rng, vec![3, 2, kernel[0], kernel[1]]),
            ),
            ("up.bias".to_string(), random(&mut rng, vec![2])),
        ]);
        let call = format!(
            "conv_transpose2d(2, [{}, {}], stride = {}, padding = [{}, {}], output_padding = [{}, {}], dilation = {})",
            kernel[0],
            kernel[1],
            t.stride,
            t.padding[0],
            t.padding[1],
            t.output_padding[0],
            t.output_padding[1],
            t.dilation
        );
        let got = interpreted(&[3, 4, 5], &call, &x, &params);
        let want = conv_transpose(&x, &params["up.weight"], Some(&params["up.bias"]), t);
        assert_eq!(got.shape, want.shape, "{call}");
        let err = got.max_relative_error(&want);
        assert!(err < 1e-12, "{call}: relative error {err:e}");
    }
}

/// A small decoder: a dense code upsampled by two transposed convolutions.
const DECODER: &str = r#"
model Decoder {
    input x: f32[batch, 2, 3, 3]
    h = x |> conv_transpose2d(3, 3, stride = 2, padding = 1, output_padding = 1) |> tanh
    output image = h |> conv_transpose2d(1, [2, 3], padding = [0, 1], dilation = 2)
    output logits = image |> flatten |> dense(3)
}
train Decoder {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn conv_transpose2d_gradients_match_finite_differences() {
    let mut rng = TestRng::new(8);
    let inputs = HashMap::from([
        ("x".to_string(), random(&mut rng, vec![3, 2, 3, 3])),
        (
            "y".to_string(),
            Tensor::new(vec![3], vec![2.0, 0.0, 1.0]).unwrap(),
        ),
    ]);
    assert_gradients_match_finite_differences("decoder", DECODER, &inputs, 12, 1e-6);
}

#[test]
fn conv_transpose2d_matches_the_interpreter_on_cpu_and_gpu() {
    let source = SourceFile::new("decoder.strata", DECODER.to_string());
    check_backends(
        "conv_transpose2d_matches_the_interpreter_on_cpu_and_gpu",
        &source,
        &[1, 4, 19],
    );
}

#[test]
fn a_conv_transpose2d_train_step_matches_the_interpreter() {
    strata_tests::train_check::assert_train_steps_match("decoder", DECODER, &[2, 3, 3], 3, 8, 4);
}

#[test]
fn conv_transpose2d_mistakes_are_located_errors() {
    strata_tests::assert_located_errors(
        "f32[batch, 2, 3, 5]",
        &[
            (
                "conv_transpose2d(x, 2, 3, stride = 2, output_padding = 2)",
                "smaller than the stride",
            ),
            ("conv_transpose2d(x, 2, 1, padding = 3)", "leaves no output"),
            (
                "conv_transpose2d(x, 2, 3, padding = [1, 2, 3])",
                "a list of two",
            ),
            (
                "conv_transpose2d(reshape(x, [batch, 30]), 2, 3)",
                "needs an image",
            ),
        ],
    );
}
