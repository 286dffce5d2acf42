//! Which elements of a buffer a map writes, as residues: a proof that two maps (the
//! launches of a concatenation's operands) write disjoint blocks of one buffer.
//!
//! A block of a row-major buffer is a range of residues: for `[batch, 768]`, the
//! columns `256..768` are exactly the flat indices whose remainder by 768 lies in
//! `256..768`. A store's flat index is a sum of terms; the terms that are always
//! multiples of a modulus `m` (`i0 * 768` for `m = 768`) do not change the remainder,
//! and if the others range inside `0..m`, the remainder ranges with them. Two stores
//! whose remainders by one `m` range over disjoint intervals never write the same
//! element. The candidate moduli are the products of a buffer's trailing fixed
//! dimensions (`768`; `600` and `20` for `[batch, 30, 20]`), so a block along any axis
//! whose inner dimensions are fixed is found.
//!
//! The lowering groups such launches into one kernel with parts, and the artifact
//! validation accepts parts that write one buffer only with this proof.

use crate::bounds::{Range, index_range};
use crate::ir::{Dim, Index, KernelBody};

/// The remainders by `modulus` of the flat indices a body writes: within `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Residues {
    pub modulus: u64,
    pub lo: u64,
    pub hi: u64,
}

/// For each candidate modulus of `shape` (the slot's), the residues of every store of a
/// map `body` into `slot`, where they are provable. Empty when `body` is no map, reads
/// `slot`, or its stores' indices depend on the batch size beyond whole multiples.
pub fn written_residues(body: &KernelBody, slot: usize, shape: &[Dim]) -> Vec<Residues> {
    let KernelBody::Map { space, stores } = body else {
        return Vec::new();
    };
    if body.read_slots().contains(&slot) {
        return Vec::new();
    }
    let indices: Vec<&Index> = stores
        .iter()
        .filter(|s| s.buf == slot)
        .map(|s| &s.index)
        .collect();
    indices_residues(space, &indices, shape)
}

/// The residues of the flat indices `index` takes over `space` in a buffer of `shape`
/// (one store of a map: two stores of one map into one buffer with residues apart write
/// disjoint elements).
pub fn index_residues(space: &[Dim], index: &Index, shape: &[Dim]) -> Vec<Residues> {
    indices_residues(space, &[index], shape)
}

/// For each candidate modulus of `shape`, the residues of every index of `indices` over
/// `space`, where they are provable.
fn indices_residues(space: &[Dim], indices: &[&Index], shape: &[Dim]) -> Vec<Residues> {
    if indices.is_empty() {
        return Vec::new();
    }
    if space.contains(&Dim::Fixed(0)) {
        return Vec::new();
    }
    // The variables' ranges; a batch extent has no bound, and a term using one must be
    // a multiple of the modulus.
    let vars: Vec<Option<Range>> = space
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(Range {
                lo: 0,
                hi: i128::from(*n) - 1,
            }),
            Dim::Batch => None,
        })
        .collect();
    moduli(shape)
        .into_iter()
        .filter_map(|m| {
            let mut all: Option<Range> = None;
            for ix in indices {
                let r = remainder_range(ix, &vars, m)?;
                all = Some(match all {
                    None => r,
                    Some(a) => Range {
                        lo: a.lo.min(r.lo),
                        hi: a.hi.max(r.hi),
                    },
                });
            }
            let r = all?;
            Some(Residues {
                modulus: m,
                lo: u64::try_from(r.lo).ok()?,
                hi: u64::try_from(r.hi).ok()?,
            })
        })
        .collect()
}

/// Whether writes with residues `a` and `b` (of one buffer) are proven disjoint: some
/// common modulus has disjoint ranges.
pub fn residues_apart(a: &[Residues], b: &[Residues]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| x.modulus == y.modulus && (x.hi < y.lo || y.hi < x.lo))
    })
}

/// The products of `shape`'s trailing fixed dimensions, innermost first (none past a
/// batch dimension).
fn moduli(shape: &[Dim]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut product: u64 = 1;
    for d in shape.iter().rev() {
        match d {
            Dim::Fixed(n) => match product.checked_mul(*n) {
                Some(p) if p > 0 && i64::try_from(p).is_ok() => {
                    product = p;
                    out.push(p);
                }
                _ => break,
            },
            Dim::Batch => break,
        }
    }
    out
}

/// The range of `ix mod m`, if the terms of `ix` that are not multiples of `m` range
/// inside `0..m` (then they are the remainder).
fn remainder_range(ix: &Index, vars: &[Option<Range>], m: u64) -> Option<Range> {
    let m = i128::from(m);
    let mut rest = Range { lo: 0, hi: 0 };
    let mut terms = Vec::new();
    flatten(ix, 1, &mut terms);
    // Placeholders for the unbounded variables, which no term ranged below reads.
    let known: Vec<Range> = vars
        .iter()
        .map(|r| r.unwrap_or(Range { lo: 0, hi: 0 }))
        .collect();
    for (term, scale) in terms {
        let d = divisor(term).checked_mul(u128::from(scale.unsigned_abs()))?;
        if d != 0 && d % m.unsigned_abs() == 0 {
            continue;
        }
        // A term with a batch-sized variable or the batch size itself has no bound.
        if uses_unbounded(term, vars) {
            return None;
        }
        let r = index_range(term, &known, 0).ok()?;
        let (a, b) = (r.lo * i128::from(scale), r.hi * i128::from(scale));
        rest = Range {
            lo: rest.lo + a.min(b),
            hi: rest.hi + a.max(b),
        };
    }
    (rest.lo >= 0 && rest.hi < m).then_some(rest)
}

/// The terms of `ix` as a sum, each with a constant factor: additions are flattened and
/// constant factors distributed over them (`(i0 * 30 + i1) * 20` is `i0 * 600 + i1 * 20`).
fn flatten<'a>(ix: &'a Index, scale: i64, out: &mut Vec<(&'a Index, i64)>) {
    match ix {
        Index::Add(a, b) => {
            flatten(a, scale, out);
            flatten(b, scale, out);
        }
        Index::Mul(a, b) => match (&**a, &**b) {
            (x, Index::Const(k)) | (Index::Const(k), x) => match scale.checked_mul(*k) {
                Some(s) => flatten(x, s, out),
                None => out.push((ix, scale)),
            },
            _ => out.push((ix, scale)),
        },
        _ => out.push((ix, scale)),
    }
}

/// A constant every value of `ix` is a multiple of (0: `ix` is always 0).
fn divisor(ix: &Index) -> u128 {
    match ix {
        Index::Const(c) => c.unsigned_abs().into(),
        Index::Mul(a, b) => divisor(a).saturating_mul(divisor(b)),
        Index::Add(a, b) => gcd(divisor(a), divisor(b)),
        Index::Var(_) | Index::Batch | Index::Div(..) | Index::Rem(..) => 1,
    }
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether `ix` reads the batch size or a variable without a bound.
fn uses_unbounded(ix: &Index, vars: &[Option<Range>]) -> bool {
    match ix {
        Index::Var(v) => vars.get(*v).is_none_or(|r| r.is_none()),
        Index::Const(_) => false,
        Index::Batch => true,
        Index::Add(a, b) | Index::Mul(a, b) => uses_unbounded(a, vars) || uses_unbounded(b, vars),
        Index::Div(a, _) | Index::Rem(a, _) => uses_unbounded(a, vars),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Expr, Store};

    fn copy_into(space: Vec<Dim>, index: Index) -> KernelBody {
        KernelBody::Map {
            space,
            stores: vec![Store {
                buf: 1,
                index,
                value: Expr::Load {
                    buf: 0,
                    index: Index::Var(0),
                },
            }],
        }
    }

    /// The store of a concatenation's operand of shape `part` at `offset` along `axis`
    /// of `whole`.
    fn concat_part(whole: &[Dim], part: &[Dim], axis: usize, offset: i64) -> KernelBody {
        let mut coords: Vec<Index> = (0..part.len()).map(Index::Var).collect();
        coords[axis] = Index::Var(axis).add(Index::Const(offset));
        copy_into(part.to_vec(), Index::row_major(&coords, whole))
    }

    #[test]
    fn blocks_of_a_concatenation_are_apart_along_any_axis() {
        use Dim::{Batch, Fixed};
        let whole = [Batch, Fixed(30), Fixed(20)];
        // Along axis 1: 10 + 20 rows of 20.
        let a = concat_part(&whole, &[Batch, Fixed(10), Fixed(20)], 1, 0);
        let b = concat_part(&whole, &[Batch, Fixed(20), Fixed(20)], 1, 10);
        let (ra, rb) = (
            written_residues(&a, 1, &whole),
            written_residues(&b, 1, &whole),
        );
        assert!(residues_apart(&ra, &rb), "{ra:?} {rb:?}");
        // Along the last axis: 5 + 15 columns.
        let c = concat_part(&whole, &[Batch, Fixed(30), Fixed(5)], 2, 0);
        let d = concat_part(&whole, &[Batch, Fixed(30), Fixed(15)], 2, 5);
        let (rc, rd) = (
            written_residues(&c, 1, &whole),
            written_residues(&d, 1, &whole),
        );
        assert!(residues_apart(&rc, &rd), "{rc:?} {rd:?}");
        // Overlapping blocks are not.
        let e = concat_part(&whole, &[Batch, Fixed(30), Fixed(10)], 2, 0);
        assert!(!residues_apart(&rd, &written_residues(&e, 1, &whole)));
    }

    #[test]
    fn what_cannot_be_proven_is_not_apart() {
        use Dim::{Batch, Fixed};
        // The batch inside the block: the remainder is not bounded.
        let whole = [Fixed(4), Batch];
        let a = concat_part(&whole, &[Fixed(2), Batch], 0, 0);
        let b = concat_part(&whole, &[Fixed(2), Batch], 0, 2);
        assert!(!residues_apart(
            &written_residues(&a, 1, &whole),
            &written_residues(&b, 1, &whole)
        ));
        // A body that also reads the buffer it writes.
        let reads = KernelBody::Map {
            space: vec![Fixed(4)],
            stores: vec![Store {
                buf: 1,
                index: Index::Var(0),
                value: Expr::Load {
                    buf: 1,
                    index: Index::Var(0),
                },
            }],
        };
        assert!(written_residues(&reads, 1, &[Fixed(8)]).is_empty());
        // A transposed store covers every residue.
        let t = copy_into(
            vec![Fixed(4), Fixed(8)],
            Index::Var(1).mul(Index::Const(4)).add(Index::Var(0)),
        );
        let left = concat_part(&[Fixed(8), Fixed(4)], &[Fixed(8), Fixed(2)], 1, 0);
        assert!(!residues_apart(
            &written_residues(&t, 1, &[Fixed(8), Fixed(4)]),
            &written_residues(&left, 1, &[Fixed(8), Fixed(4)])
        ));
    }
}
