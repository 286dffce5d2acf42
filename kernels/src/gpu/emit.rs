//! The walk from one [`Kernel`] to its WGSL module: the bindings, the entry point of its
//! [`Strategy`], index arithmetic and scalar expressions (the conventions are in the
//! parent module's docs).

use super::{Strategy, TILE, WORKGROUP_SIZE, body_strategy, strategy};
use crate::hoist::{self, Invariant};
use crate::ir::{
    Access, BinaryOp, Contraction, Dim, Expr, ImageWindow, Index, Kernel, KernelBody, KernelError,
    ReduceOp, ScalarType, ScatterAdd, Store, UnaryOp,
};
use crate::rng;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

type EmitResult<T> = Result<T, KernelError>;

/// WGSL's `erf_f`: [`crate::erf`]'s algorithm, with its coefficients written in.
fn erf_source() -> String {
    use crate::erf::{LARGE, SATURATION, SMALL, SPLIT};
    let horner = |var: &str, coeffs: &[f32]| {
        let mut text = format!("{:?}", coeffs[0]);
        for k in &coeffs[1..] {
            text = format!("({text}) * {var} + {k:?}");
        }
        text
    };
    format!(
        "// erf as crate::erf: an odd polynomial below 1, 1 - exp(-a^2) Q(1/a) above.\n\
         fn erf_f(x: f32) -> f32 {{\n    \
             let a = min(abs(x), {SATURATION:?});\n    \
             let z = a * a;\n    \
             let small = a * ({});\n    \
             let b = max(a, {SPLIT:?});\n    \
             let t = 1.0 / b;\n    \
             let large = 1.0 - exp(-(b * b)) * ({});\n    \
             let r = select(large, small, a < {SPLIT:?});\n    \
             return select(select(r, -r, x < 0.0), x, x != x);\n\
         }}\n",
        horner("z", &SMALL),
        horner("t", &LARGE),
    )
}

/// A WGSL function the body calls, written once before the entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Helper {
    DivFloor,
    RemEuclid,
    MaxNan,
    MinNan,
    Tanh,
    Erf,
    Sigmoid,
    Pow,
    ToI32,
    StepWord,
    Philox,
}

impl Helper {
    fn source(self) -> &'static str {
        match self {
            Helper::DivFloor => {
                "// Floor division by a positive constant.\n\
                 fn div_floor(a: i32, d: i32) -> i32 {\n    \
                     let q = a / d;\n    \
                     return select(q, q - 1, a - q * d < 0);\n\
                 }\n"
            }
            Helper::RemEuclid => {
                "// Euclidean remainder by a positive constant.\n\
                 fn rem_euclid(a: i32, d: i32) -> i32 {\n    \
                     let r = a % d;\n    \
                     return select(r, r + d, r < 0);\n\
                 }\n"
            }
            Helper::MaxNan => {
                "// max that propagates NaN.\n\
                 fn max_nan(a: f32, b: f32) -> f32 {\n    \
                     return select(max(a, b), a + b, a != a || b != b);\n\
                 }\n"
            }
            Helper::MinNan => {
                "// min that propagates NaN.\n\
                 fn min_nan(a: f32, b: f32) -> f32 {\n    \
                     return select(min(a, b), a + b, a != a || b != b);\n\
                 }\n"
            }
            Helper::Tanh => {
                "// tanh as Cephes' tanhf: a polynomial near 0, exp beyond.\n\
                 fn tanh_f(x: f32) -> f32 {\n    \
                     let z = x * x;\n    \
                     let p = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z\n        \
                         + 1.33314422036e-1) * z - 3.33332819422e-1) * z * x + x;\n    \
                     let big = 1.0 - 2.0 / (exp(2.0 * min(abs(x), 44.0)) + 1.0);\n    \
                     return select(p, sign(x) * big, abs(x) >= 0.625);\n\
                 }\n"
            }
            // Written from the shared coefficients by `erf_source`.
            Helper::Erf => "",
            Helper::Sigmoid => {
                "// sigmoid without overflow: e / (1 + e) with e = exp(-|x|), flipped for x >= 0.\n\
                 fn sigmoid_f(x: f32) -> f32 {\n    \
                     let e = exp(-abs(x));\n    \
                     let s = 1.0 / (1.0 + e);\n    \
                     return select(e * s, s, x >= 0.0);\n\
                 }\n"
            }
            Helper::Pow => {
                "// a ** b as exp(b * log|a|), with C's special cases.\n\
                 fn pow_f(a: f32, b: f32) -> f32 {\n    \
                     if (b == 0.0 || a == 1.0 || (a == -1.0 && abs(b) > 3.4028235e38)) {\n        \
                         return 1.0;\n    \
                     }\n    \
                     let r = exp(b * log(abs(a)));\n    \
                     if (a < 0.0) {\n        \
                         if (floor(b) != b) {\n            \
                             return sqrt(a); // NaN\n        \
                         }\n        \
                         return select(r, -r, b - 2.0 * floor(b * 0.5) == 1.0);\n    \
                     }\n    \
                     return r;\n\
                 }\n"
            }
            Helper::ToI32 => {
                "// f32 -> i32 truncating and saturating, NaN -> 0.\n\
                 fn to_i32(x: f32) -> i32 {\n    \
                     let c = clamp(x, -2147483648.0, 2147483520.0);\n    \
                     return select(select(i32(c), 2147483647, x >= 2147483648.0), 0, x != x);\n\
                 }\n"
            }
            Helper::StepWord => {
                "// f32 -> u32 truncating and saturating, NaN and negatives -> 0 (rng::step_word).\n\
                 fn step_word(x: f32) -> u32 {\n    \
                     let c = clamp(x, 0.0, 4294967040.0);\n    \
                     return select(select(u32(c), 4294967295u, x >= 4294967296.0), 0u, x != x);\n\
                 }\n"
            }
            // WGSL has no 64-bit integers: the high word of the product comes from 16-bit
            // limbs; the low word is the wrapping u32 product.
            Helper::Philox => {
                "// The 64-bit product a * b as (high word, low word).\n\
                 fn mul_hi_lo(a: u32, b: u32) -> vec2<u32> {\n    \
                     let a0 = a & 0xffffu;\n    \
                     let a1 = a >> 16u;\n    \
                     let b0 = b & 0xffffu;\n    \
                     let b1 = b >> 16u;\n    \
                     let cross0 = a0 * b1;\n    \
                     let cross1 = a1 * b0;\n    \
                     let mid = ((a0 * b0) >> 16u) + (cross0 & 0xffffu) + (cross1 & 0xffffu);\n    \
                     let hi = a1 * b1 + (cross0 >> 16u) + (cross1 >> 16u) + (mid >> 16u);\n    \
                     return vec2<u32>(hi, a * b);\n\
                 }\n\
                 \n\
                 // Philox4x32-10 (rng::philox4x32), then rng::uniform_f32 of word 0.\n\
                 fn philox_uniform(counter: vec4<u32>, key: vec2<u32>) -> f32 {\n    \
                     var c = counter;\n    \
                     var k = key;\n    \
                     for (var r: u32 = 0u; r < 10u; r = r + 1u) {\n        \
                         if (r > 0u) {\n            \
                             k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);\n        \
                         }\n        \
                         let p0 = mul_hi_lo(0xd2511f53u, c.x);\n        \
                         let p1 = mul_hi_lo(0xcd9e8d57u, c.z);\n        \
                         c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);\n    \
                     }\n    \
                     return f32(c.x >> 8u) * 5.9604645e-8;\n\
                 }\n"
            }
        }
    }
}

/// Emits `kernel`'s module (the kernel is already validated).
pub(super) fn emit_module(kernel: &Kernel) -> EmitResult<String> {
    check_gpu_constraints(kernel)?;
    let mut w = Writer {
        kernel,
        helpers: BTreeSet::new(),
        loads: BTreeSet::new(),
        ids: BTreeSet::new(),
        stores: BTreeSet::new(),
        body: String::new(),
        indent: 1,
        temps: 0,
        vars: 0,
        memo: Memo::default(),
        wg: "wg".to_string(),
        strategies: BTreeSet::new(),
    };
    match &kernel.body {
        KernelBody::Parts(parts) => w.parts(parts)?,
        body => w.body(body)?,
    }
    Ok(w.finish(strategy(kernel)))
}

impl Writer<'_> {
    /// One body (not parts) with its strategy, on the workgroups numbered from `self.wg`.
    fn body(&mut self, body: &KernelBody) -> EmitResult<()> {
        let strategy = body_strategy(body);
        self.strategies.insert(strategy);
        match (body, strategy) {
            (KernelBody::Parts(_), _) => return Err(self.error("nested parts")),
            (KernelBody::Map { space, stores }, _) => self.map(space, stores)?,
            (
                KernelBody::Reduce {
                    space,
                    reduce,
                    op,
                    value,
                    out,
                },
                Strategy::ReduceLoop,
            ) => self.reduce_loop(space, reduce, *op, value, out)?,
            (
                KernelBody::Reduce {
                    space,
                    reduce,
                    op,
                    value,
                    out,
                },
                _,
            ) => self.reduce_tree(space, reduce, *op, value, out)?,
            (KernelBody::Contract(c), _) => self.contract(c)?,
            (KernelBody::ScatterAdd(s), _) => self.scatter_add(s)?,
        }
        Ok(())
    }

    /// The parts of a kernel: part `i` runs on the next `workgroups(part i)` workgroups
    /// of the grid, renumbered from 0 (see the parent module's docs).
    fn parts(&mut self, parts: &[KernelBody]) -> EmitResult<()> {
        let mut ends: Vec<String> = Vec::new();
        for part in parts {
            let count = self.workgroup_count(part)?;
            let end = match ends.last() {
                Some(prev) => format!("{prev} + {count}"),
                None => count,
            };
            let name = self.bind("part_end", &end);
            ends.push(name);
        }
        for (i, part) in parts.iter().enumerate() {
            let open = if i == 0 { "if" } else { "} else if" };
            self.line(&format!("{open} (wg < {}) {{", ends[i]));
            self.indent += 1;
            self.wg = match i {
                0 => "wg".to_string(),
                _ => self.bind("wg", &format!("wg - {}", ends[i - 1])),
            };
            self.memo = Memo::default();
            self.vars = 0;
            self.body(part)?;
            self.indent -= 1;
        }
        self.line("}");
        Ok(())
    }

    /// The `u32` expression of the number of workgroups `body` needs (as
    /// [`super::workgroups`]).
    fn workgroup_count(&mut self, body: &KernelBody) -> EmitResult<String> {
        Ok(match (body, body_strategy(body)) {
            (KernelBody::Map { space, .. }, _)
            | (KernelBody::Reduce { space, .. }, Strategy::ReduceLoop) => {
                let n = self.count(space);
                format!("(({n} + {}u) / {WORKGROUP_SIZE}u)", WORKGROUP_SIZE - 1)
            }
            (KernelBody::Reduce { space, .. }, _) => self.count(space),
            (KernelBody::Contract(c), _) => {
                let batches = self.count(&c.batch);
                let tiles = |d: Dim| format!("(({} + {}u) / {TILE}u)", extent_u32(d), TILE - 1);
                format!("({batches} * {} * {})", tiles(c.m), tiles(c.n))
            }
            (KernelBody::ScatterAdd(s), _) => {
                let (_, cols) = self.table(s.out)?;
                format!("{}u", (cols as u32).div_ceil(WORKGROUP_SIZE))
            }
            (KernelBody::Parts(_), _) => return Err(self.error("nested parts")),
        })
    }
}

/// The constraints this emitter adds to [`Kernel::validate`] (see the module docs).
fn check_gpu_constraints(kernel: &Kernel) -> EmitResult<()> {
    let err = |message: String| KernelError {
        kernel: kernel.name.clone(),
        message,
    };
    for body in kernel.body.bodies() {
        let KernelBody::Contract(c) = body else {
            continue;
        };
        for op in c.products().flat_map(|(_, a, b)| [a, b]) {
            if kernel.buffers[op.buf].dtype != ScalarType::F32 {
                return Err(err(format!(
                    "contraction operand `{}` is not f32",
                    kernel.buffers[op.buf].name
                )));
            }
        }
    }
    Ok(())
}

/// Names already bound at the current point, shared by identical index expressions,
/// loads and invariant subexpressions computed before a loop.
#[derive(Clone, Default)]
struct Memo {
    indices: HashMap<Index, String>,
    loads: HashMap<(usize, Index), String>,
    /// Hoisted invariants, by canonical form (few, so a list).
    invariants: Vec<(Expr, String)>,
}

impl Memo {
    fn invariant(&self, canonical: &Expr) -> Option<&str> {
        self.invariants
            .iter()
            .find(|(e, _)| e == canonical)
            .map(|(_, name)| name.as_str())
    }
}

struct Writer<'k> {
    kernel: &'k Kernel,
    helpers: BTreeSet<Helper>,
    /// Slots read and written, for the accessor functions (`ids`: read as `i32` ids).
    loads: BTreeSet<usize>,
    ids: BTreeSet<usize>,
    stores: BTreeSet<usize>,
    body: String,
    indent: usize,
    /// Counter of `let` names.
    temps: usize,
    /// Loop variables in scope (`x0..x{vars}`).
    vars: usize,
    memo: Memo,
    /// The `u32` name of the linear workgroup index the current body counts from.
    wg: String,
    /// The strategies of the bodies emitted, for the workgroup memory they need.
    strategies: BTreeSet<Strategy>,
}

impl Writer<'_> {
    fn error(&self, message: impl Into<String>) -> KernelError {
        KernelError {
            kernel: self.kernel.name.clone(),
            message: message.into(),
        }
    }

    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.body.push_str("    ");
        }
        self.body.push_str(text);
        self.body.push('\n');
    }

    /// Binds `value` to a fresh name with prefix `prefix` and returns the name.
    fn bind(&mut self, prefix: &str, value: &str) -> String {
        let mut name = format!("{prefix}{}", self.temps);
        self.temps += 1;
        // `i` + 32 would shadow the type `i32` (and `f` + 32, `u` + 32, ...).
        while matches!(name.as_str(), "i32" | "u32" | "f32" | "f16" | "i64" | "u64") {
            name = format!("{prefix}{}", self.temps);
            self.temps += 1;
        }
        self.line(&format!("let {name} = {value};"));
        name
    }

    /// `let x{v} = ...` for the coordinates of the linear `point` (a `u32` name) in
    /// `dims`, row-major, as loop variables `first..first + dims.len()`.
    fn coordinates(&mut self, point: &str, dims: &[Dim], first: usize) {
        let mut rest = point.to_string();
        for (d, dim) in dims.iter().enumerate().rev() {
            let v = first + d;
            if d == 0 {
                self.line(&format!("let x{v} = i32({rest});"));
            } else {
                let e = extent_u32(*dim);
                self.line(&format!("let x{v} = i32({rest} % {e});"));
                rest = self.bind("q", &format!("{rest} / {e}"));
            }
        }
        self.vars = first + dims.len();
    }

    /// The `u32` expression of the number of points of `dims`.
    fn count(&mut self, dims: &[Dim]) -> String {
        if let Some(n) = dims.iter().try_fold(1u64, |acc, d| match d {
            Dim::Fixed(n) => acc.checked_mul(*n).filter(|p| *p <= u64::from(u32::MAX)),
            Dim::Batch => None,
        }) {
            return format!("{n}u");
        }
        let product: Vec<String> = dims.iter().map(|d| extent_u32(*d)).collect();
        self.bind("n", &product.join(" * "))
    }

    fn map(&mut self, space: &[Dim], stores: &[Store]) -> EmitResult<()> {
        let total = self.count(space);
        let wg = self.wg.clone();
        self.line(&format!("let point = {wg} * {WORKGROUP_SIZE}u + lid;"));
        self.line(&format!("if (point < {total}) {{"));
        self.indent += 1;
        self.coordinates("point", space, 0);
        let values = stores
            .iter()
            .map(|s| self.expr(&s.value, None))
            .collect::<EmitResult<Vec<_>>>()?;
        for (s, v) in stores.iter().zip(values) {
            self.store(s.buf, &s.index, &v)?;
        }
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    fn fold(&mut self, op: ReduceOp, acc: &str, v: &str) -> String {
        match op {
            ReduceOp::Sum => format!("{acc} + {v}"),
            ReduceOp::Max => {
                self.helpers.insert(Helper::MaxNan);
                format!("max_nan({acc}, {v})")
            }
            ReduceOp::Min => {
                self.helpers.insert(Helper::MinNan);
                format!("min_nan({acc}, {v})")
            }
        }
    }

    /// The folded value of `value` over `reduce` for the points `start, start + step, ...`,
    /// into `var {acc}`, its loop counting the points in `point` (the enclosing
    /// coordinates are bound). What `value` computes from the enclosing coordinates alone
    /// is computed once, before the loop.
    #[allow(clippy::too_many_arguments)]
    fn fold_loop(
        &mut self,
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
        start: &str,
        step: &str,
        [acc, point]: [&str; 2],
    ) -> EmitResult<()> {
        let outer = self.vars;
        let kernel = self.kernel;
        let readable = |slot: usize| kernel.buffers[slot].access == Access::Read;
        self.hoist(&hoist::nested_invariants(value, outer, reduce, &readable))?;
        let saved = self.memo.clone();
        let folded = self.count(reduce);
        self.line(&format!("var {acc}: f32 = {};", f32_literal(op.identity())));
        self.line(&format!(
            "for (var {point}: u32 = {start}; {point} < {folded}; {point} = {point} + {step}) {{"
        ));
        self.indent += 1;
        self.coordinates(point, reduce, outer);
        let v = self.expr(value, None)?;
        let folded = self.fold(op, acc, &v);
        self.line(&format!("{acc} = {folded};"));
        self.indent -= 1;
        self.line("}");
        self.vars = outer;
        self.memo = saved;
        Ok(())
    }

    /// Computes the `invariants` that the bound coordinates determine and that are not
    /// computed yet, and records them in the memo.
    fn hoist(&mut self, invariants: &[Invariant]) -> EmitResult<()> {
        let depth = self.vars;
        for inv in invariants.iter().filter(|i| i.level <= depth) {
            if self.memo.invariant(&inv.expr).is_none() {
                // Recorded by `expr` unless it depends on the innermost bound coordinate.
                let name = self.expr(&inv.at_depth(depth), None)?;
                if self.memo.invariant(&inv.expr).is_none() {
                    self.memo.invariants.push((inv.expr.clone(), name));
                }
            }
        }
        Ok(())
    }

    /// A nested reduction: a loop inside the invocation, into a fresh `var`.
    fn nested_reduce(&mut self, op: ReduceOp, extent: &[Dim], value: &Expr) -> EmitResult<String> {
        let n = self.temps;
        self.temps += 1;
        let (acc, point) = (format!("acc{n}"), format!("r{n}"));
        self.fold_loop(extent, op, value, "0u", "1u", [&acc, &point])?;
        Ok(acc)
    }

    fn reduce_loop(
        &mut self,
        space: &[Dim],
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
        out: &Store,
    ) -> EmitResult<()> {
        let total = self.count(space);
        let wg = self.wg.clone();
        self.line(&format!("let point = {wg} * {WORKGROUP_SIZE}u + lid;"));
        self.line(&format!("if (point < {total}) {{"));
        self.indent += 1;
        self.coordinates("point", space, 0);
        self.fold_loop(reduce, op, value, "0u", "1u", ["acc", "r"])?;
        let v = self.expr(&out.value, Some("acc"))?;
        self.store(out.buf, &out.index, &v)?;
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    fn reduce_tree(
        &mut self,
        space: &[Dim],
        reduce: &[Dim],
        op: ReduceOp,
        value: &Expr,
        out: &Store,
    ) -> EmitResult<()> {
        let total = self.count(space);
        // The workgroup's output point is uniform across it; surplus workgroups of the
        // folded grid compute nothing but still meet every barrier.
        let wg = self.wg.clone();
        self.line(&format!("let point = {wg};"));
        self.line(&format!("let live = point < {total};"));
        self.coordinates("select(0u, point, live)", space, 0);
        self.line(&format!("var part: f32 = {};", f32_literal(op.identity())));
        self.line("if (live) {");
        self.indent += 1;
        // What the fold hoists is bound inside this block only.
        let saved = self.memo.clone();
        let stride = format!("{WORKGROUP_SIZE}u");
        self.fold_loop(reduce, op, value, "lid", &stride, ["acc", "r"])?;
        self.line("part = acc;");
        self.memo = saved;
        self.indent -= 1;
        self.line("}");
        self.line("partial[lid] = part;");
        self.line("workgroupBarrier();");
        self.line(&format!(
            "for (var s: u32 = {}u; s > 0u; s = s >> 1u) {{",
            WORKGROUP_SIZE / 2
        ));
        self.indent += 1;
        self.line("if (lid < s) {");
        let folded = self.fold(op, "partial[lid]", "partial[lid + s]");
        self.line(&format!("    partial[lid] = {folded};"));
        self.line("}");
        self.line("workgroupBarrier();");
        self.indent -= 1;
        self.line("}");
        self.line("if (live && lid == 0u) {");
        self.indent += 1;
        self.line("let total = partial[0];");
        let v = self.expr(&out.value, Some("total"))?;
        self.store(out.buf, &out.index, &v)?;
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    fn contract(&mut self, c: &Contraction) -> EmitResult<()> {
        let nb = c.batch.len();
        let m = self.bind("m", &extent_i32(c.m));
        let n = self.bind("n", &extent_i32(c.n));
        let k = self.bind("k", &extent_i32(c.k));
        let batches = self.count(&c.batch);
        self.line(&format!("let tiles_n = u32({n} + {}) / {TILE}u;", TILE - 1));
        self.line(&format!("let tiles_m = u32({m} + {}) / {TILE}u;", TILE - 1));
        let wg = self.wg.clone();
        self.line(&format!("let tile = {wg};"));
        // The tile's invocation: the linear local index cut in rows of TILE.
        self.line(&format!("let lx = lid % {TILE}u;"));
        self.line(&format!("let ly = lid / {TILE}u;"));
        self.line("let tile_col = tile % tiles_n;");
        self.line("let tile_row = (tile / tiles_n) % tiles_m;");
        self.line("let flat_batch = tile / tiles_n / tiles_m;");
        // Uniform across the workgroup: surplus workgroups still meet every barrier.
        self.line(&format!("let live = flat_batch < {batches};"));
        self.coordinates("select(0u, flat_batch, live)", &c.batch, 0);
        self.line(&format!("let row = i32(tile_row * {TILE}u + ly);"));
        self.line(&format!("let col = i32(tile_col * {TILE}u + lx);"));
        self.line("var sum: f32 = 0.0;");
        // Summed dimensions: a loop around the tiles of `k`, its coordinates the operands'
        // variables after the batch ones.
        let summed = !c.summed.is_empty();
        if summed {
            let points = self.count(&c.summed);
            self.line(&format!(
                "for (var summed_point: u32 = 0u; summed_point < {points}; \
                 summed_point = summed_point + 1u) {{"
            ));
            self.indent += 1;
            self.coordinates("summed_point", &c.summed, nb);
        }
        self.product_tiles(&k, &c.a, &c.b, (&m, &n))?;
        if summed {
            self.indent -= 1;
            self.line("}");
        }
        // Terms (unbatched, unsummed) add their products to the same sum.
        for t in &c.terms {
            let k = self.bind("k", &extent_i32(t.k));
            self.product_tiles(&k, &t.a, &t.b, (&m, &n))?;
        }
        self.line(&format!("if (live && row < {m} && col < {n}) {{"));
        self.indent += 1;
        self.line(&format!("let x{nb} = row;"));
        self.line(&format!("let x{} = col;", nb + 1));
        self.vars = nb + 2;
        self.memo = Memo::default();
        let space = c.space();
        let vars: Vec<Index> = (0..space.len()).map(Index::Var).collect();
        let out_index = Index::row_major(&vars, &space);
        let v = self.expr(&c.epilogue, Some("sum"))?;
        self.store(c.out, &out_index, &v)?;
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    /// The loop over `k` in tiles adding `a x b` (of `m x n`, depth `k`) to `sum`.
    fn product_tiles(
        &mut self,
        k: &str,
        a: &crate::ir::MatrixOperand,
        b: &crate::ir::MatrixOperand,
        (m, n): (&str, &str),
    ) -> EmitResult<()> {
        let operand = |w: &mut Self, o: &crate::ir::MatrixOperand| -> EmitResult<_> {
            Ok((
                w.index(&o.offset)?,
                w.index(&o.row_stride)?,
                w.index(&o.col_stride)?,
            ))
        };
        let (a_off, a_rs, a_cs) = operand(self, a)?;
        let (b_off, b_rs, b_cs) = operand(self, b)?;
        self.loads.insert(a.buf);
        self.loads.insert(b.buf);
        let (la, lb) = (a.buf, b.buf);
        self.line(&format!(
            "for (var k0: i32 = 0; k0 < {k}; k0 = k0 + {TILE}) {{"
        ));
        self.indent += 1;
        // A window operand: the tap and position of `(kb, col)`, and the image element
        // they read when it is no padding.
        let b_load = match b.window.as_deref() {
            Some(w) => window_load(w, lb, &b_off)
                .ok_or_else(|| self.error(format!("a window whose sizes exceed i32: {w:?}")))?,
            None => vec![
                "if (LIVE) {".to_string(),
                format!("    b = load{lb}({b_off} + kb * {b_rs} + col * {b_cs});"),
                "}".to_string(),
            ],
        };
        let b_load = b_load
            .into_iter()
            .map(|l| l.replace("LIVE", &format!("live && kb < {k} && col < {n}")));
        for line in [
            "let ka = k0 + i32(lx);".to_string(),
            "var a: f32 = 0.0;".to_string(),
            format!("if (live && row < {m} && ka < {k}) {{"),
            format!("    a = load{la}({a_off} + row * {a_rs} + ka * {a_cs});"),
            "}".to_string(),
            "tile_a[ly][lx] = a;".to_string(),
            "let kb = k0 + i32(ly);".to_string(),
            "var b: f32 = 0.0;".to_string(),
        ]
        .into_iter()
        .chain(b_load)
        .chain([
            "tile_b[ly][lx] = b;".to_string(),
            "workgroupBarrier();".to_string(),
            format!("for (var kk: u32 = 0u; kk < {TILE}u; kk = kk + 1u) {{"),
            "    sum = sum + tile_a[ly][kk] * tile_b[kk][lx];".to_string(),
            "}".to_string(),
            "workgroupBarrier();".to_string(),
        ]) {
            self.line(&line);
        }
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    /// `(rows, cols)` of the table in `slot`, both within `i32`.
    fn table(&self, slot: usize) -> EmitResult<(i32, i32)> {
        let (rows, cols) = self
            .kernel
            .table_extent(slot)
            .ok_or_else(|| self.error(format!("slot {slot} is not a table")))?;
        match (i32::try_from(rows), i32::try_from(cols)) {
            (Ok(r), Ok(c)) => Ok((r, c)),
            _ => Err(self.error(format!("a table of {rows} x {cols} exceeds i32"))),
        }
    }

    /// The id at `index` of slot `ids` and whether it is a row of a table of `rows`:
    /// two `let` names.
    fn id(&mut self, ids: usize, index: &Index, rows: i32) -> EmitResult<(String, String)> {
        let i = self.index(index)?;
        self.ids.insert(ids);
        let id = self.bind("id", &format!("id{ids}({i})"));
        let inside = self.bind("inside", &format!("{id} >= 0 && {id} < {rows}"));
        Ok((id, inside))
    }

    /// A gather: row `ids[id_index]` (row 0 when that is no row, and then `0.0`), column
    /// `col` of the table.
    fn gather(
        &mut self,
        table: usize,
        ids: usize,
        id_index: &Index,
        col: &Index,
    ) -> EmitResult<String> {
        let (rows, cols) = self.table(table)?;
        let (id, inside) = self.id(ids, id_index, rows)?;
        let c = self.index(col)?;
        self.loads.insert(table);
        Ok(format!(
            "select(0.0, load{table}(select(0, {id}, {inside}) * {cols} + {c}), {inside})"
        ))
    }

    /// One invocation per column of the table: zero the column, then add each point's
    /// value to the row of its id, points in order.
    fn scatter_add(&mut self, s: &ScatterAdd) -> EmitResult<()> {
        let (rows, cols) = self.table(s.out)?;
        let wg = self.wg.clone();
        let out = s.out;
        self.loads.insert(out);
        self.stores.insert(out);
        self.line(&format!("let point = {wg} * {WORKGROUP_SIZE}u + lid;"));
        self.line(&format!("if (point < {cols}u) {{"));
        self.indent += 1;
        self.line("let column = i32(point);");
        self.line(&format!(
            "for (var row: i32 = 0; row < {rows}; row = row + 1) {{"
        ));
        self.line(&format!("    store{out}(row * {cols} + column, 0.0);"));
        self.line("}");
        let total = self.count(&s.over);
        let saved = self.memo.clone();
        self.line(&format!(
            "for (var n: u32 = 0u; n < {total}; n = n + 1u) {{"
        ));
        self.indent += 1;
        self.coordinates("n", &s.over, 0);
        let c = s.over.len();
        self.line(&format!("let x{c} = column;"));
        self.vars = c + 1;
        let (id, inside) = self.id(s.ids, &s.id_index, rows)?;
        self.line(&format!("if ({inside}) {{"));
        self.indent += 1;
        let at = self.bind("at", &format!("{id} * {cols} + column"));
        let v = self.expr(&s.value, None)?;
        self.line(&format!("store{out}({at}, load{out}({at}) + {v});"));
        self.indent -= 1;
        self.line("}");
        self.indent -= 1;
        self.line("}");
        self.memo = saved;
        self.indent -= 1;
        self.line("}");
        Ok(())
    }

    fn store(&mut self, buf: usize, index: &Index, value: &str) -> EmitResult<()> {
        let i = self.index(index)?;
        self.stores.insert(buf);
        if self.kernel.buffers[buf].dtype == ScalarType::I32 {
            self.helpers.insert(Helper::ToI32);
        }
        self.line(&format!("store{buf}({i}, {value});"));
        self.memo.loads.remove(&(buf, index.clone()));
        Ok(())
    }

    /// An index expression as an `i32` WGSL expression (a name or a literal).
    fn index(&mut self, ix: &Index) -> EmitResult<String> {
        if let Some(name) = self.memo.indices.get(ix) {
            return Ok(name.clone());
        }
        let text = match ix {
            Index::Var(v) => {
                if *v >= self.vars {
                    return Err(self.error(format!("loop variable {v} out of scope")));
                }
                return Ok(format!("x{v}"));
            }
            Index::Const(c) => {
                return i32::try_from(*c)
                    .ok()
                    .filter(|c| *c != i32::MIN)
                    .map(|c| {
                        if c < 0 {
                            format!("({c})")
                        } else {
                            c.to_string()
                        }
                    })
                    .ok_or_else(|| self.error(format!("index constant {c} does not fit in i32")));
            }
            Index::Batch => return Ok("batch".into()),
            Index::Add(a, b) => format!("{} + {}", self.index(a)?, self.index(b)?),
            Index::Mul(a, b) => format!("{} * {}", self.index(a)?, self.index(b)?),
            Index::Div(a, d) | Index::Rem(a, d) => {
                if *d <= 0 {
                    return Err(self.error(format!("index divided by non-positive constant {d}")));
                }
                let d = i32::try_from(*d)
                    .map_err(|_| self.error(format!("index divisor {d} does not fit in i32")))?;
                let a = self.index(a)?;
                let pow2 = d.count_ones() == 1;
                match (ix, pow2) {
                    (Index::Div(..), true) => format!("{a} >> {}u", d.trailing_zeros()),
                    (Index::Rem(..), true) => format!("{a} & {}", d - 1),
                    (Index::Div(..), false) => {
                        self.helpers.insert(Helper::DivFloor);
                        format!("div_floor({a}, {d})")
                    }
                    _ => {
                        self.helpers.insert(Helper::RemEuclid);
                        format!("rem_euclid({a}, {d})")
                    }
                }
            }
        };
        let name = self.bind("i", &text);
        self.memo.indices.insert(ix.clone(), name.clone());
        Ok(name)
    }

    fn load(&mut self, buf: usize, index: &Index) -> EmitResult<String> {
        let key = (buf, index.clone());
        if let Some(name) = self.memo.loads.get(&key) {
            return Ok(name.clone());
        }
        let i = self.index(index)?;
        self.loads.insert(buf);
        let name = self.bind("v", &format!("load{buf}({i})"));
        self.memo.loads.insert(key, name.clone());
        Ok(name)
    }

    /// A scalar expression as an `f32` WGSL expression (a name or a literal); `acc` names
    /// the value of [`Expr::Acc`]. An invariant already computed is reused, and one
    /// computed here is recorded.
    fn expr(&mut self, e: &Expr, acc: Option<&str>) -> EmitResult<String> {
        let invariant = self.invariant_of(e);
        if let Some(inv) = &invariant
            && let Some(name) = self.memo.invariant(&inv.expr)
        {
            return Ok(name.to_string());
        }
        let name = self.compute(e, acc)?;
        if let Some(inv) = invariant {
            self.memo.invariants.push((inv.expr, name.clone()));
        }
        Ok(name)
    }

    /// `e` as an invariant of the bound coordinates, if it is one worth recording (loads
    /// and indices have memos of their own).
    fn invariant_of(&self, e: &Expr) -> Option<Invariant> {
        let kernel = self.kernel;
        match e {
            Expr::Load { .. } | Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => None,
            _ => Invariant::of(e, self.vars, &|slot: usize| {
                kernel.buffers[slot].access == Access::Read
            }),
        }
    }

    fn compute(&mut self, e: &Expr, acc: Option<&str>) -> EmitResult<String> {
        let text = match e {
            Expr::Load { buf, index } => return self.load(*buf, index),
            Expr::Gather {
                table,
                ids,
                id_index,
                col,
            } => self.gather(*table, *ids, id_index, col)?,
            Expr::Const(c) => return Ok(f32_literal(*c)),
            Expr::Acc => {
                return acc
                    .map(str::to_string)
                    .ok_or_else(|| self.error("`acc` outside an epilogue"));
            }
            Expr::IndexValue(ix) => format!("f32({})", self.index(ix)?),
            Expr::Uniform { seed, index, step } => {
                let i = self.index(index)?;
                let step = self.expr(step, acc)?;
                self.helpers.insert(Helper::StepWord);
                self.helpers.insert(Helper::Philox);
                let [k0, k1] = rng::key_from_seed(*seed);
                // Indices are i32 and never negative here (the runtime refuses memory of
                // more than i32::MAX elements), so the counter's high index word is 0.
                format!(
                    "philox_uniform(vec4<u32>(u32({i}), 0u, step_word({step}), 0u), \
                     vec2<u32>({k0:#010x}u, {k1:#010x}u))"
                )
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x, acc)?;
                self.unary(*op, &x)
            }
            Expr::Binary(BinaryOp::Pow, a, b) => {
                let a = self.expr(a, acc)?;
                match **b {
                    Expr::Const(c) => self.pow_const(&a, c),
                    _ => {
                        let b = self.expr(b, acc)?;
                        self.helpers.insert(Helper::Pow);
                        format!("pow_f({a}, {b})")
                    }
                }
            }
            Expr::Binary(op, a, b) => {
                let a = self.expr(a, acc)?;
                let b = self.expr(b, acc)?;
                self.binary(*op, &a, &b)
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(cond, acc)?;
                let t = self.expr(then, acc)?;
                let o = self.expr(otherwise, acc)?;
                // `!=` is true for NaN, as `cond != 0` is.
                format!("select({o}, {t}, {c} != 0.0)")
            }
            Expr::Reduce { op, extent, value } => {
                return self.nested_reduce(*op, extent, value);
            }
        };
        Ok(self.bind("v", &text))
    }

    fn unary(&mut self, op: UnaryOp, x: &str) -> String {
        match op {
            UnaryOp::Neg => format!("-{x}"),
            UnaryOp::Abs => format!("abs({x})"),
            UnaryOp::Exp => format!("exp({x})"),
            UnaryOp::Log => format!("log({x})"),
            UnaryOp::Sqrt => format!("sqrt({x})"),
            UnaryOp::Recip => format!("1.0 / {x}"),
            UnaryOp::Tanh => {
                self.helpers.insert(Helper::Tanh);
                format!("tanh_f({x})")
            }
            UnaryOp::Erf => {
                self.helpers.insert(Helper::Erf);
                format!("erf_f({x})")
            }
            UnaryOp::Sigmoid => {
                self.helpers.insert(Helper::Sigmoid);
                format!("sigmoid_f({x})")
            }
            UnaryOp::Relu => {
                self.helpers.insert(Helper::MaxNan);
                format!("max_nan({x}, 0.0)")
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, a: &str, b: &str) -> String {
        let cmp = match op {
            BinaryOp::Add => return format!("{a} + {b}"),
            BinaryOp::Sub => return format!("{a} - {b}"),
            BinaryOp::Mul => return format!("{a} * {b}"),
            BinaryOp::Div => return format!("{a} / {b}"),
            BinaryOp::Max => {
                self.helpers.insert(Helper::MaxNan);
                return format!("max_nan({a}, {b})");
            }
            BinaryOp::Min => {
                self.helpers.insert(Helper::MinNan);
                return format!("min_nan({a}, {b})");
            }
            BinaryOp::Pow => {
                self.helpers.insert(Helper::Pow);
                return format!("pow_f({a}, {b})");
            }
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
        };
        format!("select(0.0, 1.0, {a} {cmp} {b})")
    }

    /// `a ** c` for a constant exponent: the CPU emitter's shortcuts, else `pow_f`.
    fn pow_const(&mut self, a: &str, c: f64) -> String {
        match c {
            0.0 => "1.0".into(),
            1.0 => a.into(),
            2.0 => format!("{a} * {a}"),
            3.0 => format!("{a} * {a} * {a}"),
            4.0 => format!("({a} * {a}) * ({a} * {a})"),
            -1.0 => format!("1.0 / {a}"),
            -2.0 => format!("1.0 / ({a} * {a})"),
            0.5 => format!("sqrt({a})"),
            -0.5 => format!("1.0 / sqrt({a})"),
            _ => {
                self.helpers.insert(Helper::Pow);
                format!("pow_f({a}, {})", f32_literal(c))
            }
        }
    }

    /// The whole module: header, bindings, helpers, accessors, entry point.
    fn finish(self, strategy: Strategy) -> String {
        let k = self.kernel;
        let mut s = String::new();
        let what = |strategy: Strategy| match strategy {
            Strategy::Map => "map, one invocation per point",
            Strategy::ReduceLoop => "reduction, one invocation per output point",
            Strategy::ReduceTree => "reduction, one workgroup per output point",
            Strategy::Contract => "contraction, one workgroup per output tile",
            Strategy::Scatter => "scatter-add, one invocation per column of the table",
            Strategy::Parts => "parts",
        };
        match &k.body {
            KernelBody::Parts(parts) => {
                let _ = writeln!(s, "// Strata kernel `{}`: {} parts,", k.name, parts.len());
                for (i, part) in parts.iter().enumerate() {
                    let _ = writeln!(s, "// part {i}: {};", what(body_strategy(part)));
                }
            }
            _ => {
                let _ = writeln!(s, "// Strata kernel `{}`: {}.", k.name, what(strategy));
            }
        }
        s.push_str("struct Params {\n    batch: u32,\n");
        for (slot, b) in k.buffers.iter().enumerate() {
            let _ = writeln!(s, "    off{slot}: u32, // `{}`", b.name.replace('\n', " "));
        }
        s.push_str("}\n\n");
        s.push_str("@group(0) @binding(0) var<uniform> p: Params;\n");
        s.push_str("@group(0) @binding(1) var<storage, read_write> mem: array<u32>;\n");
        if self.strategies.contains(&Strategy::ReduceTree) {
            let _ = writeln!(s, "var<workgroup> partial: array<f32, {WORKGROUP_SIZE}>;");
        }
        if self.strategies.contains(&Strategy::Contract) {
            let _ = writeln!(
                s,
                "var<workgroup> tile_a: array<array<f32, {TILE}>, {TILE}>;\n\
                 var<workgroup> tile_b: array<array<f32, {TILE}>, {TILE}>;"
            );
        }
        for h in &self.helpers {
            s.push('\n');
            match h {
                Helper::Erf => s.push_str(&erf_source()),
                _ => s.push_str(h.source()),
            }
        }
        for &slot in &self.loads {
            let read = match k.buffers[slot].dtype {
                ScalarType::F32 => "bitcast<f32>(mem[p.off{slot} + u32(i)])",
                ScalarType::I32 => "f32(bitcast<i32>(mem[p.off{slot} + u32(i)]))",
            }
            .replace("{slot}", &slot.to_string());
            let _ = write!(
                s,
                "\nfn load{slot}(i: i32) -> f32 {{\n    return {read};\n}}\n"
            );
        }
        for &slot in &self.ids {
            let _ = write!(
                s,
                "\nfn id{slot}(i: i32) -> i32 {{\n    return bitcast<i32>(mem[p.off{slot} + u32(i)]);\n}}\n"
            );
        }
        for &slot in &self.stores {
            let write = match k.buffers[slot].dtype {
                ScalarType::F32 => "bitcast<u32>(v)",
                ScalarType::I32 => "bitcast<u32>(to_i32(v))",
            };
            let _ = write!(
                s,
                "\nfn store{slot}(i: i32, v: f32) {{\n    mem[p.off{slot} + u32(i)] = {write};\n}}\n"
            );
        }
        let _ = write!(
            s,
            "\n@compute @workgroup_size({WORKGROUP_SIZE})\n\
             fn main(\n    \
                 @builtin(workgroup_id) wid: vec3<u32>,\n    \
                 @builtin(num_workgroups) nwg: vec3<u32>,\n    \
                 @builtin(local_invocation_index) lid: u32,\n\
             ) {{\n    \
                 let batch = i32(p.batch);\n    \
                 let wg = wid.y * nwg.x + wid.x;\n"
        );
        s.push_str(&self.body);
        s.push_str("}\n");
        s
    }
}

/// A dimension's extent as a `u32` WGSL expression.
fn extent_u32(d: Dim) -> String {
    match d {
        Dim::Fixed(n) => format!("{n}u"),
        Dim::Batch => "p.batch".into(),
    }
}

/// A dimension's extent as an `i32` WGSL expression.
fn extent_i32(d: Dim) -> String {
    match d {
        Dim::Fixed(n) => format!("{}", n.min(i32::MAX as u64)),
        Dim::Batch => "batch".into(),
    }
}

/// An `f32` literal: the shortest text that reads back as the same `f32`; infinities and
/// NaN, which WGSL has no literal for, as bit patterns.
fn f32_literal(c: f64) -> String {
    let x = c as f32;
    if x.is_nan() {
        "bitcast<f32>(0x7fc00000u)".into()
    } else if x.is_infinite() {
        let bits = if x > 0.0 { 0x7f80_0000u32 } else { 0xff80_0000 };
        format!("bitcast<f32>({bits:#010x}u)")
    } else {
        let text = format!("{x:?}");
        let text = if text.contains(['.', 'e']) {
            text
        } else {
            format!("{text}.0")
        };
        if x.is_sign_negative() {
            format!("({text})")
        } else {
            text
        }
    }
}

/// WGSL lines setting `b` to element `(kb, col)` of a window operand over the image at
/// `offset` in slot `slot`, `0.0` in the padding; `LIVE` stands for the tile's bounds
/// test. `None` when a size exceeds `i32`.
fn window_load(w: &ImageWindow, slot: usize, offset: &str) -> Option<Vec<String>> {
    let (_, ow) = w.out_size()?;
    let i = |v: u64| i32::try_from(v).ok();
    let [taps, kw, ow, s, d, p, h, wd] = [
        w.kh.checked_mul(w.kw)?,
        w.kw,
        ow,
        w.stride,
        w.dilation,
        w.padding,
        w.height,
        w.width,
    ]
    .map(i);
    let [taps, kw, ow, s, d, p, h, wd] = [taps?, kw?, ow?, s?, d?, p?, h?, wd?];
    let plane = h.checked_mul(wd)?;
    Some(vec![
        format!("let wtap = kb % {taps};"),
        format!("let wy = col / {ow} * {s} + wtap / {kw} * {d} - {p};"),
        format!("let wx = col % {ow} * {s} + wtap % {kw} * {d} - {p};"),
        format!("if (LIVE && wy >= 0 && wy < {h} && wx >= 0 && wx < {wd}) {{"),
        format!("    b = load{slot}({offset} + kb / {taps} * {plane} + wy * {wd} + wx);"),
        "}".to_string(),
    ])
}
