//! The scanner over one line of kernel text: words, dimensions, indices and scalar
//! expressions, read with the printer's precedence (see the parent module's docs).

use crate::ir::*;
use crate::print::{BinaryText, binary_text};

fn unary_named(name: &str) -> Option<UnaryOp> {
    UnaryOp::from_name(name)
}

const BINARY_OPS: [BinaryOp; BinaryOp::ALL.len()] = BinaryOp::ALL;

pub(super) fn reduce_named(name: &str) -> Option<ReduceOp> {
    ReduceOp::from_name(name)
}

/// A scanner over one line's text; the slots' names resolve the buffers of loads.
pub(super) struct Cursor<'a> {
    rest: &'a str,
    names: &'a [String],
}

/// Characters that end a word (a name, a number, a keyword).
const DELIMITERS: &str = "()[],=<>+*/%";

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str, names: &'a [String]) -> Cursor<'a> {
        Cursor { rest: text, names }
    }

    pub(super) fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    pub(super) fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    pub(super) fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}`, found `{}`", self.found()))
        }
    }

    pub(super) fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.rest))
        }
    }

    /// What is left, for messages ("the end of the line" when nothing is).
    fn found(&self) -> &str {
        if self.rest.is_empty() {
            "the end of the line"
        } else {
            self.rest
        }
    }

    pub(super) fn rest(&mut self) -> &'a str {
        let rest = self.rest.trim();
        self.rest = "";
        rest
    }

    pub(super) fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest.chars().next()
    }

    /// The next word: everything up to whitespace or a delimiter (`-` is no delimiter:
    /// `-2`, `1e-7`, `row-major`).
    pub(super) fn word(&mut self) -> &'a str {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || DELIMITERS.contains(c))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word
    }

    fn integer(&mut self) -> Result<i64, String> {
        let word = self.word();
        word.parse()
            .map_err(|_| format!("expected an integer, found `{word}`"))
    }

    pub(super) fn dim(&mut self) -> Result<Dim, String> {
        match self.word() {
            "batch" => Ok(Dim::Batch),
            word => word
                .parse()
                .map(Dim::Fixed)
                .map_err(|_| format!("expected a dimension, found `{word}`")),
        }
    }

    /// `[batch, 4]`, `[]`.
    pub(super) fn dims(&mut self) -> Result<Vec<Dim>, String> {
        self.expect("[")?;
        let mut dims = Vec::new();
        if self.eat("]") {
            return Ok(dims);
        }
        loop {
            dims.push(self.dim()?);
            if self.eat("]") {
                return Ok(dims);
            }
            self.expect(",")?;
        }
    }

    /// A buffer named in the table: its slot.
    pub(super) fn buffer(&mut self) -> Result<usize, String> {
        let name = self.word();
        self.slot(name)
    }

    fn slot(&self, name: &str) -> Result<usize, String> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("`{name}` is not a buffer of this kernel"))
    }

    /// `i0 * 128 + i1`: sums of products of factors, left to right.
    pub(super) fn index(&mut self) -> Result<Index, String> {
        let mut sum = self.index_product()?;
        while self.eat("+") {
            let term = self.index_product()?;
            sum = Index::Add(Box::new(sum), Box::new(term));
        }
        Ok(sum)
    }

    fn index_product(&mut self) -> Result<Index, String> {
        let mut product = self.index_factor()?;
        while self.eat("*") {
            let factor = self.index_factor()?;
            product = Index::Mul(Box::new(product), Box::new(factor));
        }
        Ok(product)
    }

    /// `i3`, `-2`, `batch`, `(INDEX)`, `(INDEX) / N`, `(INDEX) % N`.
    fn index_factor(&mut self) -> Result<Index, String> {
        if self.eat("(") {
            let inner = self.index()?;
            self.expect(")")?;
            if self.eat("/") {
                return Ok(Index::Div(Box::new(inner), self.divisor()?));
            }
            if self.eat("%") {
                return Ok(Index::Rem(Box::new(inner), self.divisor()?));
            }
            return Ok(inner);
        }
        let word = self.word();
        if word == "batch" {
            return Ok(Index::Batch);
        }
        if let Some(v) = word.strip_prefix('i')
            && !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
        {
            return v
                .parse()
                .map(Index::Var)
                .map_err(|_| format!("bad loop variable `{word}`"));
        }
        word.parse().map(Index::Const).map_err(|_| {
            if word.is_empty() {
                format!("expected an index, found `{}`", self.found())
            } else {
                format!("expected an index (`iN`, a number, `batch`), found `{word}`")
            }
        })
    }

    fn divisor(&mut self) -> Result<i64, String> {
        let d = self.integer()?;
        if d > 0 {
            Ok(d)
        } else {
            Err(format!("a divisor must be positive, found {d}"))
        }
    }

    /// A scalar expression with `scope` loop variables in scope.
    pub(super) fn expr(&mut self, scope: usize) -> Result<Expr, String> {
        if self.eat("(") {
            let a = self.expr(scope)?;
            let op = self.infix()?;
            let b = self.expr(scope)?;
            self.expect(")")?;
            return Ok(Expr::binary(op, a, b));
        }
        let word = self.word();
        if word.is_empty() {
            return Err(format!("expected an expression, found `{}`", self.found()));
        }
        match self.rest.chars().next() {
            Some('[') => {
                let buf = self.slot(word)?;
                self.expect("[")?;
                let index = self.index()?;
                self.expect("]")?;
                Ok(Expr::Load { buf, index })
            }
            Some('(') => {
                self.expect("(")?;
                let e = self.call(word, scope)?;
                self.expect(")")?;
                Ok(e)
            }
            _ if word == "acc" => Ok(Expr::Acc),
            _ => word
                .parse()
                .map(Expr::Const)
                .map_err(|_| format!("expected an expression, found `{word}`")),
        }
    }

    /// The operator of `(a OP b)`.
    fn infix(&mut self) -> Result<BinaryOp, String> {
        self.skip_ws();
        // Longest symbol first: `<=` before `<`.
        let mut ops: Vec<(BinaryOp, &str)> = BINARY_OPS
            .into_iter()
            .filter_map(|op| match binary_text(op) {
                BinaryText::Infix(sym) => Some((op, sym)),
                BinaryText::Function(_) => None,
            })
            .collect();
        ops.sort_by_key(|(_, sym)| std::cmp::Reverse(sym.len()));
        ops.into_iter()
            .find(|(_, sym)| self.eat(sym))
            .map(|(op, _)| op)
            .ok_or_else(|| format!("expected a binary operator, found `{}`", self.found()))
    }

    /// The arguments of `name(…)` (after the `(`, up to the `)`).
    fn call(&mut self, name: &str, scope: usize) -> Result<Expr, String> {
        if let Some(op) = unary_named(name) {
            return Ok(Expr::unary(op, self.expr(scope)?));
        }
        if let Some(op) = reduce_named(name)
            && let Some(extent) = self.nested_bounds(scope)?
        {
            let value = self.expr(scope + extent.len())?;
            self.expect("for")?;
            // The bounds were read ahead: skip them.
            for i in 0..extent.len() {
                if i > 0 {
                    self.expect(",")?;
                }
                self.word();
                self.expect("<")?;
                self.dim()?;
            }
            return Ok(Expr::Reduce {
                op,
                extent,
                value: Box::new(value),
            });
        }
        if let Some(op) = BINARY_OPS
            .into_iter()
            .find(|op| matches!(binary_text(*op), BinaryText::Function(f) if f == name))
        {
            let a = self.expr(scope)?;
            self.expect(",")?;
            let b = self.expr(scope)?;
            return Ok(Expr::binary(op, a, b));
        }
        match name {
            "float" => Ok(Expr::IndexValue(self.index()?)),
            "gather" => {
                let table = self.buffer()?;
                self.expect(",")?;
                let ids = self.buffer()?;
                self.expect("[")?;
                let id_index = self.index()?;
                self.expect("]")?;
                self.expect(",")?;
                let col = self.index()?;
                Ok(Expr::Gather {
                    table,
                    ids,
                    id_index,
                    col,
                })
            }
            "select" => {
                let cond = self.expr(scope)?;
                self.expect(",")?;
                let then = self.expr(scope)?;
                self.expect(",")?;
                let otherwise = self.expr(scope)?;
                Ok(Expr::Select {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                })
            }
            "uniform" => {
                self.expect("seed")?;
                self.expect("=")?;
                let seed = self.word();
                let seed = seed
                    .parse()
                    .map_err(|_| format!("expected a seed, found `{seed}`"))?;
                self.expect(",")?;
                let index = self.index()?;
                self.expect(",")?;
                self.expect("step")?;
                self.expect("=")?;
                let step = self.expr(scope)?;
                Ok(Expr::Uniform {
                    seed,
                    index,
                    step: Box::new(step),
                })
            }
            _ => Err(format!("unknown function `{name}`")),
        }
    }

    /// The extent of a nested reduction `OP(VALUE for iS < D, …)` whose `VALUE` starts
    /// here, or None when no `for` follows the value at this depth (`max(a, b)`). The
    /// bounds come after the value, but the value's scope depends on them: they are read
    /// ahead, and must name the variables after the `scope` enclosing ones in order.
    fn nested_bounds(&self, scope: usize) -> Result<Option<Vec<Dim>>, String> {
        let mut depth = 0i32;
        let mut at = None;
        for (i, c) in self.rest.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' if depth == 0 => break,
                ')' | ']' => depth -= 1,
                _ if depth == 0 && self.rest[i..].starts_with(" for ") => {
                    at = Some(i + " for ".len());
                    break;
                }
                _ => {}
            }
        }
        let Some(at) = at else {
            return Ok(None);
        };
        let mut c = Cursor::new(&self.rest[at..], &[]);
        let mut extent = Vec::new();
        loop {
            let want = format!("i{}", scope + extent.len());
            let var = c.word();
            if var != want {
                return Err(format!(
                    "the nested reduction's variable {} is `{want}` (after the {scope} \
                     enclosing ones), found `{var}`",
                    extent.len()
                ));
            }
            c.expect("<")?;
            extent.push(c.dim()?);
            if c.peek() != Some(',') {
                return Ok(Some(extent));
            }
            c.expect(",")?;
        }
    }
}
