//! The search space of a sweep: one dimension per hyper-parameter, written on the
//! command line as `--space NAME=SPEC`.
//!
//! ```text
//! lr=log(1e-4, 1e-1)        log-uniform between the bounds (learning rates, weight decay)
//! dropout=uniform(0, 0.5)   uniform between the bounds
//! layers=int(1, 4)          a uniform integer, both bounds included
//! hidden=[64, 128, 256]     one of the listed values (numbers or words)
//! ```
//!
//! A value reaches a trial as `--set NAME=VALUE`, so a dimension can be any setting
//! `--set` takes: the model's hyper-parameters and the train settings (`lr`, `batch`, …).

use std::fmt;

use strata_kernels::rng::{Philox, uniform_f64};

/// Whether a sweep's metric (`val.accuracy`, `val.loss`, `train.loss`) is better larger
/// (accuracy, F1, AUC, precision, recall) or smaller (losses, MAE, MSE).
pub fn metric_direction(name: &str) -> Result<bool, String> {
    let (split, metric) = name
        .split_once('.')
        .filter(|(s, m)| (*s == "val" || *s == "train") && !m.is_empty())
        .ok_or_else(|| {
            format!("the metric `{name}` is val.METRIC or train.loss (e.g. val.accuracy)")
        })?;
    if split == "train" && metric != "loss" {
        return Err(format!(
            "the metric `{name}`: only the loss is logged for the train split"
        ));
    }
    Ok(!matches!(metric, "loss" | "mae" | "mse" | "rmse"))
}

/// One hyper-parameter's range.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    Uniform { lo: f64, hi: f64 },
    LogUniform { lo: f64, hi: f64 },
    Int { lo: i64, hi: i64 },
    Choice(Vec<String>),
}

/// A named dimension of the space.
#[derive(Clone, Debug, PartialEq)]
pub struct Dimension {
    pub name: String,
    pub range: Range,
}

/// The dimensions in the order they were given (the order of the table's columns).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Space {
    pub dims: Vec<Dimension>,
}

/// One point of the space: a value per dimension, as `--set` writes it.
pub type Config = Vec<(String, String)>;

impl Space {
    /// Parses `--space` arguments; a name given twice is an error.
    pub fn parse(specs: &[String]) -> Result<Space, String> {
        let mut dims: Vec<Dimension> = Vec::new();
        for spec in specs {
            let dim = Dimension::parse(spec)?;
            if dims.iter().any(|d| d.name == dim.name) {
                return Err(format!("--space {spec}: `{}` is given twice", dim.name));
            }
            dims.push(dim);
        }
        Ok(Space { dims })
    }

    /// A point drawn uniformly from every dimension (log-uniform for `log`).
    pub fn sample(&self, rng: &mut Philox) -> Config {
        self.dims
            .iter()
            .map(|d| (d.name.clone(), d.range.sample(rng)))
            .collect()
    }

    /// Every combination of `points` values per continuous dimension (log-spaced for
    /// `log`) and every listed or integer value, the last dimension varying fastest.
    pub fn grid(&self, points: usize) -> Vec<Config> {
        let axes: Vec<Vec<String>> = self.dims.iter().map(|d| d.range.grid(points)).collect();
        let total: usize = axes.iter().map(Vec::len).product();
        (0..total)
            .map(|mut i| {
                let mut config = vec![(String::new(), String::new()); axes.len()];
                for (k, axis) in axes.iter().enumerate().rev() {
                    config[k] = (self.dims[k].name.clone(), axis[i % axis.len()].clone());
                    i /= axis.len();
                }
                config
            })
            .collect()
    }

    /// How many points [`Space::grid`] has (saturating).
    pub fn grid_size(&self, points: usize) -> usize {
        self.dims
            .iter()
            .map(|d| d.range.grid_len(points))
            .fold(1usize, |a, b| a.saturating_mul(b))
    }
}

impl Dimension {
    fn parse(spec: &str) -> Result<Dimension, String> {
        let bad = |why: &str| {
            format!(
                "--space {spec}: {why}; write NAME=log(LO,HI), NAME=uniform(LO,HI), \
                 NAME=int(LO,HI) or NAME=[A,B,...]"
            )
        };
        let (name, range) = spec.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(bad("the name must be a hyper-parameter or setting name"));
        }
        Dimension::parse_range(name, range).map_err(|why| format!("--space {spec}: {why}"))
    }

    /// The dimension `name` over `range` as written (`log(1e-4, 1e-1)`, `[64, 128]`, …).
    pub fn parse_range(name: &str, range: &str) -> Result<Dimension, String> {
        let bad = |why: &str| {
            format!("{why}; a range is log(LO,HI), uniform(LO,HI), int(LO,HI) or [A,B,...]")
        };
        let range = range.trim();
        let range = if let Some(list) = range.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let items: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err(bad("the list is empty"));
            }
            if let Some(v) = items.iter().find(|v| v.contains(char::is_whitespace)) {
                return Err(bad(&format!("`{v}` is not one value")));
            }
            Range::Choice(items)
        } else {
            let (kind, args) = range
                .strip_suffix(')')
                .and_then(|r| r.split_once('('))
                .ok_or_else(|| bad("unknown range"))?;
            let args: Vec<&str> = args.split(',').map(str::trim).collect();
            let [lo, hi] = args[..] else {
                return Err(bad("a range takes two bounds"));
            };
            let number = |s: &str| -> Result<f64, String> {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(&format!("`{s}` is not a finite number")))
            };
            match kind.trim() {
                "uniform" | "log" => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo >= hi {
                        return Err(bad("the lower bound must be below the upper"));
                    }
                    if kind.trim() == "log" {
                        if lo <= 0.0 {
                            return Err(bad("a log range needs bounds above 0"));
                        }
                        Range::LogUniform { lo, hi }
                    } else {
                        Range::Uniform { lo, hi }
                    }
                }
                "int" => {
                    let int = |s: &str| {
                        s.parse::<i64>()
                            .map_err(|_| bad(&format!("`{s}` is not an integer")))
                    };
                    let (lo, hi) = (int(lo)?, int(hi)?);
                    if lo > hi {
                        return Err(bad("the lower bound must not be above the upper"));
                    }
                    Range::Int { lo, hi }
                }
                other => return Err(bad(&format!("`{other}` is not a range"))),
            }
        };
        Ok(Dimension {
            name: name.to_string(),
            range,
        })
    }
}

impl Range {
    fn sample(&self, rng: &mut Philox) -> String {
        let u = uniform_f64(rng.next_u32(), rng.next_u32());
        match self {
            Range::Uniform { lo, hi } => number(lo + u * (hi - lo)),
            Range::LogUniform { lo, hi } => number((lo.ln() + u * (hi.ln() - lo.ln())).exp()),
            Range::Int { lo, hi } => {
                let n = (hi - lo) as f64 + 1.0;
                (lo + ((u * n).floor() as i64).min(hi - lo)).to_string()
            }
            Range::Choice(items) => {
                items[((u * items.len() as f64) as usize).min(items.len() - 1)].clone()
            }
        }
    }

    fn grid_len(&self, points: usize) -> usize {
        match self {
            Range::Uniform { .. } | Range::LogUniform { .. } => points,
            Range::Int { lo, hi } => usize::try_from(hi - lo + 1).unwrap_or(usize::MAX),
            Range::Choice(items) => items.len(),
        }
    }

    fn grid(&self, points: usize) -> Vec<String> {
        let at = |i: usize| {
            if points <= 1 {
                0.5
            } else {
                i as f64 / (points - 1) as f64
            }
        };
        match self {
            Range::Uniform { lo, hi } => (0..points)
                .map(|i| number(lo + at(i) * (hi - lo)))
                .collect(),
            Range::LogUniform { lo, hi } => (0..points)
                .map(|i| number((lo.ln() + at(i) * (hi.ln() - lo.ln())).exp()))
                .collect(),
            Range::Int { lo, hi } => (*lo..=*hi).map(|v| v.to_string()).collect(),
            Range::Choice(items) => items.clone(),
        }
    }

    /// Whether the table and the plot should show this dimension on a log axis.
    pub fn is_log(&self) -> bool {
        matches!(self, Range::LogUniform { .. })
    }
}

/// A drawn number as `--set` gets it: 4 significant digits, enough to tell trials apart
/// and short enough to read in the table.
fn number(v: f64) -> String {
    let s = format!("{v:.3e}");
    // `1.000e-3` reads better as `1e-3`; plain forms for values near 1.
    let parsed: f64 = s.parse().unwrap_or(v);
    if (1e-3..1e4).contains(&parsed.abs()) {
        let plain = format!("{parsed:.6}");
        let plain = plain.trim_end_matches('0').trim_end_matches('.');
        plain.to_string()
    } else {
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}e{exponent}")
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Range::Uniform { lo, hi } => write!(f, "uniform({lo}, {hi})"),
            Range::LogUniform { lo, hi } => write!(f, "log({lo}, {hi})"),
            Range::Int { lo, hi } => write!(f, "int({lo}, {hi})"),
            Range::Choice(items) => write!(f, "[{}]", items.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(specs: &[&str]) -> Result<Space, String> {
        Space::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_kind_of_range() {
        let s = space(&[
            "lr=log(1e-4, 1e-1)",
            "d=uniform(0,0.5)",
            "n=int(1,3)",
            "h=[64, 128]",
        ])
        .unwrap();
        assert_eq!(s.dims[0].range, Range::LogUniform { lo: 1e-4, hi: 1e-1 });
        assert_eq!(s.dims[1].range, Range::Uniform { lo: 0.0, hi: 0.5 });
        assert_eq!(s.dims[2].range, Range::Int { lo: 1, hi: 3 });
        assert_eq!(
            s.dims[3].range,
            Range::Choice(vec!["64".into(), "128".into()])
        );
    }

    #[test]
    fn refuses_bad_ranges_saying_what_is_wrong() {
        for (spec, why) in [
            ("lr", "no `=`"),
            ("lr=log(0, 1)", "above 0"),
            ("lr=uniform(1, 1)", "below the upper"),
            ("lr=uniform(1)", "two bounds"),
            ("lr=uniform(a, 2)", "not a finite number"),
            ("lr=normal(0, 1)", "`normal` is not a range"),
            ("n=int(1.5, 3)", "not an integer"),
            ("h=[]", "empty"),
            ("=[1]", "name"),
        ] {
            let e = space(&[spec]).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
        }
        assert!(space(&["a=[1]", "a=[2]"]).unwrap_err().contains("twice"));
    }

    #[test]
    fn samples_stay_in_range_and_are_reproducible() {
        let s = space(&["lr=log(1e-4, 1e-1)", "n=int(1,3)", "h=[a,b]"]).unwrap();
        let draw = |seed| {
            let mut rng = Philox::from_seed(seed);
            (0..200).map(|_| s.sample(&mut rng)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let mut ints = std::collections::BTreeSet::new();
        for c in &a {
            let lr: f64 = c[0].1.parse().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            ints.insert(c[1].1.clone());
            assert!(c[2].1 == "a" || c[2].1 == "b");
        }
        assert_eq!(ints.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
        // Log-uniform: about as many draws below 1e-2.5 as above.
        let below = a
            .iter()
            .filter(|c| c[0].1.parse::<f64>().unwrap() < 10f64.powf(-2.5))
            .count();
        assert!((70..130).contains(&below), "{below}");
    }

    #[test]
    fn the_grid_enumerates_every_combination() {
        let s = space(&["lr=log(1e-3, 1e-1)", "h=[64,128]"]).unwrap();
        assert_eq!(s.grid_size(3), 6);
        let g = s.grid(3);
        let lrs: Vec<&str> = g.iter().step_by(2).map(|c| c[0].1.as_str()).collect();
        assert_eq!(lrs, ["0.001", "0.01", "0.1"]);
        assert_eq!(
            g[1],
            vec![("lr".into(), "0.001".into()), ("h".into(), "128".into())]
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.001234567), "0.001235");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(2.5e-5), "2.5e-5");
        assert_eq!(number(128.0), "128");
    }
}
