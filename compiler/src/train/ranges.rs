//! The valid range of every numeric train setting, and the check that refuses a value
//! outside it (NaN and infinities included) where it was written: at the setting's span
//! in the model file, or naming the `--set` option that gave it.

use crate::source::{Diagnostic, ErrorCode, Span};

/// The largest integer an `f64` setting holds exactly (2^53): counts and seeds above it
/// would silently become another number.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// Where a setting's value came from, for the error.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    /// Written in the model file, here.
    File(Span),
    /// Given on the command line as `--set key=…`; the span is the train section's, the
    /// nearest place in the file.
    Override(Span),
}

/// A set of valid values: an interval, of integers or of reals.
#[derive(Clone, Copy, Debug)]
pub struct ValidRange {
    low: f64,
    low_included: bool,
    high: f64,
    high_included: bool,
    integer: bool,
}

impl ValidRange {
    /// A real number > 0 (learning rates, eps, clip norms).
    pub const POSITIVE: ValidRange = ValidRange::reals(0.0, false, f64::MAX, true);
    /// A real number >= 0 (weight decay, `min_delta`).
    pub const NON_NEGATIVE: ValidRange = ValidRange::reals(0.0, true, f64::MAX, true);
    /// A decay factor in [0, 1) (momentum, Adam's betas, RMSProp's alpha).
    pub const DECAY: ValidRange = ValidRange::reals(0.0, true, 1.0, false);
    /// A count from 1 (epochs, patience, `every`).
    pub const COUNT: ValidRange = ValidRange::integers(1.0, MAX_EXACT_INTEGER);
    /// A batch size: from 1 to 2^31 rows.
    pub const BATCH: ValidRange = ValidRange::integers(1.0, 2_147_483_648.0);
    /// An integer from 0 (seeds, warm-up steps, `checkpoint_every`).
    pub const NON_NEGATIVE_INTEGER: ValidRange = ValidRange::integers(0.0, MAX_EXACT_INTEGER);

    const fn reals(low: f64, low_included: bool, high: f64, high_included: bool) -> ValidRange {
        ValidRange {
            low,
            low_included,
            high,
            high_included,
            integer: false,
        }
    }

    const fn integers(low: f64, high: f64) -> ValidRange {
        ValidRange {
            low,
            low_included: true,
            high,
            high_included: true,
            integer: true,
        }
    }

    /// Whether `v` is in the range (never for NaN or an infinity).
    pub fn contains(&self, v: f64) -> bool {
        let above = if self.low_included {
            v >= self.low
        } else {
            v > self.low
        };
        let below = if self.high_included {
            v <= self.high
        } else {
            v < self.high
        };
        v.is_finite() && above && below && (!self.integer || v.fract() == 0.0)
    }

    /// The range in words: "a number > 0", "an integer from 1 to 9007199254740992".
    pub fn describe(&self) -> String {
        if self.integer {
            return format!("an integer from {} to {}", self.low, self.high);
        }
        let low = if self.low_included { ">=" } else { ">" };
        match self.high == f64::MAX {
            true => format!("a finite number {low} {}", self.low),
            false => {
                let open = if self.low_included { '[' } else { '(' };
                let close = if self.high_included { ']' } else { ')' };
                format!("a number in {open}{}, {}{close}", self.low, self.high)
            }
        }
    }

    /// `v` if it is in the range, else an error naming `key`, the range and `v`.
    pub fn check(&self, key: &str, v: f64, origin: Origin) -> Result<f64, Diagnostic> {
        if self.contains(v) {
            return Ok(v);
        }
        let range = self.describe();
        Err(match origin {
            Origin::File(span) => Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("`{key}` must be {range}, got {v:?}"),
                span,
            )
            .with_label(format!("`{key}` out of range")),
            Origin::Override(span) => Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("--set {key}={v:?}: `{key}` must be {range}"),
                span,
            )
            .with_label("in this train section"),
        })
    }

    /// [`ValidRange::check`] for an integer setting, as a `u64`.
    pub fn check_integer(&self, key: &str, v: f64, origin: Origin) -> Result<u64, Diagnostic> {
        debug_assert!(self.integer);
        self.check(key, v, origin).map(|v| v as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_refuses_zero_negative_nan_and_infinity() {
        for bad in [0.0, -1e-3, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!ValidRange::POSITIVE.contains(bad), "{bad}");
        }
        assert!(ValidRange::POSITIVE.contains(1e-30));
    }

    #[test]
    fn decay_is_half_open() {
        assert!(ValidRange::DECAY.contains(0.0));
        assert!(ValidRange::DECAY.contains(0.999));
        assert!(!ValidRange::DECAY.contains(1.0));
        assert_eq!(ValidRange::DECAY.describe(), "a number in [0, 1)");
    }

    #[test]
    fn counts_are_whole_and_exactly_representable() {
        assert!(ValidRange::COUNT.contains(1.0));
        assert!(!ValidRange::COUNT.contains(0.0));
        assert!(!ValidRange::COUNT.contains(2.5));
        assert!(!ValidRange::COUNT.contains(1e30));
        assert!(!ValidRange::NON_NEGATIVE_INTEGER.contains(-1.0));
    }

    #[test]
    fn an_override_error_names_the_option() {
        let e = ValidRange::POSITIVE
            .check("lr", f64::NAN, Origin::Override(Span::new(0, 1)))
            .expect_err("NaN is no learning rate");
        assert!(e.message.starts_with("--set lr=NaN"), "{}", e.message);
        assert!(e.message.contains("> 0"), "{}", e.message);
    }
}
