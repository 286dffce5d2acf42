//! Random sources: `uniform(shape, low, high, seed)` and `normal(shape, mean, std, seed)`,
//! a GAN generator's noise, and the modes every random draw of a model follows.
//!
//! # Modes
//! A draw is on in the training step and off in `eval` and `infer`: off, a source is its
//! mean (`normal` its `mean`, `uniform` `(low + high) / 2`), and an augmentation
//! (`augment.rs`) the identity, so evaluation and inference are deterministic and need
//! no `step`. `at_inference = true` keeps a draw on in every entry, for a model whose
//! inference samples (a GAN's generator, a VAE's decoder fed from the prior). Each
//! source takes its name (and so its seed) in either mode, so the seeds of the sources
//! after it do not depend on the mode.
//!
//! Both are built on [`Op::RandomUniform`]: Philox4x32-10 keyed by the seed, with the
//! element's index and the step in the counter, so every backend draws the same numbers,
//! and every training step draws fresh ones. The step is the model's `step` input (f32[],
//! the training step number; a model with a random source takes it at inference too, to
//! say which draw to make). A source's seed is its `seed` argument, or else a hash of its
//! name (`normal0`, `uniform1`, counted per scope like layers), so two sources never
//! draw the same numbers by accident.
//!
//! Normal draws use the inverse of the normal CDF, `z = √2 · erfinv(2u - 1)`, with
//! M. Giles' single-precision erfinv ("Approximating the erfinv function", GPU Computing
//! Gems Jade Edition, 2011: two polynomials, absolute error about 4e-7 against the exact
//! quantile over the whole range). Box–Muller would need a cosine, which neither the IR
//! nor Cranelift has; the inverse CDF needs only `log`, `sqrt` and arithmetic, fused into
//! the consumer like any element-wise chain. The uniform draw `u` (24-bit, in `[0, 1)`)
//! is moved to the middle of its bin, `u + 2⁻²⁵`, so `2u - 1` never reaches ±1 and the
//! largest draw is about ±5.4.

use super::Elaborator;
use super::args::BoundArgs;
use super::layers::shape_list;
use super::value::Value;
use crate::ir::{BinaryOp, Op, Shape, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// Giles' erfinv polynomial for `w = -ln(1 - x²) < 5`, in `w - 2.5`, highest power first.
const CENTRAL: [f64; 9] = [
    2.810_226_36e-08,
    3.432_739_39e-07,
    -3.523_387_7e-06,
    -4.391_506_54e-06,
    0.000_218_580_87,
    -0.001_253_725_03,
    -0.004_177_681_64,
    0.246_640_727,
    1.501_409_41,
];
/// The tail polynomial (`w >= 5`), in `sqrt(w) - 3`.
const TAIL: [f64; 9] = [
    -0.000_200_214_257,
    0.000_100_950_558,
    0.001_349_343_22,
    -0.003_673_428_44,
    0.005_739_507_73,
    -0.007_622_461_3,
    0.009_438_870_47,
    1.001_674_06,
    2.832_976_82,
];

/// Half a 24-bit bin of the uniform draw.
const HALF_BIN: f64 = 1.0 / (1u64 << 25) as f64;

struct Builder<'a, 'p> {
    e: &'a mut Elaborator<'p>,
    span: Span,
}

impl Builder<'_, '_> {
    fn c(&mut self, v: f64) -> ValueId {
        self.e.constant(v, self.span)
    }
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, Diagnostic> {
        self.e.op(Op::Binary(op), &[a, b], self.span)
    }
    fn un(&mut self, op: UnaryOp, a: ValueId) -> Result<ValueId, Diagnostic> {
        self.e.op(Op::Unary(op), &[a], self.span)
    }
    /// `x * k + c` with constants `k`, `c` (either skipped when it does nothing).
    fn affine(&mut self, x: ValueId, k: f64, c: f64) -> Result<ValueId, Diagnostic> {
        let mut y = x;
        if k != 1.0 {
            let k = self.c(k);
            y = self.bin(BinaryOp::Mul, y, k)?;
        }
        if c != 0.0 {
            let c = self.c(c);
            y = self.bin(BinaryOp::Add, y, c)?;
        }
        Ok(y)
    }
    /// Horner's rule over `coefficients` (highest power first).
    fn polynomial(&mut self, w: ValueId, coefficients: &[f64]) -> Result<ValueId, Diagnostic> {
        let mut p = self.c(coefficients[0]);
        for &c in &coefficients[1..] {
            let pw = self.bin(BinaryOp::Mul, p, w)?;
            let c = self.c(c);
            p = self.bin(BinaryOp::Add, pw, c)?;
        }
        Ok(p)
    }
}

/// Whether a random draw of a call with `args` is on in the graph being built: always in
/// training, and in `eval` and `infer` with `at_inference = true` (see the module docs).
pub(super) fn draws(e: &Elaborator, args: &BoundArgs) -> Result<bool, Diagnostic> {
    Ok(args.bool("at_inference", false)? || e.training)
}

/// The Philox seed of a random call: its `seed` argument, or else the hash of its name
/// (`path`, or a fresh `kindN`), taken in every mode.
pub(super) fn seed(
    e: &mut Elaborator,
    args: &BoundArgs,
    kind: &str,
    path: Option<String>,
) -> Result<u64, Diagnostic> {
    let path = path.unwrap_or_else(|| e.fresh_path(kind));
    match args.get("seed") {
        None => Ok(crate::ir::init::path_hash(&path)),
        Some(s) => match s.value {
            Value::Number {
                value,
                integer: true,
            } if (0.0..=u32::MAX as f64).contains(&value) => Ok(value as u64),
            _ => Err(Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("the `seed` of `{kind}` is an integer from 0 to 4294967295"),
                s.span,
            )
            .with_label("not a valid seed")),
        },
    }
}

/// Philox uniforms in `[0, 1)` of `shape` for `seed`, fresh at every step.
pub(super) fn uniforms(
    e: &mut Elaborator,
    seed: u64,
    shape: Shape,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let step = e.step_input(span);
    e.op(Op::RandomUniform { seed, shape }, &[step], span)
}

/// A source's shape and seed (checked in every mode), and its uniforms when it draws;
/// `None` when it is off.
fn source_draw(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    kind: &str,
    path: Option<String>,
) -> Result<(Shape, Option<ValueId>), Diagnostic> {
    let shape_arg = args.get("shape").cloned().expect("required argument");
    let shape = Shape(shape_list(&shape_arg, kind)?);
    let seed = seed(e, args, kind, path)?;
    match draws(e, args)? {
        true => Ok((shape.clone(), Some(uniforms(e, seed, shape, span)?))),
        false => Ok((shape, None)),
    }
}

/// A source that is off: its mean, stretched to its shape.
fn constant_of_shape(
    e: &mut Elaborator,
    value: f64,
    shape: Shape,
    span: Span,
) -> Result<Value, Diagnostic> {
    let c = e.constant(value, span);
    Ok(Value::Tensor(e.op(Op::Broadcast { shape }, &[c], span)?))
}

fn number(args: &BoundArgs, name: &str, default: f64) -> Result<f64, Diagnostic> {
    match args.get(name) {
        None => Ok(default),
        Some(s) => match s.value {
            Value::Number { value, .. } if value.is_finite() => Ok(value),
            ref v => Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!(
                    "argument `{name}` of `{}` must be a number, got {}",
                    args.callee,
                    super::describe(v)
                ),
                s.span,
            )),
        },
    }
}

/// `uniform(shape, low = 0, high = 1, seed, at_inference = false)`: independent draws in
/// `[low, high)`; off (see the module docs), `(low + high) / 2`.
pub(super) fn uniform(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (low, high) = (number(args, "low", 0.0)?, number(args, "high", 1.0)?);
    if low >= high {
        return Err(Diagnostic::error(
            ErrorCode::BadHyperParam,
            format!("`uniform` needs low < high, got {low} and {high}"),
            span,
        ));
    }
    let (shape, u) = source_draw(e, args, span, "uniform", path)?;
    let Some(u) = u else {
        return constant_of_shape(e, (low + high) / 2.0, shape, span);
    };
    let mut b = Builder { e, span };
    Ok(Value::Tensor(b.affine(u, high - low, low)?))
}

/// `normal(shape, mean = 0, std = 1, seed, at_inference = false)`: independent normal
/// draws (see the module docs for how); off, `mean`.
pub(super) fn normal(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (mean, std) = (number(args, "mean", 0.0)?, number(args, "std", 1.0)?);
    if std <= 0.0 {
        return Err(Diagnostic::error(
            ErrorCode::BadHyperParam,
            format!("`normal` needs std > 0, got {std}"),
            span,
        ));
    }
    let (shape, u) = source_draw(e, args, span, "normal", path)?;
    let Some(u) = u else {
        return constant_of_shape(e, mean, shape, span);
    };
    Ok(Value::Tensor(normal_from(e, u, mean, std, span)?))
}

/// Normal draws N(mean, std²) from Philox uniforms `u` in `[0, 1)` (see the module docs).
pub(super) fn normal_from(
    e: &mut Elaborator,
    u: ValueId,
    mean: f64,
    std: f64,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let mut b = Builder { e, span };
    // a = u + 2^-25 and b = (1 - u) - 2^-25: the halves of 2u' - 1 = a - b, never zero,
    // so w = -ln(4ab) = -ln(1 - x^2) stays finite. Each is exact in f32 where it is small
    // (1 - u is exact, and so is subtracting 2^-25 from it below 1/2), so the tails come
    // out the same in f32 and f64; `1 - 2^-25` as one constant would round to 1 in f32.
    let a = b.affine(u, 1.0, HALF_BIN)?;
    let one = b.c(1.0);
    let complement = b.bin(BinaryOp::Sub, one, u)?;
    let one_minus = b.affine(complement, 1.0, -HALF_BIN)?;
    let x = b.bin(BinaryOp::Sub, a, one_minus)?;
    let ab = b.bin(BinaryOp::Mul, a, one_minus)?;
    let four_ab = b.affine(ab, 4.0, 0.0)?;
    let log = b.un(UnaryOp::Log, four_ab)?;
    let w = b.un(UnaryOp::Neg, log)?;
    // Near u = 1/2, 4ab rounds to just above 1 and w to just below 0: the tail's square
    // root would be NaN, and NaN times a zero mask is still NaN.
    let zero = b.c(0.0);
    let w = b.bin(BinaryOp::Max, w, zero)?;
    let w_central = b.affine(w, 1.0, -2.5)?;
    let central = b.polynomial(w_central, &CENTRAL)?;
    let root = b.un(UnaryOp::Sqrt, w)?;
    let w_tail = b.affine(root, 1.0, -3.0)?;
    let tail = b.polynomial(w_tail, &TAIL)?;
    // Both branches are finite everywhere, so 0/1 masks pick one.
    let five = b.c(5.0);
    let in_central = b.bin(BinaryOp::Lt, w, five)?;
    let in_tail = b.bin(BinaryOp::Ge, w, five)?;
    let central = b.bin(BinaryOp::Mul, central, in_central)?;
    let tail = b.bin(BinaryOp::Mul, tail, in_tail)?;
    let p = b.bin(BinaryOp::Add, central, tail)?;
    let erfinv = b.bin(BinaryOp::Mul, p, x)?;
    b.affine(erfinv, std * std::f64::consts::SQRT_2, mean)
}
