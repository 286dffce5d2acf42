//! Proof that a kernel's memory accesses stay inside its buffers at a given batch size.
//!
//! Generated code indexes raw pointers, so before a kernel runs at batch size `b`,
//! [`check_bounds`] proves for every point of its iteration space that every load and
//! store lands inside the element range of the slot it addresses, and that a
//! contraction's `gemm` operands and output lie inside theirs. The proof is interval
//! arithmetic in `i128` over the loop extents at `b`:
//!
//! - `Var(v)` ranges over `[0, extent_v - 1]`, `Const(c)` is `[c, c]`, `Batch` is `[b, b]`;
//! - `Add` adds the bounds, `Mul` takes the least and greatest of the four products;
//! - `Div(a, d)` is floor division (the IR's, the CPU's and the GPU's semantics), monotone,
//!   so `[floor(lo / d), floor(hi / d)]`;
//! - `Rem(a, d)` is the Euclidean remainder: `a` itself when `a` already lies in
//!   `[0, d - 1]`, else `[0, d - 1]` (the Euclidean remainder is never negative).
//!
//! Every intermediate range must fit in `i64`, the width both emitters compute indices
//! in, so the bounds are those of the code that runs. The ranges are conservative (two
//! occurrences of one variable are taken as independent), so a kernel may be refused
//! whose accesses are in fact in range; the compiler writes its indices so that they are
//! provably in range (a masked load reads a wrapped, in-range element, never an
//! out-of-range one guarded by a select: both arms of a select may be evaluated).
//!
//! An access is checked wherever it may run: every load of an expression, whichever arm
//! of a select it is in. Code that runs over an empty space (an extent of 0 at this batch
//! size, a nested reduction over nothing) never runs and is not checked.
//!
//! A gather ([`Expr::Gather`]) and a scatter-add ([`KernelBody::ScatterAdd`]) address a
//! row of a fixed `[rows, cols]` table chosen by an id read from memory: no range of the
//! id is known here, so the id is checked by the generated code's own mask when the kernel
//! runs (an id outside `0..rows` reads `0.0` or adds nothing). What is proven here is the
//! rest: the load of the id, a column inside `0..cols`, the table's slot holding `rows x
//! cols` elements, and the scatter-add's values.
//!
//! A contraction's operand `(b..., s..., row, col)` lies at `offset + row * row_stride +
//! col * col_stride` for `row < m`, `col < k` (`a`) or `row < k`, `col < n` (`b`), over
//! every batch and summed index (a window operand anywhere in its image from `offset`);
//! its output is contiguous `[batch..., m, n]`, so the slot needs at least that many
//! elements.

use crate::ir::{Contraction, Dim, Expr, Index, Kernel, KernelBody, KernelError, ScatterAdd};
use crate::print::index_text;

/// A closed range of integers `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub lo: i128,
    pub hi: i128,
}

impl Range {
    fn point(v: i128) -> Range {
        Range { lo: v, hi: v }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

/// Checks that every memory access of `kernel` (each part's) stays inside its slot at
/// batch size `batch` (see the module docs). The kernel must have passed
/// [`Kernel::validate`].
pub fn check_bounds(kernel: &Kernel, batch: u64) -> Result<(), KernelError> {
    let checker = Checker {
        kernel,
        batch: i128::from(batch),
    };
    let parts = kernel.body.bodies();
    for (i, body) in parts.iter().enumerate() {
        let part = (parts.len() > 1).then_some(i);
        checker.body(body).map_err(|message| KernelError {
            kernel: kernel.name.clone(),
            message: match part {
                Some(i) => format!("at batch size {batch}, part {i}: {message}"),
                None => format!("at batch size {batch}: {message}"),
            },
        })?;
    }
    Ok(())
}

/// The range `ix` takes when loop variable `v` ranges over `vars[v]` and the batch size
/// is `batch`; an error if some subexpression may leave `i64`, or uses a variable out of
/// scope or a non-positive divisor (which [`Kernel::validate`] and the emitters refuse).
pub fn index_range(ix: &Index, vars: &[Range], batch: i128) -> Result<Range, String> {
    let r = match ix {
        Index::Var(v) => *vars
            .get(*v)
            .ok_or_else(|| format!("loop variable {v} is out of scope"))?,
        Index::Const(c) => Range::point(i128::from(*c)),
        Index::Batch => Range::point(batch),
        Index::Add(a, b) => {
            let (a, b) = (index_range(a, vars, batch)?, index_range(b, vars, batch)?);
            Range {
                lo: a.lo + b.lo,
                hi: a.hi + b.hi,
            }
        }
        Index::Mul(a, b) => {
            let (a, b) = (index_range(a, vars, batch)?, index_range(b, vars, batch)?);
            // Both fit in i64 (checked below), so every product fits in i128.
            let products = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi];
            Range {
                lo: products.into_iter().min().unwrap_or(0),
                hi: products.into_iter().max().unwrap_or(0),
            }
        }
        Index::Div(a, d) | Index::Rem(a, d) => {
            if *d <= 0 {
                return Err(format!("index divided by non-positive constant {d}"));
            }
            let (a, d) = (index_range(a, vars, batch)?, i128::from(*d));
            match ix {
                Index::Div(..) => Range {
                    lo: a.lo.div_euclid(d),
                    hi: a.hi.div_euclid(d),
                },
                _ if a.lo >= 0 && a.hi < d => a,
                _ => Range { lo: 0, hi: d - 1 },
            }
        }
    };
    let fits = |v: i128| i64::try_from(v).is_ok();
    if !fits(r.lo) || !fits(r.hi) {
        return Err(format!(
            "index `{}` ranges over {r}, beyond 64-bit integers",
            index_text(ix)
        ));
    }
    Ok(r)
}

/// The ranges of the variables of a space at `batch`, or None if the space is empty (a
/// body over it never runs).
pub(crate) fn space_ranges(dims: &[Dim], batch: i128) -> Option<Vec<Range>> {
    dims.iter()
        .map(|d| {
            let n = match d {
                Dim::Fixed(n) => i128::from(*n),
                Dim::Batch => batch,
            };
            (n > 0).then_some(Range { lo: 0, hi: n - 1 })
        })
        .collect()
}

/// A read of memory in an expression.
pub(crate) enum Read<'e> {
    /// An element of slot `buf`: a load.
    Element { buf: usize, index: &'e Index },
    /// A gather's id, an element of slot `buf`.
    Id { buf: usize, index: &'e Index },
    /// A gather's row of table `table` (the row is data), at column `col`.
    TableRow { table: usize, col: &'e Index },
}

/// Calls `visit` on every read of `e` with the ranges of the variables in scope: `vars`,
/// and a nested reduction's own while inside it (a reduction over nothing reads
/// nothing). `vars` is as it was on return.
pub(crate) fn visit_reads<E, F>(
    e: &Expr,
    vars: &mut Vec<Range>,
    batch: i128,
    visit: &mut F,
) -> Result<(), E>
where
    F: FnMut(Read<'_>, &[Range]) -> Result<(), E>,
{
    let mut walk = |e: &Expr, vars: &mut Vec<Range>| visit_reads(e, vars, batch, &mut *visit);
    match e {
        Expr::Load { buf, index } => visit(Read::Element { buf: *buf, index }, vars),
        Expr::Gather {
            table,
            ids,
            id_index,
            col,
        } => {
            visit(
                Read::Id {
                    buf: *ids,
                    index: id_index,
                },
                vars,
            )?;
            visit(Read::TableRow { table: *table, col }, vars)
        }
        // Not memory accesses: an index as a number, and a random draw's counter.
        Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => Ok(()),
        Expr::Uniform { step, .. } => walk(step, vars),
        Expr::Unary(_, x) => walk(x, vars),
        Expr::Binary(_, a, b) => {
            walk(a, vars)?;
            walk(b, vars)
        }
        Expr::Select {
            cond,
            then,
            otherwise,
        } => {
            walk(cond, vars)?;
            walk(then, vars)?;
            walk(otherwise, vars)
        }
        Expr::Reduce { extent, value, .. } => {
            let Some(inner) = space_ranges(extent, batch) else {
                return Ok(());
            };
            let scope = vars.len();
            vars.extend(inner);
            let result = walk(value, vars);
            vars.truncate(scope);
            result
        }
    }
}

struct Checker<'k> {
    kernel: &'k Kernel,
    batch: i128,
}

impl Checker<'_> {
    fn space(&self, dims: &[Dim]) -> Option<Vec<Range>> {
        space_ranges(dims, self.batch)
    }

    /// Elements of slot `buf` at this batch size.
    fn elements(&self, buf: usize) -> Result<(i128, &str), String> {
        let decl = self
            .kernel
            .buffers
            .get(buf)
            .ok_or_else(|| format!("undeclared buffer slot {buf}"))?;
        let n = decl.shape.iter().try_fold(1i128, |acc, d| {
            acc.checked_mul(match d {
                Dim::Fixed(n) => i128::from(*n),
                Dim::Batch => self.batch,
            })
        });
        let n = n.ok_or_else(|| format!("the size of `{}` overflows", decl.name))?;
        Ok((n, &decl.name))
    }

    /// Checks that `range`, the elements an access `what` of slot `buf` touches, lies
    /// inside the slot.
    /// `range` inside buffer `buf`; the error's words (`what` and `text`) are made only
    /// for an error: a check of a whole model formats nothing.
    fn inside(
        &self,
        what: impl FnOnce() -> String,
        buf: usize,
        range: Range,
        text: impl FnOnce() -> String,
    ) -> Result<(), String> {
        let (n, name) = self.elements(buf)?;
        if range.lo < 0 || range.hi >= n {
            return Err(format!(
                "{} `{name}` at {} reaches elements {range}, outside its {n} element(s)",
                what(),
                text()
            ));
        }
        Ok(())
    }

    fn access(&self, what: &str, buf: usize, ix: &Index, vars: &[Range]) -> Result<(), String> {
        let range = index_range(ix, vars, self.batch)?;
        self.inside(
            || what.to_string(),
            buf,
            range,
            || format!("`{}`", index_text(ix)),
        )
    }

    fn body(&self, body: &KernelBody) -> Result<(), String> {
        match body {
            KernelBody::Map { space, stores } => {
                let Some(vars) = self.space(space) else {
                    return Ok(());
                };
                for s in stores {
                    self.access("store to", s.buf, &s.index, &vars)?;
                    self.expr(&s.value, &mut vars.clone())?;
                }
            }
            KernelBody::Reduce {
                space,
                reduce,
                value,
                out,
                ..
            } => {
                let Some(vars) = self.space(space) else {
                    return Ok(());
                };
                self.access("store to", out.buf, &out.index, &vars)?;
                self.expr(&out.value, &mut vars.clone())?;
                if let Some(reduced) = self.space(reduce) {
                    self.expr(value, &mut [vars, reduced].concat())?;
                }
            }
            KernelBody::Contract(c) => self.contraction(c)?,
            KernelBody::ScatterAdd(s) => self.scatter_add(s)?,
            KernelBody::Parts(_) => return Err("nested parts".into()),
        }
        Ok(())
    }

    /// Every load of `e`, with `vars` in scope (restored on return).
    fn expr(&self, e: &Expr, vars: &mut Vec<Range>) -> Result<(), String> {
        visit_reads(e, vars, self.batch, &mut |read, vars| match read {
            Read::Element { buf, index } => self.access("load from", buf, index, vars),
            Read::Id { buf, index } => self.access("load of an id from", buf, index, vars),
            Read::TableRow { table, col } => self.table(table, col, vars),
        })
    }

    /// Checks a table access at column `col`: the column inside the table's columns and
    /// the slot holding the whole table. The row is the id's, masked when the code runs.
    fn table(&self, table: usize, col: &Index, vars: &[Range]) -> Result<(), String> {
        let (rows, cols) = self
            .kernel
            .table_extent(table)
            .ok_or_else(|| format!("slot {table} is not a fixed [rows, cols] table"))?;
        let range = index_range(col, vars, self.batch)?;
        let (n, name) = self.elements(table)?;
        if range.lo < 0 || range.hi >= i128::from(cols) {
            return Err(format!(
                "column `{}` of table `{name}` ranges over {range}, outside its {cols} column(s)",
                index_text(col)
            ));
        }
        if n < i128::from(rows) * i128::from(cols) {
            return Err(format!(
                "table `{name}` of {n} element(s) cannot hold {rows} x {cols}"
            ));
        }
        Ok(())
    }

    fn scatter_add(&self, s: &ScatterAdd) -> Result<(), String> {
        let (rows, cols) = self
            .kernel
            .table_extent(s.out)
            .ok_or("a scatter-add's output is not a fixed [rows, cols] table")?;
        // Zeroing writes the whole table, whatever the points.
        if rows > 0 && cols > 0 {
            self.table(s.out, &Index::Const(cols as i64 - 1), &[])?;
        }
        let Some(mut vars) = self.space(&s.value_space(cols)) else {
            return Ok(());
        };
        self.access("load of an id from", s.ids, &s.id_index, &vars)?;
        self.expr(&s.value, &mut vars)
    }

    fn contraction(&self, c: &Contraction) -> Result<(), String> {
        let Some(epilogue_vars) = self.space(&c.space()) else {
            return Ok(());
        };
        // The output: contiguous `[batch..., m, n]`, the product written there first.
        let points = epilogue_vars
            .iter()
            .try_fold(1i128, |acc, r| acc.checked_mul(r.hi + 1))
            .ok_or("the output's size overflows")?;
        self.inside(
            || "the product written to".into(),
            c.out,
            Range {
                lo: 0,
                hi: points - 1,
            },
            || "its contiguous [batch..., m, n] layout".into(),
        )?;
        self.expr(&c.epilogue, &mut epilogue_vars.clone())?;
        // The operands, over every batch and summed index: none are read when the depth
        // or a summed extent is 0.
        let operand_dims = [c.batch.as_slice(), &c.summed].concat();
        let Some(operand_vars) = self.space(&operand_dims) else {
            return Ok(());
        };
        let mut operands = Vec::new();
        for (term, (depth, a, b)) in c.products().enumerate() {
            let Some(mnk) = self.space(&[c.m, c.n, depth]) else {
                continue;
            };
            let (m, n, k) = (mnk[0], mnk[1], mnk[2]);
            let side = |side: &str| match term {
                0 => format!("{side} operand"),
                t => format!("{side} operand of term {t}"),
            };
            operands.push((side("left"), a, m, k));
            operands.push((side("right"), b, k, n));
        }
        for (name, op, rows, cols) in operands {
            let offset = index_range(&op.offset, &operand_vars, self.batch)?;
            if let Some(w) = op.window.as_deref() {
                // Every element the window reads lies in the image from the offset.
                let len = w.image_len().ok_or("the window's image overflows")? as i128;
                let range = Range {
                    lo: offset.lo,
                    hi: offset.hi + len - 1,
                };
                let text = || format!("offset `{}`, a window over {w:?}", index_text(&op.offset));
                self.inside(|| format!("the {name}"), op.buf, range, text)?;
                continue;
            }
            let rs = index_range(&op.row_stride, &operand_vars, self.batch)?;
            let cs = index_range(&op.col_stride, &operand_vars, self.batch)?;
            let reach = |extent: Range, stride: Range| {
                let products = [
                    extent.lo * stride.lo,
                    extent.lo * stride.hi,
                    extent.hi * stride.lo,
                    extent.hi * stride.hi,
                ];
                Range {
                    lo: products.into_iter().min().unwrap_or(0),
                    hi: products.into_iter().max().unwrap_or(0),
                }
            };
            let (r, col) = (reach(rows, rs), reach(cols, cs));
            let range = Range {
                lo: offset.lo + r.lo + col.lo,
                hi: offset.hi + r.hi + col.hi,
            };
            let text = || {
                format!(
                    "offset `{}`, row stride `{}`, column stride `{}` ({} x {} matrix)",
                    index_text(&op.offset),
                    index_text(&op.row_stride),
                    index_text(&op.col_stride),
                    rows.hi + 1,
                    cols.hi + 1
                )
            };
            self.inside(|| format!("the {name}"), op.buf, range, text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
