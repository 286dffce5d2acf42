//! The scalar-op vocabulary: the element-wise functions of one operand ([`UnaryOp`]) and
//! of two ([`BinaryOp`]), and the folds of a reduction ([`ReduceOp`]).
//!
//! This module is their one home. The graph IR (`Op::Unary`, `Op::Binary`, `Op::Reduce`
//! in the compiler) and the kernel IR ([`crate::ir::Expr`], [`crate::ir::KernelBody`]) use
//! these enums as they are, so lowering carries an op across without translating it; both
//! IR texts spell an op with its [`name`](UnaryOp::name), from the one table each enum is
//! declared with; and both `f64` reference evaluators (the compiler's graph interpreter
//! and [`crate::eval`]) compute an op with its `apply` method, so they cannot disagree.
//!
//! # Semantics in `f64`
//! `apply` is the exact answer the backends' `f32` code approximates (see
//! [`crate::cpu`] and [`crate::gpu`] for their accuracy). Operations are IEEE 754 double
//! precision, rounding to nearest; "NaN" means any NaN (payloads are not specified).
//!
//! | op | value | special cases |
//! |---|---|---|
//! | `neg` | `-x` | flips the sign of zeros and NaN too |
//! | `abs` | `\|x\|` | |
//! | `exp` | `e^x` | `inf` above about 709.78, `0` (through subnormals) below about -745.1 |
//! | `log` | `ln x` | `log(±0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf` |
//! | `sqrt` | `√x` | `sqrt(-0) = -0`, `sqrt(x < 0) = NaN` |
//! | `recip` | `1 / x` | `recip(±0) = ±inf` |
//! | `tanh` | `tanh x` | `tanh(±inf) = ±1`, `tanh(-0) = -0` |
//! | `erf` | `2/√π ∫₀ˣ e^(-t²) dt` | `erf(±inf) = ±1`, `erf(-0) = -0` |
//! | `sigmoid` | `1 / (1 + e^-x)` | see below; `sigmoid(-inf) = 0`, `sigmoid(inf) = 1` |
//! | `relu` | `max(x, 0)` | as `max`: `relu(-0) = +0`, `relu(NaN) = NaN` |
//! | `add`, `sub`, `mul`, `div` | IEEE 754 | `x / ±0 = ±inf` (NaN for `0 / 0`) |
//! | `max`, `min` | IEEE 754-2019 `maximum`, `minimum` | NaN if either operand is NaN; `-0 < +0`, so both are commutative |
//! | `pow` | `a^b`, C's `pow` | `pow(a, ±0) = 1` and `pow(1, b) = 1` even for NaN; `a < 0` with a non-integer `b` is NaN |
//! | `lt`, `le`, `gt`, `ge`, `eq` | `1.0` if `a < b` (...) holds, else `0.0` | every comparison with NaN is false: `eq(NaN, NaN) = 0` |
//!
//! `sigmoid` is computed as `1 / (1 + e)` for `x >= 0` and `e / (1 + e)` for `x < 0`, with
//! `e = exp(-|x|)` (the form the CPU and GPU backends use too). `exp(-|x|)` never
//! overflows, so very negative `x` keep their tiny results (`sigmoid(-740) ≈ 4e-322`)
//! where the textbook `1 / (1 + exp(-x))` gives `0` below about -709.78; and below about
//! -36.7, where `1 + e` rounds to 1, the result is exactly `exp(x)`, where the textbook
//! form rounds once more taking the reciprocal of `1 + exp(-x)`.
//!
//! A reduction starts from [`ReduceOp::identity`] and folds each value in with
//! [`ReduceOp::combine`], which is [`ReduceOp::binary`]'s `apply`: `sum` is `add` from
//! `+0`, `max` is `max` from `-inf` and `min` is `min` from `+inf` (so NaN propagates and
//! an empty `max` is `-inf`). The order of the fold is the evaluator's to fix.

use serde::{Deserialize, Serialize};

/// Declares an op enum together with its text names: the enum, `ALL`, `name` and
/// `from_name` all come from one list, so no op can lack a name or be missing from `ALL`,
/// and the graph IR's parser reads back exactly what both IR printers write.
macro_rules! op_vocabulary {
    (
        $(#[$doc:meta])*
        pub enum $ty:ident {
            $( $(#[$variant_doc:meta])* $variant:ident => $name:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $ty {
            $( $(#[$variant_doc])* $variant, )+
        }

        impl $ty {
            /// Every op, in declaration order.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The op's name in the graph IR and kernel IR texts.
            pub fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $name, )+
                }
            }

            /// The op called `name` in the IR texts, if any.
            pub fn from_name(name: &str) -> Option<$ty> {
                $ty::ALL.into_iter().find(|op| op.name() == name)
            }
        }
    };
}

op_vocabulary! {
    /// An element-wise function of one operand (see the module docs for its value).
    pub enum UnaryOp {
        Neg => "neg",
        Abs => "abs",
        Exp => "exp",
        Log => "log",
        Sqrt => "sqrt",
        /// `1 / x`
        Recip => "recip",
        Tanh => "tanh",
        /// The error function `2/√π ∫₀ˣ e^(-t²) dt`.
        Erf => "erf",
        /// `1 / (1 + exp(-x))`, computed without overflow.
        Sigmoid => "sigmoid",
        /// `max(x, 0)`
        Relu => "relu",
    }
}

op_vocabulary! {
    /// An element-wise function of two operands (see the module docs for its value).
    /// Comparisons give `1.0` (true) or `0.0` (false).
    pub enum BinaryOp {
        Add => "add",
        Sub => "sub",
        Mul => "mul",
        Div => "div",
        Max => "max",
        Min => "min",
        /// `a ** b`
        Pow => "pow",
        Lt => "lt",
        Le => "le",
        Gt => "gt",
        Ge => "ge",
        Eq => "eq",
    }
}

op_vocabulary! {
    /// How a reduction folds its values (see the module docs).
    pub enum ReduceOp {
        Sum => "sum",
        Max => "max",
        Min => "min",
    }
}

impl UnaryOp {
    /// The op's value at `x`.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Erf => libm::erf(x),
            UnaryOp::Sigmoid if x >= 0.0 => 1.0 / (1.0 + (-x).exp()),
            // Also NaN, which `exp` passes through.
            UnaryOp::Sigmoid => {
                let e = x.exp();
                e / (1.0 + e)
            }
            UnaryOp::Relu => maximum(x, 0.0),
        }
    }
}

impl BinaryOp {
    /// The op's value at `(a, b)`.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        let truth = |holds: bool| if holds { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => maximum(a, b),
            BinaryOp::Min => minimum(a, b),
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Lt => truth(a < b),
            BinaryOp::Le => truth(a <= b),
            BinaryOp::Gt => truth(a > b),
            BinaryOp::Ge => truth(a >= b),
            BinaryOp::Eq => truth(a == b),
        }
    }

    /// Whether `apply(a, b)` is `apply(b, a)` for every `a`, `b` (so common-subexpression
    /// elimination may compare the operands as a set).
    pub fn is_commutative(self) -> bool {
        matches!(
            self,
            BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min | BinaryOp::Eq
        )
    }

    /// Whether the op compares its operands (its value is `1.0` or `0.0`, so it is
    /// piecewise constant and has no gradient).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq
        )
    }
}

impl ReduceOp {
    /// The fold's starting value (the result of reducing nothing).
    pub fn identity(self) -> f64 {
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        }
    }

    /// The binary op that folds one more value into the accumulator.
    pub fn binary(self) -> BinaryOp {
        match self {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        }
    }

    /// One step of the fold: `value` folded into `acc`.
    pub fn combine(self, acc: f64, value: f64) -> f64 {
        self.binary().apply(acc, value)
    }
}

/// IEEE 754-2019 `maximum` (Cranelift's `fmax`): NaN if either operand is NaN, and
/// `-0 < +0`. (`f64::max` returns the other operand for a NaN and leaves the zeros'
/// order unspecified.)
fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // Equal: the same value, or zeros of opposite signs where +0 is the larger.
        if a.is_sign_positive() { a } else { b }
    } else {
        a.max(b)
    }
}

/// IEEE 754-2019 `minimum` (Cranelift's `fmin`): NaN if either operand is NaN, and
/// `-0 < +0`.
fn minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    const AWKWARD: [f64; 9] = [
        f64::NEG_INFINITY,
        -2.5,
        -1.0,
        -0.0,
        0.0,
        1.0,
        2.5,
        f64::INFINITY,
        f64::NAN,
    ];

    #[test]
    fn every_name_reads_back_as_its_op() {
        for op in UnaryOp::ALL {
            assert_eq!(UnaryOp::from_name(op.name()), Some(op));
        }
        for op in BinaryOp::ALL {
            assert_eq!(BinaryOp::from_name(op.name()), Some(op));
        }
        for op in ReduceOp::ALL {
            assert_eq!(ReduceOp::from_name(op.name()), Some(op));
        }
        assert_eq!(UnaryOp::from_name("gelu"), None);
    }

    #[test]
    fn sigmoid_keeps_the_tiny_values_of_very_negative_inputs() {
        let s = UnaryOp::Sigmoid;
        assert_eq!(s.apply(0.0), 0.5);
        assert_eq!(s.apply(f64::INFINITY), 1.0);
        assert_eq!(s.apply(f64::NEG_INFINITY), 0.0);
        assert!(s.apply(f64::NAN).is_nan());
        // exp(740) overflows, so 1 / (1 + exp(740)) would be 0.
        assert_eq!(s.apply(-740.0), (-740f64).exp());
        assert!(s.apply(-740.0) > 0.0);
        assert_eq!(s.apply(-745.0), f64::from_bits(1), "the smallest subnormal");
    }

    #[test]
    fn sigmoid_is_symmetric_about_one_half() {
        for i in -400..=400 {
            let x = f64::from(i) * 0.1;
            let s = UnaryOp::Sigmoid;
            assert!((s.apply(x) + s.apply(-x) - 1.0).abs() < 1e-15, "{x}");
        }
    }

    #[test]
    fn relu_of_negative_zero_is_positive_zero_and_nan_propagates() {
        assert!(same(UnaryOp::Relu.apply(-0.0), 0.0));
        assert!(UnaryOp::Relu.apply(f64::NAN).is_nan());
        assert_eq!(UnaryOp::Relu.apply(-3.0), 0.0);
        assert_eq!(UnaryOp::Relu.apply(3.0), 3.0);
    }

    #[test]
    fn max_and_min_propagate_nan_and_order_signed_zeros() {
        assert!(BinaryOp::Max.apply(f64::NAN, 1.0).is_nan());
        assert!(BinaryOp::Min.apply(1.0, f64::NAN).is_nan());
        assert!(same(BinaryOp::Max.apply(-0.0, 0.0), 0.0));
        assert!(same(BinaryOp::Max.apply(0.0, -0.0), 0.0));
        assert!(same(BinaryOp::Min.apply(-0.0, 0.0), -0.0));
        assert!(same(BinaryOp::Min.apply(0.0, -0.0), -0.0));
    }

    #[test]
    fn commutative_ops_give_the_same_bits_either_way() {
        for op in BinaryOp::ALL.into_iter().filter(|op| op.is_commutative()) {
            for a in AWKWARD {
                for b in AWKWARD {
                    assert!(same(op.apply(a, b), op.apply(b, a)), "{}", op.name());
                }
            }
        }
    }

    #[test]
    fn comparisons_give_one_or_zero_and_are_false_for_nan() {
        for op in BinaryOp::ALL.into_iter().filter(|op| op.is_comparison()) {
            for a in AWKWARD {
                for b in AWKWARD {
                    let v = op.apply(a, b);
                    assert!(v == 0.0 || v == 1.0, "{}({a}, {b}) = {v}", op.name());
                    if a.is_nan() || b.is_nan() {
                        assert_eq!(v, 0.0, "{}({a}, {b})", op.name());
                    }
                }
            }
        }
    }

    #[test]
    fn folding_from_the_identity_leaves_a_value_unchanged() {
        for op in ReduceOp::ALL {
            for v in AWKWARD {
                // The one exception: +0 + -0 is +0 (IEEE 754 sums of opposite zeros).
                if op == ReduceOp::Sum && same(v, -0.0) {
                    continue;
                }
                assert!(same(op.combine(op.identity(), v), v), "{}({v})", op.name());
            }
        }
    }
}
