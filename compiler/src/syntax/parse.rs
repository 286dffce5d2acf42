//! Text -> AST, with the pest grammar in `strata.pest`. Syntax errors become
//! [`Diagnostic`]s pointing at the offending position.

use super::ast::*;
use crate::limits::{MAX_BRACKET_DEPTH, MAX_EXPR_DEPTH};
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use pest::Parser;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "syntax/strata.pest"]
struct StrataParser;

/// Parses a whole model file.
pub fn parse(text: &str) -> Result<Program, Diagnostic> {
    // Brackets are balanced and nest at most `MAX_BRACKET_DEPTH` deep before the grammar,
    // a recursive-descent parser, sees the text: nesting is what its recursion follows.
    check_delimiters(text)?;
    let mut pairs = StrataParser::parse(Rule::file, text).map_err(syntax_error)?;
    let mut program = Program::default();
    let Some(file) = pairs.next() else {
        return Ok(program);
    };
    for item in file.into_inner() {
        match item.as_rule() {
            Rule::model_def => {
                let model = model_def(item)?;
                refuse_second("model", &model.name, program.models.iter().map(|m| &m.name))?;
                program.models.push(model);
            }
            Rule::block_def => program.blocks.push(model_def(item)?),
            Rule::train_def => {
                let train = train_def(item)?;
                refuse_second(
                    "train section for",
                    &train.model,
                    program.trains.iter().map(|t| &t.model),
                )?;
                program.trains.push(train);
            }
            Rule::sweep_def => {
                let sweep = sweep_def(item);
                refuse_second(
                    "sweep section for",
                    &sweep.model,
                    program.sweeps.iter().map(|s| &s.model),
                )?;
                program.sweeps.push(sweep);
            }
            _ => {}
        }
    }
    Ok(program)
}

/// A second `model M` (or `train M`) would make which one is meant depend on the order
/// of the file: refused, pointing at both.
fn refuse_second<'a>(
    what: &str,
    name: &Ident,
    earlier: impl Iterator<Item = &'a Ident>,
) -> Result<(), Diagnostic> {
    let mut earlier = earlier;
    match earlier.find(|e| e.name == name.name) {
        None => Ok(()),
        Some(first) => Err(Diagnostic::error(
            ErrorCode::DuplicateSection,
            format!("{what} `{}` is defined twice", name.name),
            name.span,
        )
        .with_label("defined again here")
        .with_secondary(first.span, "first defined here")
        .with_help("rename or remove one of them")),
    }
}

/// How deeply an expression nests (a leaf is 1). Called on expressions this parser
/// built, which are at most [`MAX_EXPR_DEPTH`] + 1 deep, so the recursion is bounded.
fn depth(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Number { .. } | ExprKind::Str(_) | ExprKind::Path(_) => 0,
        ExprKind::Call(c) => call_depth(c),
        ExprKind::List(items) => items.iter().map(depth).max().unwrap_or(0),
        ExprKind::Neg(x) => depth(x),
        ExprKind::Binary(_, a, b) => depth(a).max(depth(b)),
        ExprKind::Pipe(x, stage) => depth(x).max(stage_depth(stage)),
    }
}

fn call_depth(c: &Call) -> usize {
    c.args.iter().map(|a| depth(&a.value)).max().unwrap_or(0)
}

fn stage_depth(stage: &Stage) -> usize {
    match stage {
        Stage::Call(c) => call_depth(c),
        Stage::Name(_) => 0,
        Stage::Repeat { count, stage, .. } => depth(count).max(stage_depth(stage)) + 1,
    }
}

/// Refuses an expression `deep` levels deep when that is past [`MAX_EXPR_DEPTH`],
/// pointing at `at`, where the limit was crossed.
fn check_depth(deep: usize, at: Span) -> Result<(), Diagnostic> {
    if deep <= MAX_EXPR_DEPTH {
        return Ok(());
    }
    Err(Diagnostic::error(
        ErrorCode::TooLarge,
        format!("this expression nests more than {MAX_EXPR_DEPTH} operations deep"),
        at,
    )
    .with_label(format!("operation {deep} of one chain"))
    .with_note(format!(
        "an expression may nest at most {MAX_EXPR_DEPTH} operators, pipe stages and calls"
    ))
    .with_help("split it into several bindings (`h1 = …`, `h2 = h1 |> …`)"))
}

fn span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

/// A pair's span without the whitespace pest's implicit whitespace can leave at its end
/// (after a repetition that found nothing more), so a diagnostic underlines what was
/// written and not the lines after it.
fn trimmed_span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.start() + s.as_str().trim_end().len())
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span(&pair),
    }
}

fn model_def(pair: Pair<Rule>) -> Result<ModelDef, Diagnostic> {
    let sp = span(&pair);
    let mut inner = pair.into_inner();
    let name = ident(inner.next().expect("grammar: a definition has a name"));
    let mut params = Vec::new();
    let mut body = Vec::new();
    for p in inner {
        match p.as_rule() {
            Rule::hparams => {
                for hp in p.into_inner() {
                    let mut it = hp.into_inner();
                    let name = ident(it.next().expect("grammar: hparam name"));
                    let default = it.next().map(expr).transpose()?;
                    params.push(HyperParam { name, default });
                }
            }
            _ => body.push(stmt(p)?),
        }
    }
    Ok(ModelDef {
        name,
        params,
        body,
        span: sp,
    })
}

fn type_expr(pair: Pair<Rule>) -> Result<TypeExpr, Diagnostic> {
    let sp = span(&pair);
    let mut it = pair.into_inner();
    let dtype = ident(it.next().expect("grammar: dtype"));
    let dims = it.map(expr).collect::<Result<_, _>>()?;
    Ok(TypeExpr {
        dtype,
        dims,
        span: sp,
    })
}

fn stmt(pair: Pair<Rule>) -> Result<Stmt, Diagnostic> {
    let sp = span(&pair);
    let rule = pair.as_rule();
    let mut it = pair.into_inner();
    Ok(match rule {
        Rule::input_stmt => Stmt::Input {
            name: ident(it.next().expect("grammar: input name")),
            ty: type_expr(it.next().expect("grammar: input type"))?,
            span: sp,
        },
        Rule::output_stmt => Stmt::Output {
            name: ident(it.next().expect("grammar: output name")),
            value: it.next().map(expr).transpose()?,
            span: sp,
        },
        Rule::layer_stmt => Stmt::Layer {
            name: ident(it.next().expect("grammar: layer name")),
            call: call(it.next().expect("grammar: layer call"))?,
            span: sp,
        },
        Rule::param_stmt => {
            let mut it = it.skip(1);
            Stmt::Param {
                name: ident(it.next().expect("grammar: param name")),
                ty: type_expr(
                    it.next()
                        .and_then(|t| t.into_inner().next())
                        .expect("grammar: param type"),
                )?,
                init: expr(
                    it.next()
                        .and_then(|i| i.into_inner().next())
                        .expect("grammar: param initializer"),
                )?,
                options: it
                    .map(|setting| {
                        let mut kv = setting.into_inner();
                        let key = ident(kv.next().expect("grammar: option name"));
                        Ok((key, expr(kv.next().expect("grammar: option value"))?))
                    })
                    .collect::<Result<_, Diagnostic>>()?,
                span: sp,
            }
        }
        Rule::return_stmt => Stmt::Return {
            value: expr(it.next().expect("grammar: return value"))?,
            span: sp,
        },
        Rule::let_stmt => {
            let mut parts: Vec<Pair<Rule>> = it.collect();
            let value = expr(parts.pop().expect("grammar: binding value"))?;
            let mut names = parts.into_iter().map(ident);
            Stmt::Let {
                name: names.next().expect("grammar: binding name"),
                more: names.collect(),
                value,
                span: sp,
            }
        }
        r => unreachable!("grammar: unexpected statement {r:?}"),
    })
}

fn sweep_def(pair: Pair<Rule>) -> SweepDef {
    let sp = span(&pair);
    let mut it = pair.into_inner().skip(1);
    let model = ident(it.next().expect("grammar: sweep model name"));
    let settings = it
        .map(|setting| {
            let mut i = setting.into_inner();
            let key = ident(i.next().expect("grammar: setting key"));
            (
                key,
                trimmed_span(&i.next().expect("grammar: setting value")),
            )
        })
        .collect();
    SweepDef {
        model,
        settings,
        span: sp,
    }
}

fn train_def(pair: Pair<Rule>) -> Result<TrainDef, Diagnostic> {
    let sp = span(&pair);
    let mut it = pair.into_inner();
    let model = ident(it.next().expect("grammar: train model name"));
    Ok(TrainDef {
        model,
        items: train_items(it)?,
        span: sp,
    })
}

/// The items of a train section or of one of its steps.
fn train_items<'i>(
    pairs: impl Iterator<Item = Pair<'i, Rule>>,
) -> Result<Vec<TrainItem>, Diagnostic> {
    let mut items = Vec::new();
    for p in pairs {
        let psp = trimmed_span(&p);
        items.push(match p.as_rule() {
            Rule::step_def => {
                let mut i = p.into_inner().skip(1);
                TrainItem::Step {
                    name: ident(i.next().expect("grammar: step name")),
                    items: train_items(i)?,
                    span: psp,
                }
            }
            Rule::term_def => {
                let mut i = p.into_inner().skip(1);
                TrainItem::Term {
                    name: ident(i.next().expect("grammar: term name")),
                    value: expr(i.next().expect("grammar: term value"))?,
                    span: psp,
                }
            }
            Rule::label_stmt => {
                let mut i = p.into_inner();
                TrainItem::Label {
                    name: ident(i.next().expect("grammar: label name")),
                    ty: type_expr(i.next().expect("grammar: label type"))?,
                    span: psp,
                }
            }
            Rule::setting => {
                let mut i = p.into_inner();
                TrainItem::Setting {
                    key: ident(i.next().expect("grammar: setting key")),
                    value: expr(i.next().expect("grammar: setting value"))?,
                    span: psp,
                }
            }
            _ => TrainItem::Call(call(p)?),
        });
    }
    Ok(items)
}

fn expr(pair: Pair<Rule>) -> Result<Expr, Diagnostic> {
    let sp = span(&pair);
    match pair.as_rule() {
        Rule::expr => expr(pair.into_inner().next().expect("grammar: expr body")),
        Rule::pipeline => {
            let mut it = pair.into_inner();
            let mut value = expr(it.next().expect("grammar: pipeline head"))?;
            let mut deep = depth(&value);
            for st in it {
                let stage = stage(st)?;
                deep = deep.max(stage_depth(&stage)) + 1;
                check_depth(deep, stage.span())?;
                let span = Span {
                    start: value.span.start,
                    end: stage.span().end,
                };
                value = Expr {
                    kind: ExprKind::Pipe(Box::new(value), stage),
                    span,
                };
            }
            Ok(value)
        }
        Rule::arith | Rule::term => {
            let mut it = pair.into_inner();
            let mut value = expr(it.next().expect("grammar: operand"))?;
            let mut deep = depth(&value);
            while let Some(op) = it.next() {
                let op_span = span(&op);
                let op = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let rhs = expr(it.next().expect("grammar: right operand"))?;
                deep = deep.max(depth(&rhs)) + 1;
                check_depth(deep, op_span)?;
                let span = Span {
                    start: value.span.start,
                    end: rhs.span.end,
                };
                value = Expr {
                    kind: ExprKind::Binary(op, Box::new(value), Box::new(rhs)),
                    span,
                };
            }
            Ok(value)
        }
        Rule::unary => {
            let parts: Vec<Pair<Rule>> = pair.into_inner().collect();
            let (negs, atom) = parts.split_at(parts.len() - 1);
            let mut value = expr(atom[0].clone())?;
            check_depth(depth(&value) + negs.len(), sp)?;
            for n in negs.iter().rev() {
                value = Expr {
                    span: Span {
                        start: span(n).start,
                        end: value.span.end,
                    },
                    kind: ExprKind::Neg(Box::new(value)),
                };
            }
            Ok(value)
        }
        Rule::number => {
            let text = pair.as_str();
            let integer = !text.contains(['.', 'e', 'E']);
            let value: f64 = text.parse().map_err(|_| {
                Diagnostic::error(ErrorCode::Syntax, format!("`{text}` is not a number"), sp)
            })?;
            if !value.is_finite() {
                return Err(Diagnostic::error(
                    ErrorCode::BadHyperParam,
                    format!("`{text}` is too large for a number"),
                    sp,
                )
                .with_label("overflows to infinity")
                .with_note(format!("the largest number is about {:e}", f64::MAX)));
            }
            Ok(Expr {
                kind: ExprKind::Number { value, integer },
                span: sp,
            })
        }
        Rule::string => Ok(Expr {
            kind: ExprKind::Str(
                pair.into_inner()
                    .next()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
            ),
            span: sp,
        }),
        Rule::list => {
            let list = Expr {
                kind: ExprKind::List(pair.into_inner().map(expr).collect::<Result<_, _>>()?),
                span: sp,
            };
            check_depth(depth(&list), sp)?;
            Ok(list)
        }
        Rule::call => Ok(Expr {
            kind: ExprKind::Call(call(pair)?),
            span: sp,
        }),
        Rule::path => Ok(Expr {
            kind: ExprKind::Path(pair.into_inner().map(ident).collect()),
            span: sp,
        }),
        r => unreachable!("grammar: unexpected expression {r:?}"),
    }
}

fn path_ident(pair: Pair<Rule>) -> Ident {
    // A callee or stage name: a dotted path kept as one name (`std.encoder`).
    ident(pair)
}

fn call(pair: Pair<Rule>) -> Result<Call, Diagnostic> {
    let sp = span(&pair);
    let mut it = pair.into_inner();
    let callee = path_ident(it.next().expect("grammar: callee"));
    let mut args = Vec::new();
    for a in it {
        let mut parts: Vec<Pair<Rule>> = a.into_inner().collect();
        let value = expr(parts.pop().expect("grammar: argument value"))?;
        let name = parts.pop().map(ident);
        args.push(Arg { name, value });
    }
    let call = Call {
        callee,
        args,
        span: sp,
    };
    check_depth(call_depth(&call) + 1, sp)?;
    Ok(call)
}

fn stage(pair: Pair<Rule>) -> Result<Stage, Diagnostic> {
    let sp = span(&pair);
    let inner = pair.into_inner().next().expect("grammar: stage body");
    match inner.as_rule() {
        Rule::call => Ok(Stage::Call(call(inner)?)),
        Rule::path => Ok(Stage::Name(path_ident(inner))),
        Rule::repeat => {
            let mut it = inner.into_inner();
            let count = expr(it.next().expect("grammar: repeat count"))?;
            let stage = stage(it.next().expect("grammar: repeat stage"))?;
            let repeat = Stage::Repeat {
                count: Box::new(count),
                stage: Box::new(stage),
                span: sp,
            };
            check_depth(stage_depth(&repeat), sp)?;
            Ok(repeat)
        }
        r => unreachable!("grammar: unexpected stage {r:?}"),
    }
}

/// Describes what the parser wanted, in words rather than rule names.
fn rule_words(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::model_def => "`model`",
        Rule::block_def => "`block`",
        Rule::train_def => "`train`",
        Rule::sweep_def | Rule::sweep_kw => "`sweep`",
        Rule::ident | Rule::path => "a name",
        Rule::hparams => "`(`",
        Rule::hparam => "a hyper-parameter",
        Rule::input_stmt
        | Rule::output_stmt
        | Rule::layer_stmt
        | Rule::param_stmt
        | Rule::param_kw
        | Rule::return_stmt => "a statement",
        Rule::let_stmt => "a binding `name = …`",
        Rule::tensor_type => "a tensor type like `f32[batch, 64]`",
        Rule::param_type => "`:` and the parameter's type, like `f32[64, 32]`",
        Rule::param_init => "`=` and the parameter's initializer, like `= zeros`",
        Rule::label_stmt | Rule::setting => "a train setting",
        Rule::step_def | Rule::step_kw => "a `step NAME { … }`",
        Rule::term_def | Rule::term_kw => "a `term NAME = …`",
        Rule::expr | Rule::pipeline | Rule::arith | Rule::term | Rule::unary => "an expression",
        Rule::stage | Rule::repeat => "a layer after `|>`",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*` or `/`",
        Rule::neg => "`-`",
        Rule::call => "a call",
        Rule::arg => "an argument",
        Rule::list => "a list",
        Rule::number => "a number",
        Rule::string | Rule::string_inner => "a string",
        Rule::keyword => "a keyword",
        _ => "more input",
    }
}

fn syntax_error(e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut words: Vec<&str> = positives.iter().map(rule_words).collect();
            words.sort();
            words.dedup();
            let expected = match words.as_slice() {
                [one] => one.to_string(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
                [] => String::new(),
            };
            format!("expected {expected}")
        }
        pest::error::ErrorVariant::ParsingError { .. } => "unexpected input".to_string(),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    Diagnostic::error(
        ErrorCode::Syntax,
        format!("syntax error: {message}"),
        Span::new(start, end.max(start + 1)),
    )
    .with_label(message)
}

/// Finds the first unbalanced bracket, which explains a parse error better than the
/// grammar's view of the next token can ("unclosed `[`" at the opener), or the first
/// bracket nested past [`MAX_BRACKET_DEPTH`].
fn check_delimiters(text: &str) -> Result<(), Diagnostic> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    // `repeat N repeat M stage` nests the grammar's recursion as brackets do: the
    // repeats of the chain being read, one count per open bracket (and the top level).
    let mut repeats: Vec<usize> = vec![0];
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                while chars.next_if(|(_, n)| *n != '\n').is_some() {}
            }
            '#' => while chars.next_if(|(_, n)| *n != '\n').is_some() {},
            '"' => {
                while chars.next_if(|(_, n)| *n != '"' && *n != '\n').is_some() {}
                chars.next_if(|(_, n)| *n == '"');
            }
            '=' | ',' => *repeats.last_mut().expect("never empty") = 0,
            '|' if chars.peek().is_some_and(|(_, n)| *n == '>') => {
                *repeats.last_mut().expect("never empty") = 0;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i + 1;
                while let Some((j, _)) =
                    chars.next_if(|(_, n)| n.is_ascii_alphanumeric() || *n == '_')
                {
                    end = j + 1;
                }
                if &text[i..end] == "repeat" {
                    if nesting(&stack, &repeats) == MAX_BRACKET_DEPTH {
                        return Err(too_deep(Span::new(i, end)));
                    }
                    *repeats.last_mut().expect("never empty") += 1;
                }
            }
            '(' | '[' | '{' if nesting(&stack, &repeats) == MAX_BRACKET_DEPTH => {
                return Err(too_deep(Span::new(i, i + 1)));
            }
            '(' | '[' | '{' => {
                stack.push((c, i));
                repeats.push(0);
            }
            ')' | ']' | '}' => {
                if repeats.len() > 1 {
                    repeats.pop();
                }
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((o, _)) if o == open => {}
                    Some((o, at)) => {
                        return Err(Diagnostic::error(
                            ErrorCode::Syntax,
                            format!("syntax error: `{c}` does not close `{o}`"),
                            Span::new(i, i + 1),
                        )
                        .with_label(format!("expected `{}` first", closer(o)))
                        .with_secondary(Span::new(at, at + 1), "unclosed delimiter"));
                    }
                    None => {
                        return Err(Diagnostic::error(
                            ErrorCode::Syntax,
                            format!("syntax error: unexpected `{c}`"),
                            Span::new(i, i + 1),
                        )
                        .with_label("nothing to close here"));
                    }
                }
            }
            _ => {}
        }
    }
    match stack.pop() {
        Some((o, at)) => Err(Diagnostic::error(
            ErrorCode::Syntax,
            format!("syntax error: unclosed `{o}`"),
            Span::new(at, at + 1),
        )
        .with_label(format!("this `{o}` is never closed with `{}`", closer(o)))),
        None => Ok(()),
    }
}

/// How deeply the text nests at a point: its open brackets and `repeat`s.
fn nesting(stack: &[(char, usize)], repeats: &[usize]) -> usize {
    stack.len() + repeats.iter().sum::<usize>()
}

fn too_deep(at: Span) -> Diagnostic {
    Diagnostic::error(
        ErrorCode::TooLarge,
        format!("brackets and `repeat`s nest more than {MAX_BRACKET_DEPTH} deep"),
        at,
    )
    .with_label(format!("level {} of one nest", MAX_BRACKET_DEPTH + 1))
    .with_help("split the expression into several bindings")
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}
