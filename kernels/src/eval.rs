//! Reference evaluator of the kernel IR, in `f64`.
//!
//! [`eval_kernel`] runs one [`Kernel`] over buffers of `f64` elements, point by point, in
//! the plain row-major order of its iteration space. It exists to test the lowering (graph
//! IR -> kernel IR) apart from the emitters, and to be the oracle the emitters are
//! compared against, so it favours obviousness over speed.
//!
//! # Semantics it fixes
//! - Every index is checked: a negative or too-large element index, a division by a
//!   non-positive constant or an overflowing index is a [`KernelError`], never a panic.
//! - `Select` evaluates only the branch it takes, so a guarded out-of-range load (padding,
//!   concatenation) is fine.
//! - Every scalar op computes [`crate::scalar_op`]'s `f64` semantics (its `apply`), the
//!   same code as the graph interpreter's: `Max`/`Min` (binary and reductions) and `Relu`
//!   propagate NaN and order `-0 < +0`, as the CPU code's `fmax`/`fmin` do.
//! - Storing to an `i32` buffer truncates towards zero and saturates (NaN -> 0), as the
//!   CPU code's `fcvt_to_sint_sat` does; loads of `i32` buffers give their integer value.
//! - Values stored to `f32` buffers keep their `f64` precision: this is the exact answer
//!   the `f32` code approximates.
//! - A gather whose id is outside the table's rows reads `0.0`; a scatter-add adds nothing
//!   for such an id (both are checked when the kernel runs, not proven beforehand).
//! - `Uniform` rounds its `step` to `f32` before [`rng::step_word`] (the backends compute
//!   it in `f32`) and gives exactly [`rng::uniform_at`]'s `f32`; a negative element index
//!   is an error.

use crate::ir::{
    Contraction, Dim, Expr, Index, Kernel, KernelBody, KernelError, MatrixOperand, ReduceOp,
    ScalarType, ScatterAdd, Store,
};
use crate::rng;

/// Runs `kernel` over `buffers` (`buffers[slot]` holds the elements of buffer slot `slot`;
/// `i32` buffers hold integer values as `f64`) for the given batch size.
///
/// Each buffer must hold exactly as many elements as its declared shape at `batch`.
pub fn eval_kernel(
    kernel: &Kernel,
    buffers: &mut [Vec<f64>],
    batch: u64,
) -> Result<(), KernelError> {
    kernel.validate()?;
    if let KernelBody::Parts(parts) = &kernel.body {
        // Independent parts: any order gives the same buffers.
        for i in 0..parts.len() {
            eval_kernel(&kernel.part(i), buffers, batch)?;
        }
        return Ok(());
    }
    let eval = Evaluator::new(kernel, buffers, batch)?;
    match &kernel.body {
        KernelBody::Map { space, stores } => eval.map(space, stores),
        KernelBody::Reduce {
            space,
            reduce,
            op,
            value,
            out,
        } => eval.reduce(space, reduce, *op, value, out),
        KernelBody::Contract(c) => eval.contract(c),
        KernelBody::ScatterAdd(s) => eval.scatter_add(s),
        KernelBody::Parts(_) => unreachable!("handled above"),
    }
}

/// The state of one evaluation: the kernel (for error messages and dtypes), its buffers and
/// the batch size.
struct Evaluator<'k, 'b> {
    kernel: &'k Kernel,
    buffers: &'b mut [Vec<f64>],
    batch: i64,
}

impl<'k, 'b> Evaluator<'k, 'b> {
    fn new(
        kernel: &'k Kernel,
        buffers: &'b mut [Vec<f64>],
        batch: u64,
    ) -> Result<Self, KernelError> {
        let err = |message: String| KernelError {
            kernel: kernel.name.clone(),
            message,
        };
        let batch = i64::try_from(batch).map_err(|_| err(format!("batch {batch} too large")))?;
        if buffers.len() != kernel.buffers.len() {
            return Err(err(format!(
                "{} buffers given for {} declared",
                buffers.len(),
                kernel.buffers.len()
            )));
        }
        let eval = Evaluator {
            kernel,
            buffers,
            batch,
        };
        for (slot, decl) in kernel.buffers.iter().enumerate() {
            let expected = eval.extent_product(&decl.shape)?;
            let len = eval.buffers[slot].len();
            if u64::try_from(len).ok() != Some(expected) {
                return Err(eval.error(format!(
                    "buffer `{}` holds {len} elements, its shape needs {expected}",
                    decl.name
                )));
            }
        }
        Ok(eval)
    }

    fn error(&self, message: String) -> KernelError {
        KernelError {
            kernel: self.kernel.name.clone(),
            message,
        }
    }

    fn extent(&self, d: Dim) -> u64 {
        d.resolve(self.batch as u64)
    }

    fn extent_product(&self, dims: &[Dim]) -> Result<u64, KernelError> {
        dims.iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(self.extent(*d)))
            .ok_or_else(|| self.error("iteration space or buffer size overflows".into()))
    }

    /// The points of `dims`, in row-major order.
    fn points(&self, dims: &[Dim]) -> Result<Points, KernelError> {
        let extents = dims
            .iter()
            .map(|d| i64::try_from(self.extent(*d)))
            .collect::<Result<_, _>>()
            .map_err(|_| self.error("extent too large".into()))?;
        Ok(Points::new(extents))
    }

    fn index(&self, ix: &Index, vars: &[i64]) -> Result<i64, KernelError> {
        let overflow = || self.error(format!("index overflows: {ix:?}"));
        Ok(match ix {
            Index::Var(v) => *vars
                .get(*v)
                .ok_or_else(|| self.error(format!("loop variable {v} out of scope")))?,
            Index::Const(c) => *c,
            Index::Batch => self.batch,
            Index::Add(a, b) => self
                .index(a, vars)?
                .checked_add(self.index(b, vars)?)
                .ok_or_else(overflow)?,
            Index::Mul(a, b) => self
                .index(a, vars)?
                .checked_mul(self.index(b, vars)?)
                .ok_or_else(overflow)?,
            Index::Div(a, d) | Index::Rem(a, d) => {
                if *d <= 0 {
                    return Err(self.error(format!("index divided by non-positive {d}")));
                }
                let a = self.index(a, vars)?;
                if matches!(ix, Index::Div(..)) {
                    a.div_euclid(*d)
                } else {
                    a.rem_euclid(*d)
                }
            }
        })
    }

    /// The element position of `index` in buffer `buf`, checked against its length.
    fn element(&self, buf: usize, index: &Index, vars: &[i64]) -> Result<usize, KernelError> {
        let i = self.index(index, vars)?;
        let len = self.buffers.get(buf).map_or(0, Vec::len);
        match usize::try_from(i) {
            Ok(u) if u < len => Ok(u),
            _ => Err(self.error(format!(
                "index {i} out of range for buffer `{}` of {len} elements",
                self.kernel
                    .buffers
                    .get(buf)
                    .map_or("?", |b| b.name.as_str())
            ))),
        }
    }

    fn expr(&self, e: &Expr, vars: &[i64], acc: Option<f64>) -> Result<f64, KernelError> {
        Ok(match e {
            Expr::Load { buf, index } => self.buffers[*buf][self.element(*buf, index, vars)?],
            Expr::Gather {
                table,
                ids,
                id_index,
                col,
            } => {
                let id = self.buffers[*ids][self.element(*ids, id_index, vars)?];
                match self.table_position(*table, id, col, vars)? {
                    Some(at) => self.buffers[*table][at],
                    None => 0.0,
                }
            }
            Expr::Const(c) => *c,
            Expr::Acc => acc.ok_or_else(|| self.error("`acc` outside an epilogue".into()))?,
            Expr::IndexValue(ix) => self.index(ix, vars)? as f64,
            Expr::Uniform { seed, index, step } => {
                let i = self.index(index, vars)?;
                let i = u64::try_from(i)
                    .map_err(|_| self.error(format!("negative random element index {i}")))?;
                // The backends compute `step` in f32, so round before converting.
                let step = rng::step_word(self.expr(step, vars, acc)? as f32);
                f64::from(rng::uniform_at(*seed, i, step))
            }
            Expr::Unary(op, x) => op.apply(self.expr(x, vars, acc)?),
            Expr::Binary(op, a, b) => op.apply(self.expr(a, vars, acc)?, self.expr(b, vars, acc)?),
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                if self.expr(cond, vars, acc)? != 0.0 {
                    self.expr(then, vars, acc)?
                } else {
                    self.expr(otherwise, vars, acc)?
                }
            }
            Expr::Reduce { op, extent, value } => {
                let mut folded = op.identity();
                let mut inner = vars.to_vec();
                let mut points = self.points(extent)?;
                while let Some(r) = points.next_point() {
                    inner.truncate(vars.len());
                    inner.extend_from_slice(r);
                    folded = op.combine(folded, self.expr(value, &inner, None)?);
                }
                folded
            }
        })
    }

    /// The element of row `id`, column `col` of the table in slot `table`, or None when
    /// `id` is outside its rows; `col` outside its columns is an error.
    fn table_position(
        &self,
        table: usize,
        id: f64,
        col: &Index,
        vars: &[i64],
    ) -> Result<Option<usize>, KernelError> {
        let (rows, cols) = self
            .kernel
            .table_extent(table)
            .ok_or_else(|| self.error(format!("slot {table} is not a table")))?;
        let c = self.index(col, vars)?;
        if !(0..cols as i64).contains(&c) {
            return Err(self.error(format!("column {c} outside a table of {cols} columns")));
        }
        if !(id >= 0.0 && id < rows as f64) {
            return Ok(None);
        }
        Ok(Some(id as usize * cols as usize + c as usize))
    }

    fn write(
        &mut self,
        buf: usize,
        index: &Index,
        vars: &[i64],
        value: f64,
    ) -> Result<(), KernelError> {
        let at = self.element(buf, index, vars)?;
        self.buffers[buf][at] = match self.kernel.buffers[buf].dtype {
            ScalarType::F32 => value,
            // Truncating, saturating, NaN -> 0: Rust's `as` is exactly `fcvt_to_sint_sat`.
            ScalarType::I32 => f64::from(value as i32),
        };
        Ok(())
    }

    fn map(mut self, space: &[Dim], stores: &[Store]) -> Result<(), KernelError> {
        let mut values = Vec::with_capacity(stores.len());
        let mut points = self.points(space)?;
        while let Some(p) = points.next_point() {
            values.clear();
            for s in stores {
                values.push(self.expr(&s.value, p, None)?);
            }
            for (s, v) in stores.iter().zip(&values) {
                self.write(s.buf, &s.index, p, *v)?;
            }
        }
        Ok(())
    }

    fn reduce(
        mut self,
        space: &[Dim],
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
        out: &Store,
    ) -> Result<(), KernelError> {
        let mut points = self.points(space)?;
        let mut vars = Vec::with_capacity(space.len() + reduce.len());
        while let Some(p) = points.next_point() {
            let mut acc = op.identity();
            let mut folded = self.points(reduce)?;
            while let Some(r) = folded.next_point() {
                vars.clear();
                vars.extend_from_slice(p);
                vars.extend_from_slice(r);
                acc = op.combine(acc, self.expr(value, &vars, None)?);
            }
            let v = self.expr(&out.value, p, Some(acc))?;
            self.write(out.buf, &out.index, p, v)?;
        }
        Ok(())
    }

    fn scatter_add(self, s: &ScatterAdd) -> Result<(), KernelError> {
        let (_, cols) = self
            .kernel
            .table_extent(s.out)
            .ok_or_else(|| self.error("a scatter-add's output is not a table".into()))?;
        // Every value first, as the values never read the table: then the sums.
        let mut adds = Vec::new();
        let mut points = self.points(&s.over)?;
        let mut vars = Vec::with_capacity(s.over.len() + 1);
        while let Some(n) = points.next_point() {
            let id = self.buffers[s.ids][self.element(s.ids, &s.id_index, n)?];
            for c in 0..cols as i64 {
                vars.clear();
                vars.extend_from_slice(n);
                vars.push(c);
                let value = self.expr(&s.value, &vars, None)?;
                let col = Index::Const(c);
                if let Some(at) = self.table_position(s.out, id, &col, &vars)? {
                    adds.push((at, value));
                }
            }
        }
        let out = &mut self.buffers[s.out];
        out.iter_mut().for_each(|x| *x = 0.0);
        for (at, value) in adds {
            out[at] += value;
        }
        Ok(())
    }

    fn contract(mut self, c: &Contraction) -> Result<(), KernelError> {
        let (m, n, k) = (self.extent(c.m), self.extent(c.n), self.extent(c.k));
        // Every product first, then the epilogue over them: the epilogue sees `Acc` as the
        // finished product even if it also loads from the operands.
        let mut products = Vec::new();
        let mut batches = self.points(&c.batch)?;
        while let Some(b) = batches.next_point() {
            let b = b.to_vec();
            for row in 0..m as i64 {
                for col in 0..n as i64 {
                    let mut sum = 0.0;
                    // The operands' variables: the batch point, then the summed one.
                    let mut summed = self.points(&c.summed)?;
                    while let Some(s) = summed.next_point() {
                        let vars = [b.as_slice(), s].concat();
                        for depth in 0..k as i64 {
                            sum += self.operand(&c.a, &vars, row, depth)?
                                * self.operand(&c.b, &vars, depth, col)?;
                        }
                    }
                    // The terms (unbatched, unsummed: no variables), each after the
                    // product, in order.
                    for t in &c.terms {
                        for depth in 0..self.extent(t.k) as i64 {
                            sum += self.operand(&t.a, &b, row, depth)?
                                * self.operand(&t.b, &b, depth, col)?;
                        }
                    }
                    products.push(sum);
                }
            }
        }
        let space = c.space();
        let out_index = Index::row_major(
            &(0..space.len()).map(Index::Var).collect::<Vec<_>>(),
            &space,
        );
        let mut products = products.into_iter();
        let mut points = self.points(&space)?;
        while let Some(p) = points.next_point() {
            let acc = products
                .next()
                .ok_or_else(|| self.error("contraction space mismatch".into()))?;
            let v = self.expr(&c.epilogue, p, Some(acc))?;
            self.write(c.out, &out_index, p, v)?;
        }
        Ok(())
    }

    /// Element `(row, col)` of a contraction operand at batch coordinates `b`.
    fn operand(
        &self,
        op: &MatrixOperand,
        b: &[i64],
        row: i64,
        col: i64,
    ) -> Result<f64, KernelError> {
        let at = match op.window.as_deref() {
            Some(w) => match w.element(row as u64, col as u64) {
                Some(e) => Index::Const(e as i64).add(op.offset.clone()),
                None => return Ok(0.0),
            },
            None => Index::Const(row)
                .mul(op.row_stride.clone())
                .add(Index::Const(col).mul(op.col_stride.clone()))
                .add(op.offset.clone()),
        };
        Ok(self.buffers[op.buf][self.element(op.buf, &at, b)?])
    }
}

/// The points of an iteration space in row-major order, as an odometer (a lending
/// iterator: each point is borrowed until the next call).
struct Points {
    extents: Vec<i64>,
    point: Vec<i64>,
    state: PointsState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PointsState {
    /// `point` is the first point, not yet returned.
    First,
    /// `point` was returned; the next one follows it.
    Running,
    Done,
}

impl Points {
    fn new(extents: Vec<i64>) -> Points {
        let point = vec![0; extents.len()];
        // A space with an empty dimension has no points; a rank-0 space has exactly one.
        let state = if extents.contains(&0) {
            PointsState::Done
        } else {
            PointsState::First
        };
        Points {
            extents,
            point,
            state,
        }
    }

    fn next_point(&mut self) -> Option<&[i64]> {
        match self.state {
            PointsState::Done => return None,
            PointsState::First => {
                self.state = PointsState::Running;
                return Some(&self.point);
            }
            PointsState::Running => {}
        }
        // Advance from the innermost coordinate.
        for d in (0..self.extents.len()).rev() {
            self.point[d] += 1;
            if self.point[d] < self.extents[d] {
                return Some(&self.point);
            }
            self.point[d] = 0;
        }
        self.state = PointsState::Done;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Access, BinaryOp, BufferDecl, UnaryOp};

    fn buffer(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
        BufferDecl {
            name: name.into(),
            dtype: ScalarType::F32,
            shape: shape.to_vec(),
            access,
        }
    }

    fn var(v: usize) -> Index {
        Index::Var(v)
    }

    fn row_major(shape: &[Dim]) -> Index {
        Index::row_major(&(0..shape.len()).map(var).collect::<Vec<_>>(), shape)
    }

    /// `out[i, j] = x[i, j] + bias[j]` over `[rows, 3]`.
    fn bias_add(rows: Dim) -> Kernel {
        let shape = [rows, Dim::Fixed(3)];
        Kernel {
            name: "bias_add".into(),
            buffers: vec![
                buffer("x", &shape, Access::Read),
                buffer("bias", &[Dim::Fixed(3)], Access::Read),
                buffer("out", &shape, Access::Write),
            ],
            body: KernelBody::Map {
                space: shape.to_vec(),
                stores: vec![Store {
                    buf: 2,
                    index: row_major(&shape),
                    value: Expr::binary(
                        BinaryOp::Add,
                        Expr::load(0, row_major(&shape)),
                        Expr::load(1, var(1)),
                    ),
                }],
            },
        }
    }

    #[test]
    fn map_broadcasts_a_bias_over_batch_rows() {
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![10.0, 20.0, 30.0],
            vec![0.0; 6],
        ];
        eval_kernel(&bias_add(Dim::Batch), &mut bufs, 2).unwrap();
        assert_eq!(bufs[2], [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }

    #[test]
    fn parts_run_as_their_kernels_would_alone() {
        let kernel = Kernel::join("two", &[bias_add(Dim::Batch), bias_add(Dim::Fixed(1))]);
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![10.0, 20.0, 30.0],
            vec![0.0; 6],
            vec![-1.0, -2.0, -3.0],
            vec![1.0, 1.0, 1.0],
            vec![0.0; 3],
        ];
        eval_kernel(&kernel, &mut bufs, 2).unwrap();
        assert_eq!(bufs[2], [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        assert_eq!(bufs[5], [0.0, -1.0, -2.0]);
    }

    #[test]
    fn parts_that_depend_on_each_other_or_nest_are_refused() {
        let mut kernel = Kernel::join("two", &[bias_add(Dim::Batch), bias_add(Dim::Batch)]);
        // Part 1 reads what part 0 writes.
        if let KernelBody::Parts(parts) = &mut kernel.body {
            parts[1].remap_slots(&|s| if s == 3 { 2 } else { s });
        }
        let e = kernel.validate().unwrap_err();
        assert!(e.message.contains("part 0 writes `bias_add_out`"), "{e}");

        let inner = Kernel::join("inner", &[bias_add(Dim::Batch), bias_add(Dim::Batch)]);
        let mut nested = Kernel::join("outer", &[inner, bias_add(Dim::Batch)]);
        if let KernelBody::Parts(parts) = &mut nested.body {
            let first = parts.remove(0);
            let second = parts.remove(0);
            parts.insert(0, KernelBody::Parts(vec![first, second]));
        }
        let e = nested.validate().unwrap_err();
        assert!(e.message.contains("part 0 has parts of its own"), "{e}");

        let single = Kernel {
            body: KernelBody::Parts(vec![bias_add(Dim::Batch).body]),
            ..bias_add(Dim::Batch)
        };
        let e = single.validate().unwrap_err();
        assert!(e.message.contains("parts need at least 2"), "{e}");
    }

    #[test]
    fn map_evaluates_every_store_before_writing() {
        // Swap two elements in place: both values are read before either is written.
        let kernel = Kernel {
            name: "swap".into(),
            buffers: vec![buffer("x", &[Dim::Fixed(2)], Access::ReadWrite)],
            body: KernelBody::Map {
                space: vec![],
                stores: vec![
                    Store {
                        buf: 0,
                        index: Index::Const(0),
                        value: Expr::load(0, Index::Const(1)),
                    },
                    Store {
                        buf: 0,
                        index: Index::Const(1),
                        value: Expr::load(0, Index::Const(0)),
                    },
                ],
            },
        };
        let mut bufs = vec![vec![1.0, 2.0]];
        eval_kernel(&kernel, &mut bufs, 1).unwrap();
        assert_eq!(bufs[0], [2.0, 1.0]);
    }

    #[test]
    fn reduce_folds_each_row_then_applies_the_epilogue() {
        // out[i] = 2 * max_j x[i, j]
        let kernel = Kernel {
            name: "row_max".into(),
            buffers: vec![
                buffer("x", &[Dim::Fixed(2), Dim::Fixed(3)], Access::Read),
                buffer("out", &[Dim::Fixed(2)], Access::Write),
            ],
            body: KernelBody::Reduce {
                space: vec![Dim::Fixed(2)],
                reduce: vec![Dim::Fixed(3)],
                op: ReduceOp::Max,
                value: Expr::load(0, var(0).mul(Index::Const(3)).add(var(1))),
                out: Store {
                    buf: 1,
                    index: var(0),
                    value: Expr::binary(BinaryOp::Mul, Expr::Const(2.0), Expr::Acc),
                },
            },
        };
        let mut bufs = vec![vec![1.0, 5.0, 2.0, -4.0, -3.0, -9.0], vec![0.0; 2]];
        eval_kernel(&kernel, &mut bufs, 1).unwrap();
        assert_eq!(bufs[1], [10.0, -6.0]);
    }

    #[test]
    fn contract_sums_over_its_summed_dimensions() {
        // out = sum_b a[b]ᵀ x g[b]: a of [batch, 2, 1], g of [batch, 2, 1], out of [1, 1].
        let kernel = Kernel {
            name: "summed".into(),
            buffers: vec![
                buffer(
                    "a",
                    &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(1)],
                    Access::Read,
                ),
                buffer(
                    "g",
                    &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(1)],
                    Access::Read,
                ),
                buffer("out", &[Dim::Fixed(1), Dim::Fixed(1)], Access::Write),
            ],
            body: KernelBody::Contract(Contraction {
                batch: vec![],
                summed: vec![Dim::Batch],
                m: Dim::Fixed(1),
                n: Dim::Fixed(1),
                k: Dim::Fixed(2),
                a: MatrixOperand {
                    buf: 0,
                    offset: var(0).mul(Index::Const(2)),
                    row_stride: Index::Const(1),
                    col_stride: Index::Const(1),
                    window: None,
                },
                b: MatrixOperand {
                    buf: 1,
                    offset: var(0).mul(Index::Const(2)),
                    row_stride: Index::Const(1),
                    col_stride: Index::Const(1),
                    window: None,
                },
                out: 2,
                epilogue: Expr::Acc,
                terms: Vec::new(),
            }),
        };
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![5.0, 6.0, 7.0, 8.0],
            vec![0.0],
        ];
        eval_kernel(&kernel, &mut bufs, 2).unwrap();
        // 1*5 + 2*6 + 3*7 + 4*8
        assert_eq!(bufs[2], [70.0]);
    }

    #[test]
    fn contract_multiplies_strided_operands_then_applies_the_epilogue() {
        // out = relu(a x bᵀ) with b stored as [n, k].
        let (m, n, k) = (2, 2, 3);
        let kernel = Kernel {
            name: "matmul_t".into(),
            buffers: vec![
                buffer("a", &[Dim::Fixed(m), Dim::Fixed(k)], Access::Read),
                buffer("b", &[Dim::Fixed(n), Dim::Fixed(k)], Access::Read),
                buffer("out", &[Dim::Fixed(m), Dim::Fixed(n)], Access::Write),
            ],
            body: KernelBody::Contract(Contraction {
                batch: vec![],
                summed: vec![],
                m: Dim::Fixed(m),
                n: Dim::Fixed(n),
                k: Dim::Fixed(k),
                a: MatrixOperand {
                    buf: 0,
                    offset: Index::Const(0),
                    row_stride: Index::Const(k as i64),
                    col_stride: Index::Const(1),
                    window: None,
                },
                b: MatrixOperand {
                    buf: 1,
                    offset: Index::Const(0),
                    row_stride: Index::Const(1),
                    col_stride: Index::Const(k as i64),
                    window: None,
                },
                out: 2,
                epilogue: Expr::unary(UnaryOp::Relu, Expr::Acc),
                terms: Vec::new(),
            }),
        };
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![1.0, 0.0, 0.0, -1.0, -1.0, -1.0],
            vec![0.0; 4],
        ];
        eval_kernel(&kernel, &mut bufs, 1).unwrap();
        assert_eq!(bufs[2], [1.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn select_evaluates_only_the_branch_it_takes() {
        // Concatenation: out[i] = i < 2 ? a[i] : b[i - 2]; each side is out of range for
        // the other half.
        let kernel = Kernel {
            name: "concat".into(),
            buffers: vec![
                buffer("a", &[Dim::Fixed(2)], Access::Read),
                buffer("b", &[Dim::Fixed(1)], Access::Read),
                buffer("out", &[Dim::Fixed(3)], Access::Write),
            ],
            body: KernelBody::Map {
                space: vec![Dim::Fixed(3)],
                stores: vec![Store {
                    buf: 2,
                    index: var(0),
                    value: Expr::Select {
                        cond: Box::new(Expr::binary(
                            BinaryOp::Lt,
                            Expr::IndexValue(var(0)),
                            Expr::Const(2.0),
                        )),
                        then: Box::new(Expr::load(0, var(0))),
                        otherwise: Box::new(Expr::load(1, var(0).add(Index::Const(-2)))),
                    },
                }],
            },
        };
        let mut bufs = vec![vec![1.0, 2.0], vec![3.0], vec![0.0; 3]];
        eval_kernel(&kernel, &mut bufs, 1).unwrap();
        assert_eq!(bufs[2], [1.0, 2.0, 3.0]);
    }

    #[test]
    fn i32_stores_truncate_and_saturate() {
        let kernel = Kernel {
            name: "to_int".into(),
            buffers: vec![
                buffer("x", &[Dim::Fixed(4)], Access::Read),
                BufferDecl {
                    name: "out".into(),
                    dtype: ScalarType::I32,
                    shape: vec![Dim::Fixed(4)],
                    access: Access::Write,
                },
            ],
            body: KernelBody::Map {
                space: vec![Dim::Fixed(4)],
                stores: vec![Store {
                    buf: 1,
                    index: var(0),
                    value: Expr::load(0, var(0)),
                }],
            },
        };
        let mut bufs = vec![vec![2.7, -2.7, 1e12, f64::NAN], vec![0.0; 4]];
        eval_kernel(&kernel, &mut bufs, 1).unwrap();
        assert_eq!(bufs[1], [2.0, -2.0, f64::from(i32::MAX), 0.0]);
    }

    #[test]
    fn out_of_range_load_is_an_error() {
        let mut kernel = bias_add(Dim::Fixed(2));
        if let KernelBody::Map { stores, .. } = &mut kernel.body {
            stores[0].value = Expr::load(1, var(1).add(Index::Const(1)));
        }
        let mut bufs = vec![vec![0.0; 6], vec![0.0; 3], vec![0.0; 6]];
        let e = eval_kernel(&kernel, &mut bufs, 1).unwrap_err();
        assert!(
            e.message.contains("index 3 out of range for buffer `bias`"),
            "{e}"
        );
    }

    #[test]
    fn division_by_zero_in_an_index_is_an_error() {
        let mut kernel = bias_add(Dim::Fixed(2));
        if let KernelBody::Map { stores, .. } = &mut kernel.body {
            stores[0].value = Expr::load(1, Index::Div(Box::new(var(1)), 0));
        }
        let mut bufs = vec![vec![0.0; 6], vec![0.0; 3], vec![0.0; 6]];
        let e = eval_kernel(&kernel, &mut bufs, 1).unwrap_err();
        assert!(e.message.contains("non-positive"), "{e}");
    }

    #[test]
    fn wrongly_sized_buffer_is_an_error() {
        let mut bufs = vec![vec![0.0; 6], vec![0.0; 3], vec![0.0; 5]];
        let e = eval_kernel(&bias_add(Dim::Batch), &mut bufs, 2).unwrap_err();
        assert!(e.message.contains("holds 5 elements"), "{e}");
    }

    /// `out[i, j] = uniform(seed, flat index, step[0])` over `[rows, 5]`.
    fn uniform_map(rows: Dim, seed: u64) -> Kernel {
        let shape = [rows, Dim::Fixed(5)];
        Kernel {
            name: "uniform".into(),
            buffers: vec![
                buffer("step", &[], Access::Read),
                buffer("out", &shape, Access::Write),
            ],
            body: KernelBody::Map {
                space: shape.to_vec(),
                stores: vec![Store {
                    buf: 1,
                    index: row_major(&shape),
                    value: Expr::Uniform {
                        seed,
                        index: row_major(&shape),
                        step: Box::new(Expr::load(0, Index::Const(0))),
                    },
                }],
            },
        }
    }

    #[test]
    fn uniform_draws_philox_by_flat_index_and_step() {
        let mut bufs = vec![vec![3.0], vec![0.0; 15]];
        eval_kernel(&uniform_map(Dim::Batch, 42), &mut bufs, 3).unwrap();
        let want: Vec<f64> = (0..15)
            .map(|i| f64::from(rng::uniform_at(42, i, 3)))
            .collect();
        assert_eq!(bufs[1], want);
    }

    #[test]
    fn uniform_converts_the_step_like_the_backends() {
        // 2.7 truncates to 2; a negative or NaN step is step 0.
        for (step, word) in [(2.7, 2), (-5.0, 0), (f64::NAN, 0)] {
            let mut bufs = vec![vec![step], vec![0.0; 5]];
            eval_kernel(&uniform_map(Dim::Fixed(1), 7), &mut bufs, 1).unwrap();
            assert_eq!(bufs[1][4], f64::from(rng::uniform_at(7, 4, word)), "{step}");
        }
    }

    #[test]
    fn uniform_with_a_negative_index_is_an_error() {
        let mut kernel = uniform_map(Dim::Fixed(1), 7);
        if let KernelBody::Map { stores, .. } = &mut kernel.body {
            stores[0].value = Expr::Uniform {
                seed: 7,
                index: var(1).add(Index::Const(-3)),
                step: Box::new(Expr::Const(0.0)),
            };
        }
        let mut bufs = vec![vec![0.0], vec![0.0; 5]];
        let e = eval_kernel(&kernel, &mut bufs, 1).unwrap_err();
        assert!(
            e.message.contains("negative random element index -3"),
            "{e}"
        );
    }

    #[test]
    fn uniform_index_and_step_are_validated() {
        let mut kernel = uniform_map(Dim::Fixed(1), 7);
        if let KernelBody::Map { stores, .. } = &mut kernel.body {
            stores[0].value = Expr::Uniform {
                seed: 7,
                index: var(2),
                step: Box::new(Expr::Const(0.0)),
            };
        }
        let e = kernel.validate().unwrap_err();
        assert!(e.message.contains("loop variable 2 out of scope"), "{e}");
        if let KernelBody::Map { stores, .. } = &mut kernel.body {
            stores[0].value = Expr::Uniform {
                seed: 7,
                index: var(0),
                step: Box::new(Expr::load(9, Index::Const(0))),
            };
        }
        let e = kernel.validate().unwrap_err();
        assert!(e.message.contains("undeclared buffer slot 9"), "{e}");
    }

    #[test]
    fn nested_reductions_fold_each_row_inside_a_map() {
        let kernel = crate::test_fixtures::nested_softmax();
        let x: Vec<f64> = (0..20).map(|i| f64::from(i % 7) - 3.0).collect();
        let mut bufs = vec![x.clone(), vec![0.0; 20]];
        eval_kernel(&kernel, &mut bufs, 2).unwrap();
        for row in x.chunks(10).zip(bufs[1].chunks(10)) {
            let (x, out) = row;
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
            for (v, o) in x.iter().zip(out) {
                assert!(((v - m).exp() / s - o).abs() < 1e-15, "{o}");
            }
        }
    }

    #[test]
    fn nested_reductions_are_scoped() {
        let mut kernel = crate::test_fixtures::nested_softmax();
        let KernelBody::Map { stores, .. } = &mut kernel.body else {
            unreachable!()
        };
        // The nested reduction's variable is 2; 3 is out of its scope.
        stores[0].value = Expr::Reduce {
            op: ReduceOp::Sum,
            extent: vec![Dim::Fixed(10)],
            value: Box::new(Expr::load(0, var(3))),
        };
        let e = kernel.validate().unwrap_err();
        assert!(
            e.message
                .contains("loop variable 3 out of scope (3 in scope)"),
            "{e}"
        );
        let mut kernel = crate::test_fixtures::dense_relu();
        let KernelBody::Contract(c) = &mut kernel.body else {
            unreachable!()
        };
        c.epilogue = Expr::Reduce {
            op: ReduceOp::Max,
            extent: vec![Dim::Fixed(2)],
            value: Box::new(Expr::Acc),
        };
        let e = kernel.validate().unwrap_err();
        assert!(e.message.contains("`acc` inside a nested reduction"), "{e}");
    }

    #[test]
    fn a_gather_reads_rows_by_id_and_zeros_outside_the_table() {
        let k = crate::parse::parse_kernel(
            "kernel lookup map [4, 2] (t: f32[3, 2] r, ids: i32[4] r, y: f32[4, 2] w) {
               y[i0 * 2 + i1] = gather(t, ids[i0], i1)
             }",
        )
        .expect("parses");
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![2.0, -1.0, 0.0, 3.0],
            vec![0.0; 8],
        ];
        eval_kernel(&k, &mut bufs, 1).unwrap();
        assert_eq!(bufs[2], [5.0, 6.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn a_scatter_add_sums_repeated_ids_and_skips_others() {
        let k = crate::parse::parse_kernel(
            "kernel grad scatter_add over [4] (ids: i32[4] r, g: f32[4, 2] r, t: f32[3, 2] w) {
               t[ids[i0], i1] += g[i0 * 2 + i1]
             }",
        )
        .expect("parses");
        let mut bufs = vec![
            vec![2.0, 5.0, 2.0, 0.0],
            vec![1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 0.5, 0.25],
            vec![9.0; 6],
        ];
        eval_kernel(&k, &mut bufs, 1).unwrap();
        assert_eq!(bufs[2], [0.5, 0.25, 0.0, 0.0, 4.0, 6.0]);
    }

    #[test]
    fn a_term_adds_its_own_product_over_its_own_depth() {
        // y = h w + x v: h [2, 2], w [2, 3], x [2, 1], v [1, 3].
        let k = crate::parse::parse_kernel(
            "kernel step contract batch [] m batch n 3 k 2 terms [1] (h: f32[batch, 2] r, w: f32[2, 3] r, y: f32[batch, 3] w, x: f32[batch, 1] r, v: f32[1, 3] r) {
  a = h[0 + row * 2 + col * 1]
  b = w[0 + row * 3 + col * 1]
  a1 = x[0 + row * 1 + col * 1]
  b1 = v[0 + row * 3 + col * 1]
  acc = sum_k a[m, k] * b[k, n] + sum_k a1[m, k] * b1[k, n]
  y[row-major] = (acc + 0.5)
}",
        )
        .expect("parses");
        let mut bufs = vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![1.0, 0.0, 2.0, 0.0, 1.0, 1.0],
            vec![0.0; 6],
            vec![10.0, 20.0],
            vec![1.0, 2.0, 3.0],
        ];
        eval_kernel(&k, &mut bufs, 2).unwrap();
        // Row 0: [1, 2] w = [1, 2, 4], + 10 v = [10, 20, 30]; row 1: [3, 4] w = [3, 4,
        // 10], + 20 v.
        assert_eq!(bufs[2], vec![11.5, 22.5, 34.5, 23.5, 44.5, 70.5]);
    }
}
