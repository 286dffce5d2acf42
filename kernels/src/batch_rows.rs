//! Which buffers a kernel touches only at the batch row of each of its points.
//!
//! A kernel whose every point belongs to one batch row (a map or reduction whose space
//! starts with the batch, a product whose rows are the batch) can be run a range of
//! batch rows at a time. For a slot declared `[batch, ...]` with `R` elements a row, an
//! access is *row-aligned* when the point of batch row `b` reads or writes only
//! elements `b R .. (b + 1) R`: its index is `R * i0 + g` with `g` free of `i0` and
//! provably inside `0..R` ([`bounds::index_range`]). A recurrent step's launches are
//! row-aligned in every buffer their loop writes (the carry, the gates, the tape), so
//! the runtime can run the whole loop on each thread for its own batch rows, without a
//! barrier between launches (see the runtime's seated loops).
//!
//! The analysis is exact for what it accepts and conservative otherwise: a slot read
//! through a gather, as a product's right-hand operand, or at an index it cannot prove
//! row-aligned is simply not row-aligned.

use crate::bounds::{self, Range, Read};
use crate::ir::{Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand};
use std::convert::Infallible;

/// What [`batch_rows`] found: per slot, the row length `R` (elements) when every access
/// of the kernel to that slot is row-aligned, `None` when some access is not (or the slot
/// is not declared `[batch, fixed...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRows {
    pub slots: Vec<Option<u64>>,
}

/// The row-aligned slots of `kernel` at batch size `batch`, if its every point belongs to
/// one batch row (see the module docs): each body a map or reduction whose space starts
/// with the batch, or a product without batch or summed dimensions whose `m` is the
/// batch. `None` for any other kernel (a scatter-add, a weight gradient summed over the
/// batch, a batched product).
pub fn batch_rows(kernel: &Kernel, batch: u64) -> Option<BatchRows> {
    let mut check = Check {
        slots: kernel
            .buffers
            .iter()
            .map(|b| row_length(&b.shape))
            .collect(),
        batch: i128::from(batch),
    };
    for body in kernel.body.bodies() {
        match body {
            KernelBody::Map { space, stores } => {
                let vars = check.ranges(space, true)?;
                for s in stores {
                    check.access(s.buf, &s.index, &vars);
                    check.expr(&s.value, &mut vars.clone());
                }
            }
            KernelBody::Reduce {
                space,
                reduce,
                value,
                out,
                ..
            } => {
                let vars = check.ranges(space, true)?;
                let mut inner = vars.clone();
                inner.extend(check.ranges(reduce, false)?);
                check.expr(value, &mut inner);
                check.access(out.buf, &out.index, &vars);
                check.expr(&out.value, &mut vars.clone());
            }
            KernelBody::Contract(c) => check.contraction(c)?,
            KernelBody::ScatterAdd(_) | KernelBody::Parts(_) => return None,
        }
    }
    Some(BatchRows { slots: check.slots })
}

/// `R` for a buffer declared `[batch, d...]` with fixed `d`s: their product.
fn row_length(shape: &[Dim]) -> Option<u64> {
    match shape.split_first() {
        Some((Dim::Batch, rest)) => rest.iter().try_fold(1u64, |n, d| match d {
            Dim::Fixed(e) => n.checked_mul(*e),
            Dim::Batch => None,
        }),
        _ => None,
    }
}

struct Check {
    slots: Vec<Option<u64>>,
    batch: i128,
}

impl Check {
    /// The ranges of `dims`' loop variables (None for an empty space: no point, no
    /// access); with `batch_first`, `None` unless the first is the batch.
    fn ranges(&self, dims: &[Dim], batch_first: bool) -> Option<Vec<Range>> {
        if batch_first && dims.first() != Some(&Dim::Batch) {
            return None;
        }
        bounds::space_ranges(dims, self.batch)
    }

    /// Keeps `slot` row-aligned only if `index` (over `vars`, variable 0 the batch row) is.
    fn access(&mut self, slot: usize, index: &Index, vars: &[Range]) {
        let Some(Some(r)) = self.slots.get(slot).copied() else {
            return;
        };
        let mut at_row_0 = vars.to_vec();
        if let Some(first) = at_row_0.first_mut() {
            *first = Range { lo: 0, hi: 0 };
        }
        let aligned = index.coefficient(0) == i64::try_from(r).ok()
            && bounds::index_range(index, &at_row_0, self.batch)
                .is_ok_and(|g| g.lo >= 0 && g.hi < i128::from(r));
        if !aligned {
            self.slots[slot] = None;
        }
    }

    fn unaligned(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }

    /// Checks every load of `e` (its nested reductions' variables pushed onto `vars`).
    fn expr(&mut self, e: &Expr, vars: &mut Vec<Range>) {
        let batch = self.batch;
        let Ok(()) = bounds::visit_reads::<Infallible, _>(e, vars, batch, &mut |read, vars| {
            match read {
                Read::Element { buf, index } | Read::Id { buf, index } => {
                    self.access(buf, index, vars)
                }
                // The table's row is data, not the point's.
                Read::TableRow { table, .. } => self.unaligned(table),
            }
            Ok(())
        });
    }

    /// A product whose rows are the batch: its left-hand operand's row `b` and its
    /// output's row `b` are the batch row's; its right-hand operand is read whole.
    fn contraction(&mut self, c: &Contraction) -> Option<()> {
        if !c.batch.is_empty() || !c.summed.is_empty() || c.m != Dim::Batch {
            return None;
        }
        let n = match c.n {
            Dim::Fixed(n) => n,
            Dim::Batch => return None,
        };
        // Each product's (the contraction's and its terms') over its own depth.
        for (k, a, b) in c.products() {
            let k = match k {
                Dim::Fixed(k) => i128::from(k),
                Dim::Batch => self.batch,
            };
            self.operand_rows(a, k);
            self.unaligned(b.buf);
        }
        // The output is `[m, n]` row-major: row `b` is its elements `b n .. (b + 1) n`.
        if self.slots.get(c.out).copied().flatten() != Some(n) {
            self.unaligned(c.out);
        }
        let vars = self.ranges(&[Dim::Batch, c.n], true)?;
        self.expr(&c.epilogue, &mut vars.clone());
        Some(())
    }

    /// Keeps `op`'s slot row-aligned only if its row `b` (`offset + b * row_stride + col
    /// * col_stride`, `col < k`) lies in `b R .. (b + 1) R`.
    fn operand_rows(&mut self, op: &MatrixOperand, k: i128) {
        let Some(Some(r)) = self.slots.get(op.buf).copied() else {
            return;
        };
        let stride = bounds::index_range(&op.row_stride, &[], self.batch);
        // Row 0's elements, the column its only variable.
        let row_0 = op
            .offset
            .clone()
            .add(Index::Var(0).mul(op.col_stride.clone()));
        let cols = [Range { lo: 0, hi: k - 1 }];
        let aligned = op.window.is_none()
            && stride.is_ok_and(|s| s.lo == i128::from(r) && s.hi == i128::from(r))
            && bounds::index_range(&row_0, &cols, self.batch)
                .is_ok_and(|g| g.lo >= 0 && g.hi < i128::from(r));
        if !aligned {
            self.unaligned(op.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Access, BinaryOp, ReduceOp, Store, UnaryOp};
    use crate::test_fixtures::f32_buffer as buffer;
    use Index::Var as var;

    /// `next[b, j] = tanh(gates[b, j + 128]) * prev[b, j + 128]` over `[batch, 128]`, as
    /// an LSTM step's map reads its gates and carry.
    fn cell() -> Kernel {
        let at = |row: i64, shift: i64| {
            var(0)
                .mul(Index::Const(row))
                .add(var(1).add(Index::Const(shift)))
        };
        Kernel {
            name: "cell".into(),
            buffers: vec![
                buffer("gates", &[Dim::Batch, Dim::Fixed(512)], Access::Read),
                buffer("prev", &[Dim::Batch, Dim::Fixed(256)], Access::Read),
                buffer("next", &[Dim::Batch, Dim::Fixed(256)], Access::Write),
            ],
            body: KernelBody::Map {
                space: vec![Dim::Batch, Dim::Fixed(128)],
                stores: vec![Store {
                    buf: 2,
                    index: at(256, 0),
                    value: Expr::binary(
                        BinaryOp::Mul,
                        Expr::unary(UnaryOp::Tanh, Expr::load(0, at(512, 128))),
                        Expr::load(1, at(256, 128)),
                    ),
                }],
            },
        }
    }

    #[test]
    fn a_recurrent_cell_touches_only_its_points_rows() {
        let rows = batch_rows(&cell(), 7).expect("a map over [batch, 128]");
        assert_eq!(rows.slots, vec![Some(512), Some(256), Some(256)]);
    }

    #[test]
    fn a_read_past_its_row_or_across_rows_is_not_row_aligned() {
        // `prev[b, j + 200]` for j < 128 runs into row b + 1; `prev[b + 1, j]` is another
        // row.
        let past_row = var(0)
            .mul(Index::Const(256))
            .add(var(1).add(Index::Const(200)));
        let next_row = var(0)
            .add(Index::Const(1))
            .mul(Index::Const(256))
            .add(var(1));
        for index in [past_row, next_row] {
            let mut kernel = cell();
            if let KernelBody::Map { stores, .. } = &mut kernel.body {
                stores[0].value = Expr::load(1, index);
            }
            assert_eq!(batch_rows(&kernel, 4).unwrap().slots[1], None);
        }
        // A sum over the batch: its points are no batch rows.
        let over_batch = Kernel {
            name: "bias_gradient".into(),
            buffers: vec![
                buffer("g", &[Dim::Batch, Dim::Fixed(8)], Access::Read),
                buffer("out", &[Dim::Fixed(8)], Access::Write),
            ],
            body: KernelBody::Reduce {
                space: vec![Dim::Fixed(8)],
                reduce: vec![Dim::Batch],
                op: ReduceOp::Sum,
                value: Expr::load(0, var(1).mul(Index::Const(8)).add(var(0))),
                out: Store {
                    buf: 1,
                    index: var(0),
                    value: Expr::Acc,
                },
            },
        };
        assert_eq!(batch_rows(&over_batch, 4), None);
    }

    #[test]
    fn a_product_over_the_batch_rows_reads_its_weight_whole() {
        // `out[b, n] = h[b, :] @ w + x[b, n]`, `h` a carry row of 896 of which the product
        // reads the first 128.
        let kernel = Kernel {
            name: "step".into(),
            buffers: vec![
                buffer("h", &[Dim::Batch, Dim::Fixed(896)], Access::Read),
                buffer("w", &[Dim::Fixed(128), Dim::Fixed(512)], Access::Read),
                buffer("out", &[Dim::Batch, Dim::Fixed(512)], Access::Write),
                buffer("x", &[Dim::Batch, Dim::Fixed(512)], Access::Read),
            ],
            body: KernelBody::Contract(Contraction {
                batch: vec![],
                summed: vec![],
                m: Dim::Batch,
                n: Dim::Fixed(512),
                k: Dim::Fixed(128),
                a: MatrixOperand::strided(0, Index::Const(0), Index::Const(896), Index::Const(1)),
                b: MatrixOperand::strided(1, Index::Const(0), Index::Const(512), Index::Const(1)),
                out: 2,
                epilogue: Expr::binary(
                    BinaryOp::Add,
                    Expr::Acc,
                    Expr::load(3, var(0).mul(Index::Const(512)).add(var(1))),
                ),
                terms: Vec::new(),
            }),
        };
        let rows = batch_rows(&kernel, 32).unwrap();
        assert_eq!(rows.slots, vec![Some(896), None, Some(512), Some(512)]);
        // Reading 1,000 columns of a row of 896 crosses into the next.
        let mut wide = kernel.clone();
        if let KernelBody::Contract(c) = &mut wide.body {
            c.k = Dim::Fixed(1000);
        }
        assert_eq!(batch_rows(&wide, 32).unwrap().slots[0], None);
    }
}
