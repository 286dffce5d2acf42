//! Element-wise ops: activations as pipe stages (`|> relu`), arithmetic as the
//! language's operators with NumPy broadcasting (a scalar constant is a number, a
//! tensor constant a declared parameter), folded when every operand is known. Inside
//! an attention subgraph a product by a constant scales the tracked value.

use super::known::{BinOp, CmpOp, Known, SymInt, broadcast};
use super::source::number;
use super::tensor::Attrs;
use super::{Dyn, Importer, R, Val, View};
use crate::proto::pb;

impl Importer<'_> {
    pub(super) fn unary(&mut self, n: &pb::NodeProto, mut a: Attrs) -> R<()> {
        let op = n.op_type.as_str();
        let alpha = if op == "LeakyRelu" {
            a.float("alpha", 0.01)?
        } else {
            0.0
        };
        let approx = if op == "Gelu" {
            a.string("approximate")?.unwrap_or_else(|| "none".into())
        } else {
            String::new()
        };
        a.finish()?;
        if let Val::Known(k) = self.need(n, 0)? {
            let f: fn(f32) -> f32 = match op {
                "Relu" => |x| x.max(0.0),
                "Sqrt" => f32::sqrt,
                "Exp" => f32::exp,
                "Log" => f32::ln,
                "Abs" => f32::abs,
                "Neg" => |x| -x,
                "Tanh" => f32::tanh,
                "Reciprocal" => f32::recip,
                _ => return Err("an op on a constant that import does not fold".into()),
            };
            self.set(n, 0, Val::Known(k.unary_f32(f)?));
            return Ok(());
        }
        let d = self.tensor(n, 0)?;
        // Element-wise ops keep any lazy layout.
        let expr = match op {
            "Neg" => self.text.operator(format!("-{}", d.expr.operand())),
            "Reciprocal" => self.text.operator(format!("1 / {}", d.expr.operand())),
            _ => {
                let stage = match op {
                    "LeakyRelu" => format!("leaky_relu(slope = {})", number(alpha)),
                    "Gelu" if approx == "tanh" => "gelu(approximate = \"tanh\")".into(),
                    "Gelu" => "gelu".into(),
                    _ => op.to_lowercase(),
                };
                self.text.pipe(d.expr.clone(), &stage)
            }
        };
        self.set(n, 0, Val::Dyn(Dyn { expr, ..d }));
        Ok(())
    }

    pub(super) fn binary(&mut self, n: &pb::NodeProto) -> R<()> {
        let op = match n.op_type.as_str() {
            "Add" => BinOp::Add,
            "Sub" => BinOp::Sub,
            "Mul" => BinOp::Mul,
            "Div" => BinOp::Div,
            "Pow" => BinOp::Pow,
            "Max" => BinOp::Max,
            "Min" => BinOp::Min,
            "Mod" => BinOp::Mod,
            _ => BinOp::Equal,
        };
        if n.input.len() != 2 {
            return Err(format!("{} inputs; import reads two", n.input.len()));
        }
        let (x, y) = (self.need(n, 0)?, self.need(n, 1)?);
        if op == BinOp::Mul
            && let Some(rows) = self.guard_product(&x, &y)?
        {
            self.set(n, 0, Val::Dyn(rows));
            return Ok(());
        }
        if let (Val::Known(a), Val::Known(b)) = (&x, &y) {
            let k = a.binary(b, op)?;
            self.set(n, 0, Val::Known(k));
            return Ok(());
        }
        if let (Val::Attn(a), Val::Known(k)) = (&x, &y)
            && let (Some(c), BinOp::Mul | BinOp::Div) = (k.scalar_f32(), op)
        {
            let v = self.attention_scale(a, c, op == BinOp::Div);
            self.set(n, 0, v);
            return Ok(());
        }
        if let (Val::Known(k), Val::Attn(a)) = (&x, &y)
            && let (Some(c), BinOp::Mul) = (k.scalar_f32(), op)
        {
            let v = self.attention_scale(a, c, false);
            self.set(n, 0, v);
            return Ok(());
        }
        // A scalar constant is a number; a model tensor in a lazy layout keeps it.
        let scalar = |v: &Val| match v {
            Val::Known(k) if k.elems.len() == 1 && k.dims.len() <= 1 => k.scalar_f32(),
            _ => None,
        };
        let (sx, sy) = (scalar(&x), scalar(&y));
        let (expr_text, d) = if let Some(c) = sy {
            let d = self.tensor(n, 0)?;
            (bin_text(op, &d.expr.operand(), &number(c))?, d)
        } else if let Some(c) = sx {
            let d = self.tensor(n, 1)?;
            (bin_text(op, &number(c), &d.expr.operand())?, d)
        } else {
            let a = self.tensor(n, 0)?;
            let b = self.tensor(n, 1)?;
            // Two tensors transposed alike combine as they are, and stay transposed; so
            // does a transposed one with a smaller one that broadcasts over axes the
            // transpose leaves in place (a bias on the last).
            let alike = matches!(a.view, View::Perm(_))
                && a.view == b.view
                && a.actual.len() == b.actual.len();
            let (a, b) = if alike || keeps_trailing_axes(&a, &b) || keeps_trailing_axes(&b, &a) {
                (a, b)
            } else {
                (self.plain(a)?, self.plain(b)?)
            };
            let actual = broadcast(&a.actual, &b.actual)?;
            let text = bin_text(op, &a.expr.operand(), &b.expr.operand())?;
            let view = match (&a.view, &b.view) {
                (View::Same, v) => v.clone(),
                (v, _) => v.clone(),
            };
            (text, Dyn { actual, view, ..a })
        };
        let expr = self.text.operator(expr_text);
        self.set(n, 0, Val::Dyn(Dyn { expr, ..d }));
        Ok(())
    }
}

/// Whether `small`, in no lazy layout and of lower rank than `big`, broadcasts against
/// `big`'s expression as against its ONNX layout: `big`'s transpose keeps the axes
/// `small` aligns with (the last ones) where they are.
fn keeps_trailing_axes(big: &Dyn, small: &Dyn) -> bool {
    let View::Perm(p) = &big.view else {
        return false;
    };
    let (r, k) = (p.len(), small.actual.len());
    small.view == View::Same && k < r && (r - k..r).all(|i| p[i] == i)
}

impl Importer<'_> {
    /// Comparisons, logical ops and `Where`: folded on known values (a causal mask
    /// built from positions), and on model ids the guard of Strata's gather
    /// ([`super::masked_gather`]); the language has no booleans to write them with
    /// otherwise.
    pub(super) fn logical(&mut self, n: &pb::NodeProto) -> R<()> {
        let op = n.op_type.as_str();
        let arity = match op {
            "Not" => 1,
            "Where" => 3,
            _ => 2,
        };
        if n.input.len() != arity {
            return Err(format!("{} inputs", n.input.len()));
        }
        let vals: Vec<Val> = (0..arity).map(|i| self.need(n, i)).collect::<R<_>>()?;
        let known: Option<Vec<&Known>> = vals
            .iter()
            .map(|v| match v {
                Val::Known(k) => Some(k),
                _ => None,
            })
            .collect();
        let Some(k) = known else {
            return self.guard_op(n);
        };
        let folded = match (op, &k[..]) {
            ("Not", [a]) => {
                a.compare(&Known::ints(vec![], vec![SymInt::fixed(0)]), CmpOp::Equal)?
            }
            ("Where", [c, a, b]) => c.select(a, b)?,
            (_, [a, b]) => a.compare(b, CmpOp::of(op).ok_or("an unknown comparison")?)?,
            _ => return Err(format!("{} inputs", k.len())),
        };
        self.set(n, 0, Val::Known(folded));
        Ok(())
    }
}

/// The expression `op` of `a` and `b` in the language, or why it has none.
fn bin_text(op: BinOp, a: &str, b: &str) -> Result<String, String> {
    Ok(match op {
        BinOp::Add => format!("{a} + {b}"),
        BinOp::Sub => format!("{a} - {b}"),
        BinOp::Mul => format!("{a} * {b}"),
        BinOp::Div => format!("{a} / {b}"),
        BinOp::Pow => format!("pow({a}, {b})"),
        BinOp::Max => format!("maximum({a}, {b})"),
        BinOp::Min => format!("minimum({a}, {b})"),
        BinOp::Mod | BinOp::Equal => {
            return Err("on model tensors; Strata has no such element-wise op".into());
        }
    })
}
