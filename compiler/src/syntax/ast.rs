//! The abstract syntax tree of a model file. Every node keeps its source span.

use crate::source::Span;

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole model file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub models: Vec<ModelDef>,
    pub blocks: Vec<ModelDef>,
    pub trains: Vec<TrainDef>,
    pub sweeps: Vec<SweepDef>,
}

/// A `model` or a `block`: a name, hyper-parameters (a block's are also its arguments),
/// and statements.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub name: Ident,
    pub params: Vec<HyperParam>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `name` or `name = default`.
#[derive(Clone, Debug, PartialEq)]
pub struct HyperParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `f32[batch, 64]`
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: Ident,
    pub dims: Vec<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `input x: f32[batch, 64]`
    Input {
        name: Ident,
        ty: TypeExpr,
        span: Span,
    },
    /// `output y = expr`, or `output y` for an existing binding.
    Output {
        name: Ident,
        value: Option<Expr>,
        span: Span,
    },
    /// `layer enc = dense(64)`: a layer instance, whose weights every use shares.
    Layer { name: Ident, call: Call, span: Span },
    /// `param w: f32[64, 32] = xavier_uniform`: a parameter declared by name, trained
    /// like a layer's. Its initializer is an initializer's name, a number, or
    /// `normal(std)` / `uniform(a)`. Options follow it: `, trainable = false`.
    Param {
        name: Ident,
        ty: TypeExpr,
        init: Expr,
        options: Vec<(Ident, Expr)>,
        span: Span,
    },
    /// `return expr` (blocks only).
    Return { value: Expr, span: Span },
    /// `name = expr`, or `a, b = expr` binding the parts of a list (`split`).
    Let {
        name: Ident,
        /// The names after the first, when the binding takes a list apart.
        more: Vec<Ident>,
        value: Expr,
        span: Span,
    },
}

/// A `train Model { … }` section, kept as written; the training driver interprets it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDef {
    pub model: Ident,
    pub items: Vec<TrainItem>,
    pub span: Span,
}

/// A `sweep Model { … }` section: the search space and options of `strata sweep`, kept
/// as written (each value's text is what `--space NAME=TEXT` would take).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepDef {
    pub model: Ident,
    /// `key = value`, with the value's span in the source.
    pub settings: Vec<(Ident, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrainItem {
    /// `label y: i32[batch]`
    Label {
        name: Ident,
        ty: TypeExpr,
        span: Span,
    },
    /// `key = expr`
    Setting { key: Ident, value: Expr, span: Span },
    /// `term recon = mse(x_hat, x)`: a named scalar the loss may use by its name, logged
    /// in training as its own column.
    Term {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `early_stop(on = val.loss, patience = 3)`
    Call(Call),
    /// `step generator { loss = …  optimizer = …  updates = generator }`: one of the
    /// updates a training step makes in turn, with its own loss, optimizer and
    /// parameters. Its items are settings and calls.
    Step {
        name: Ident,
        items: Vec<TrainItem>,
        span: Span,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number literal; `integer` when written without a point or exponent.
    Number {
        value: f64,
        integer: bool,
    },
    Str(String),
    /// A name or a dotted path (`val.loss`).
    Path(Vec<Ident>),
    Call(Call),
    List(Vec<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `value |> stage`: the value becomes the stage's first argument.
    Pipe(Box<Expr>, Stage),
}

/// The right-hand side of `|>`.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// `dense(10)`: called with the piped value first.
    Call(Call),
    /// `relu`, or a layer instance's name.
    Name(Ident),
    /// `repeat 3 Residual(64)`: the stage applied `count` times, each copy with its own
    /// parameters.
    Repeat {
        count: Box<Expr>,
        stage: Box<Stage>,
        span: Span,
    },
}

impl Stage {
    pub fn span(&self) -> Span {
        match self {
            Stage::Call(c) => c.span,
            Stage::Name(n) => n.span,
            Stage::Repeat { span, .. } => *span,
        }
    }
}

/// `callee(arg, name = arg, …)`
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}
