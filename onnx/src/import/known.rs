//! Values the importer knows at import time: initializers, `Constant` nodes and what is
//! computed from them, and the shapes of the graph's tensors, whose elements may hold
//! the batch size (a [`SymInt`]). Shape arithmetic (`Shape`, `Gather`, `Concat`, `Mul`,
//! …) is folded here, so a `Reshape` whose target PyTorch computed at run time from the
//! input's shape gets a fixed target with `batch` in it.
//!
//! Every operation checks its operands (ranks, lengths, overflow) and says what is wrong
//! as a `String`; the caller names the node.

use std::fmt;

/// Elements allowed in one folded tensor: folding never allocates more than this, what
/// a file claims notwithstanding.
pub const MAX_ELEMENTS: usize = 1 << 24;

/// `k · batch^p`: a fixed integer (`p = 0`) or a multiple of a power of the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymInt {
    pub k: i64,
    pub p: u32,
}

impl SymInt {
    pub const BATCH: SymInt = SymInt { k: 1, p: 1 };

    pub fn fixed(k: i64) -> SymInt {
        SymInt { k, p: 0 }
    }

    /// The integer, when it does not hold the batch.
    pub fn concrete(self) -> Option<i64> {
        (self.p == 0 || self.k == 0).then_some(self.k)
    }

    pub fn times(self, o: SymInt) -> Result<SymInt, String> {
        let k = self.k.checked_mul(o.k).ok_or("integer overflow")?;
        if k == 0 {
            return Ok(SymInt::fixed(0));
        }
        let p = self.p.checked_add(o.p).ok_or("integer overflow")?;
        Ok(SymInt { k, p })
    }

    pub fn add(self, o: SymInt, sign: i64) -> Result<SymInt, String> {
        let ok = o.k.checked_mul(sign).ok_or("integer overflow")?;
        if o.k == 0 {
            return Ok(self);
        }
        if self.k == 0 {
            return Ok(SymInt { k: ok, p: o.p });
        }
        if self.p != o.p {
            return Err("a sum of the batch size and a number".into());
        }
        let k = self.k.checked_add(ok).ok_or("integer overflow")?;
        Ok(if k == 0 {
            SymInt::fixed(0)
        } else {
            SymInt { k, p: self.p }
        })
    }

    /// ONNX's integer division (truncating), exact where the batch is involved.
    pub fn divided_by(self, o: SymInt) -> Result<SymInt, String> {
        if o.k == 0 {
            return Err("division by zero".into());
        }
        if self.k == 0 {
            return Ok(SymInt::fixed(0));
        }
        if o.p > self.p {
            return Err("a division of a number by the batch size".into());
        }
        let k = self.k.checked_div(o.k).ok_or("integer overflow")?;
        if self.p > 0 && self.k.checked_rem(o.k) != Some(0) {
            return Err("a division of the batch size that is not exact".into());
        }
        let p = self.p - o.p;
        Ok(if k == 0 {
            SymInt::fixed(0)
        } else {
            SymInt { k, p }
        })
    }
}

impl fmt::Display for SymInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.k, self.p) {
            (k, 0) => write!(f, "{k}"),
            (1, 1) => write!(f, "batch"),
            (k, 1) => write!(f, "{k}·batch"),
            (k, p) => write!(f, "{k}·batch^{p}"),
        }
    }
}

/// The elements of a known tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Elems {
    F32(Vec<f32>),
    /// Every integer type and `bool`.
    Int(Vec<SymInt>),
}

impl Elems {
    pub fn len(&self) -> usize {
        match self {
            Elems::F32(v) => v.len(),
            Elems::Int(v) => v.len(),
        }
    }
}

/// A tensor known at import time.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    pub dims: Vec<usize>,
    pub elems: Elems,
    /// The initializer it is (or was transposed, cast or reshaped from): the name a
    /// layer's weight takes its instance name from.
    pub origin: Option<String>,
}

pub fn numel(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("a tensor of shape {dims:?} is larger than {MAX_ELEMENTS} elements"))
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// `axis` (negative counts from the end) as an index below `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is outside a rank-{rank} tensor"))
    }
}

impl Known {
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Known {
        Known {
            dims,
            elems: Elems::F32(v),
            origin: None,
        }
    }

    pub fn ints(dims: Vec<usize>, v: Vec<SymInt>) -> Known {
        Known {
            dims,
            elems: Elems::Int(v),
            origin: None,
        }
    }

    pub fn scalar_f32(&self) -> Option<f32> {
        match &self.elems {
            Elems::F32(v) if v.len() == 1 => Some(v[0]),
            Elems::Int(v) if v.len() == 1 => v[0].concrete().map(|x| x as f32),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Result<Vec<f32>, String> {
        match &self.elems {
            Elems::F32(v) => Ok(v.clone()),
            Elems::Int(v) => v
                .iter()
                .map(|s| s.concrete().map(|x| x as f32).ok_or("holds the batch size"))
                .collect::<Result<_, _>>()
                .map_err(String::from),
        }
    }

    pub fn as_ints(&self) -> Result<&[SymInt], String> {
        match &self.elems {
            Elems::Int(v) => Ok(v),
            Elems::F32(_) => Err("a float tensor where integers are expected".into()),
        }
    }

    /// Concrete integers (axes, pads, indices).
    pub fn as_i64s(&self) -> Result<Vec<i64>, String> {
        self.as_ints()?
            .iter()
            .map(|s| {
                s.concrete()
                    .ok_or_else(|| "holds the batch size".to_string())
            })
            .collect()
    }

    fn map_elems(&self, dims: Vec<usize>, index: impl Fn(usize) -> usize, n: usize) -> Known {
        let elems = match &self.elems {
            Elems::F32(v) => Elems::F32((0..n).map(|i| v[index(i)]).collect()),
            Elems::Int(v) => Elems::Int((0..n).map(|i| v[index(i)]).collect()),
        };
        Known {
            dims,
            elems,
            origin: self.origin.clone(),
        }
    }

    pub fn transpose(&self, perm: &[usize]) -> Result<Known, String> {
        check_perm(perm, self.dims.len())?;
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let src = strides(&self.dims);
        let out = strides(&dims);
        let n = numel(&dims)?;
        Ok(self.map_elems(
            dims.clone(),
            |i| {
                let mut rem = i;
                let mut at = 0;
                for (a, &st) in out.iter().enumerate() {
                    let idx = rem / st;
                    rem %= st;
                    at += idx * src[perm[a]];
                }
                at
            },
            n,
        ))
    }

    pub fn reshape(&self, dims: Vec<usize>) -> Result<Known, String> {
        if numel(&dims)? != self.elems.len() {
            return Err(format!(
                "cannot reshape {} elements to {dims:?}",
                self.elems.len()
            ));
        }
        Ok(Known {
            dims,
            elems: self.elems.clone(),
            origin: self.origin.clone(),
        })
    }

    /// `Gather` along `axis` with (non-negative after wrapping) indices `idx` of shape
    /// `idx_dims`.
    pub fn gather(&self, axis: usize, idx: &[i64], idx_dims: &[usize]) -> Result<Known, String> {
        let d = *self.dims.get(axis).ok_or("axis out of range")?;
        let idx: Vec<usize> = idx
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + d as i64 } else { i };
                if (0..d as i64).contains(&j) {
                    Ok(j as usize)
                } else {
                    Err(format!("index {i} is outside an axis of {d}"))
                }
            })
            .collect::<Result<_, String>>()?;
        let inner: usize = self.dims[axis + 1..].iter().product();
        let mut dims = self.dims[..axis].to_vec();
        dims.extend_from_slice(idx_dims);
        dims.extend_from_slice(&self.dims[axis + 1..]);
        let n = numel(&dims)?;
        let m = idx.len();
        Ok(self.map_elems(
            dims,
            |i| {
                let o = i / (m * inner);
                let j = (i / inner) % m;
                let r = i % inner;
                (o * d + idx[j]) * inner + r
            },
            n,
        ))
    }

    /// `Slice` of one axis, `start..end` by `step` (already clamped).
    pub fn slice_axis(
        &self,
        axis: usize,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Known, String> {
        let idx: Vec<i64> = if step > 0 {
            (start..end).step_by(step as usize).collect()
        } else {
            let mut v = Vec::new();
            let mut i = start;
            while i > end {
                v.push(i);
                i += step;
            }
            v
        };
        let n = idx.len();
        self.gather(axis, &idx, &[n])
    }

    pub fn concat(parts: &[Known], axis: usize) -> Result<Known, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let rank = first.dims.len();
        if axis >= rank {
            return Err("concat axis out of range".into());
        }
        for p in parts {
            if p.dims.len() != rank
                || p.dims
                    .iter()
                    .zip(&first.dims)
                    .enumerate()
                    .any(|(a, (x, y))| a != axis && x != y)
            {
                return Err("concatenated tensors of different shapes".into());
            }
        }
        let mut dims = first.dims.clone();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        numel(&dims)?;
        let outer: usize = first.dims[..axis].iter().product();
        let float = matches!(first.elems, Elems::F32(_));
        let mut f = Vec::new();
        let mut ints = Vec::new();
        for o in 0..outer {
            for p in parts {
                let chunk: usize = p.dims[axis..].iter().product();
                match (&p.elems, float) {
                    (Elems::F32(v), true) => f.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                    (Elems::Int(v), false) => {
                        ints.extend_from_slice(&v[o * chunk..(o + 1) * chunk])
                    }
                    _ => return Err("concatenated tensors of different types".into()),
                }
            }
        }
        Ok(Known {
            dims,
            elems: if float {
                Elems::F32(f)
            } else {
                Elems::Int(ints)
            },
            origin: None,
        })
    }

    /// An element-wise binary op with NumPy broadcasting.
    pub fn binary(&self, o: &Known, op: BinOp) -> Result<Known, String> {
        let dims = broadcast(&self.dims, &o.dims)?;
        let n = numel(&dims)?;
        let ia = broadcast_index(&self.dims, &dims);
        let ib = broadcast_index(&o.dims, &dims);
        let elems = match (&self.elems, &o.elems) {
            (Elems::Int(a), Elems::Int(b)) => Elems::Int(
                (0..n)
                    .map(|i| op.ints(a[ia(i)], b[ib(i)]))
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                let a = self.as_f32()?;
                let b = o.as_f32()?;
                Elems::F32((0..n).map(|i| op.floats(a[ia(i)], b[ib(i)])).collect())
            }
        };
        Ok(Known {
            dims,
            elems,
            origin: None,
        })
    }

    /// A comparison or logical op with NumPy broadcasting; booleans are the integers 0
    /// and 1, as ONNX's `bool` tensors read.
    pub fn compare(&self, o: &Known, op: CmpOp) -> Result<Known, String> {
        let dims = broadcast(&self.dims, &o.dims)?;
        let n = numel(&dims)?;
        let ia = broadcast_index(&self.dims, &dims);
        let ib = broadcast_index(&o.dims, &dims);
        let (a, b) = (self.as_f64s()?, o.as_f64s()?);
        let truth = (0..n).map(|i| SymInt::fixed(i64::from(op.holds(a[ia(i)], b[ib(i)]))));
        Ok(Known::ints(dims, truth.collect()))
    }

    /// `Where`: elements of `a` where `self` is not 0, of `b` elsewhere (broadcast).
    pub fn select(&self, a: &Known, b: &Known) -> Result<Known, String> {
        let dims = broadcast(&broadcast(&self.dims, &a.dims)?, &b.dims)?;
        let n = numel(&dims)?;
        let ic = broadcast_index(&self.dims, &dims);
        let (ia, ib) = (
            broadcast_index(&a.dims, &dims),
            broadcast_index(&b.dims, &dims),
        );
        let cond = self.as_f64s()?;
        let pick = |i: usize| cond[ic(i)] != 0.0;
        let elems = match (&a.elems, &b.elems) {
            (Elems::Int(x), Elems::Int(y)) => Elems::Int(
                (0..n)
                    .map(|i| if pick(i) { x[ia(i)] } else { y[ib(i)] })
                    .collect(),
            ),
            _ => {
                let (x, y) = (a.as_f32()?, b.as_f32()?);
                Elems::F32(
                    (0..n)
                        .map(|i| if pick(i) { x[ia(i)] } else { y[ib(i)] })
                        .collect(),
                )
            }
        };
        Ok(Known {
            dims,
            elems,
            origin: None,
        })
    }

    /// The elements as `f64` (integers that hold the batch are an error).
    fn as_f64s(&self) -> Result<Vec<f64>, String> {
        match &self.elems {
            Elems::F32(v) => Ok(v.iter().map(|&x| f64::from(x)).collect()),
            Elems::Int(v) => v
                .iter()
                .map(|s| s.concrete().map(|x| x as f64).ok_or("holds the batch size"))
                .collect::<Result<_, _>>()
                .map_err(String::from),
        }
    }

    pub fn unary_f32(&self, f: impl Fn(f32) -> f32) -> Result<Known, String> {
        Ok(Known::f32(
            self.dims.clone(),
            self.as_f32()?.into_iter().map(f).collect(),
        ))
    }
}

pub fn check_perm(perm: &[usize], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(format!("permutation {perm:?} of a rank-{rank} tensor"));
    }
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(format!("{perm:?} is not a permutation"));
        }
    }
    Ok(())
}

/// NumPy broadcasting of two shapes.
pub fn broadcast<T: Copy + PartialEq + fmt::Debug + IsOne>(
    a: &[T],
    b: &[T],
) -> Result<Vec<T>, String> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let x = (i + a.len()).checked_sub(r).map(|j| a[j]);
        let y = (i + b.len()).checked_sub(r).map(|j| b[j]);
        out.push(match (x, y) {
            (Some(x), Some(y)) if x == y || y.is_one() => x,
            (Some(x), Some(y)) if x.is_one() => y,
            (Some(x), None) => x,
            (None, Some(y)) => y,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        });
    }
    Ok(out)
}

pub trait IsOne {
    fn is_one(&self) -> bool;
}
impl IsOne for usize {
    fn is_one(&self) -> bool {
        *self == 1
    }
}
impl IsOne for SymInt {
    fn is_one(&self) -> bool {
        *self == SymInt::fixed(1)
    }
}

fn broadcast_index(dims: &[usize], out: &[usize]) -> impl Fn(usize) -> usize + use<> {
    let off = out.len() - dims.len();
    let out_strides = strides(out);
    let in_strides = strides(dims);
    let dims = dims.to_vec();
    let out = out.to_vec();
    move |i| {
        let mut at = 0;
        for (a, &d) in dims.iter().enumerate() {
            let idx = (i / out_strides[a + off]) % out[a + off].max(1);
            if d != 1 {
                at += idx * in_strides[a];
            }
        }
        at
    }
}

/// Comparisons and logical ops, whose results are booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    And,
    Or,
}

impl CmpOp {
    pub fn of(op: &str) -> Option<CmpOp> {
        Some(match op {
            "Less" => CmpOp::Less,
            "LessOrEqual" => CmpOp::LessOrEqual,
            "Greater" => CmpOp::Greater,
            "GreaterOrEqual" => CmpOp::GreaterOrEqual,
            "And" => CmpOp::And,
            "Or" => CmpOp::Or,
            _ => return None,
        })
    }

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Less => a < b,
            CmpOp::LessOrEqual => a <= b,
            CmpOp::Greater => a > b,
            CmpOp::GreaterOrEqual => a >= b,
            CmpOp::Equal => a == b,
            CmpOp::And => a != 0.0 && b != 0.0,
            CmpOp::Or => a != 0.0 || b != 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Max,
    Min,
    Equal,
}

impl BinOp {
    fn ints(self, a: SymInt, b: SymInt) -> Result<SymInt, String> {
        match self {
            BinOp::Add => a.add(b, 1),
            BinOp::Sub => a.add(b, -1),
            BinOp::Mul => a.times(b),
            BinOp::Div => a.divided_by(b),
            _ => {
                let (x, y) = (
                    a.concrete().ok_or("the batch size in integer arithmetic")?,
                    b.concrete().ok_or("the batch size in integer arithmetic")?,
                );
                Ok(SymInt::fixed(match self {
                    BinOp::Mod => x.checked_rem_euclid(y).ok_or("modulo by zero")?,
                    BinOp::Max => x.max(y),
                    BinOp::Min => x.min(y),
                    BinOp::Equal => i64::from(x == y),
                    BinOp::Pow => u32::try_from(y)
                        .ok()
                        .and_then(|y| x.checked_pow(y))
                        .ok_or("integer overflow")?,
                    _ => unreachable!("handled above"),
                }))
            }
        }
    }

    fn floats(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Mod => a % b,
            BinOp::Pow => a.powf(b),
            BinOp::Max => a.max(b),
            BinOp::Min => a.min(b),
            BinOp::Equal => f32::from(u8::from(a == b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_a_matrix() {
        let k = Known::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let t = k.transpose(&[1, 0]).unwrap();
        assert_eq!(t.dims, vec![3, 2]);
        assert_eq!(t.elems, Elems::F32(vec![1., 4., 2., 5., 3., 6.]));
    }

    #[test]
    fn folds_shape_arithmetic_with_the_batch() {
        let shape = Known::ints(
            vec![3],
            vec![SymInt::fixed(8), SymInt::BATCH, SymInt::fixed(32)],
        );
        let b = shape.gather(0, &[1], &[]).unwrap();
        let heads = Known::ints(vec![], vec![SymInt::fixed(2)]);
        let merged = b.binary(&heads, BinOp::Mul).unwrap();
        assert_eq!(merged.as_ints().unwrap(), &[SymInt { k: 2, p: 1 }]);
    }

    #[test]
    fn folds_a_causal_mask_from_positions() {
        let rows = Known::ints(vec![3, 1], (0..3).map(SymInt::fixed).collect());
        let cols = Known::ints(vec![1, 3], (0..3).map(SymInt::fixed).collect());
        let later = cols.compare(&rows, CmpOp::Greater).unwrap();
        assert_eq!(later.dims, vec![3, 3]);
        let big = Known::f32(vec![], vec![-1e9]);
        let zero = Known::f32(vec![], vec![0.0]);
        let mask = later.select(&big, &zero).unwrap();
        assert_eq!(
            mask.elems,
            Elems::F32(vec![0.0, -1e9, -1e9, 0.0, 0.0, -1e9, 0.0, 0.0, 0.0])
        );
    }

    #[test]
    fn gathers_rows_and_broadcasts() {
        let k = Known::f32(vec![2, 2], vec![1., 2., 3., 4.]);
        assert_eq!(
            k.gather(0, &[-1], &[]).unwrap().elems,
            Elems::F32(vec![3., 4.])
        );
        let row = Known::f32(vec![2], vec![10., 20.]);
        assert_eq!(
            k.binary(&row, BinOp::Add).unwrap().elems,
            Elems::F32(vec![11., 22., 13., 24.])
        );
    }
}
