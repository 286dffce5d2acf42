//! The model file being written: expressions as a person writes them (pipe chains,
//! operators, named layer instances), the bindings, layer instances, declared
//! parameters and outputs, and the weights under the names the file gives them.

use std::collections::HashSet;
use strata_artifact::HostTensor;

/// Stages in one pipe chain before it is bound to a name.
const MAX_STAGES: usize = 8;

/// An expression of the model language.
#[derive(Clone, Debug)]
pub struct Expr {
    pub text: String,
    pub form: Form,
}

/// What an expression looks like from outside: whether it needs parentheses as an
/// operand and how long its pipe chain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A name or a call: an operand as it is.
    Atom,
    /// `x |> a |> b` (the count of stages).
    Pipe(usize),
    /// An operator expression.
    Operator,
}

impl Expr {
    pub fn atom(text: impl Into<String>) -> Expr {
        Expr {
            text: text.into(),
            form: Form::Atom,
        }
    }

    /// As an operand of an operator or an argument.
    pub fn operand(&self) -> String {
        match self.form {
            Form::Atom => self.text.clone(),
            _ => format!("({})", self.text),
        }
    }

    /// As an argument of a call (commas bind looser than any operator).
    pub fn arg(&self) -> String {
        self.text.clone()
    }
}

/// The file in parts, written out in order by [`ModelText::render`].
#[derive(Default)]
pub struct ModelText {
    pub header: Vec<String>,
    /// Blocks the model calls (a loop's cell), each whole, before the model.
    pub blocks: Vec<String>,
    pub inputs: Vec<String>,
    pub layers: Vec<String>,
    pub params: Vec<String>,
    pub body: Vec<String>,
    pub outputs: Vec<String>,
    pub footer: Vec<String>,
    /// Every name taken in the model's scope.
    taken: HashSet<String>,
    bindings: usize,
    pub weights: Vec<(String, HostTensor)>,
}

/// Words a name cannot be: the language's keywords and its built-in functions.
fn reserved(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "model", "block", "train", "input", "output", "layer", "return", "repeat", "label",
        "param", "batch", "step", "maximum", "minimum", "clip", "square", "pow", "float", "int",
        "one_hot", "scan",
    ];
    WORDS.contains(&name) || strata_compiler::elaborate::layers::lookup(name).is_some()
}

/// `name` as an identifier of the language: other characters become `_`, a leading
/// digit gets a letter before it.
pub fn identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_').to_string();
    match s.chars().next() {
        None => "v".into(),
        Some(c) if c.is_ascii_digit() => format!("v{s}"),
        _ => s,
    }
}

impl ModelText {
    /// A fresh name from `hint`, not taken before.
    pub fn take_name(&mut self, hint: &str) -> String {
        let base = identifier(hint);
        let base = if reserved(&base) {
            format!("{base}_layer")
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 1;
        while self.taken.contains(&name) || reserved(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// Whether `name` is taken in this scope or cannot be a name at all.
    pub fn unavailable(&self, name: &str) -> bool {
        self.taken.contains(name) || reserved(name)
    }

    /// Takes `name` as it is (the caller checked [`ModelText::unavailable`]).
    pub fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }

    /// `hN = expr`, returning the name.
    pub fn bind(&mut self, e: Expr) -> Expr {
        if e.form == Form::Atom && !e.text.contains('(') {
            return e;
        }
        let name = loop {
            self.bindings += 1;
            let n = format!("h{}", self.bindings);
            if !self.taken.contains(&n) {
                self.taken.insert(n.clone());
                break n;
            }
        };
        self.body.push(format!("    {name} = {}", e.text));
        Expr::atom(name)
    }

    /// `e` with the binding that named it undone, when it is the last one written (a
    /// block's result read by nothing else is returned as it is).
    pub fn unbind_last(&mut self, e: Expr) -> Expr {
        let bound = self
            .body
            .last()
            .and_then(|l| l.strip_prefix(&format!("    {} = ", e.text)))
            .map(str::to_string);
        match bound {
            Some(text) => {
                self.body.pop();
                Expr {
                    text,
                    form: Form::Operator,
                }
            }
            None => e,
        }
    }

    /// `x |> stage`, binding `x` first when its chain is long.
    pub fn pipe(&mut self, x: Expr, stage: &str) -> Expr {
        let (x, n) = match x.form {
            Form::Atom => (x.text, 0),
            Form::Pipe(n) if n < MAX_STAGES => (x.text, n),
            _ => (self.bind(x).text, 0),
        };
        Expr {
            text: format!("{x} |> {stage}"),
            form: Form::Pipe(n + 1),
        }
    }

    pub fn operator(&self, text: String) -> Expr {
        Expr {
            text,
            form: Form::Operator,
        }
    }

    /// This text as a block: `block NAME(args) { … return ret }`, its layers, parameters
    /// and bindings in the order a model's are written.
    pub fn render_block(&self, name: &str, args: &[String], ret: &Expr) -> String {
        let mut out = format!("block {name}({}) {{\n", args.join(", "));
        for part in [&self.layers, &self.params, &self.body] {
            for l in part {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str(&format!("    return {}\n}}\n", ret.text));
        out
    }

    pub fn render(&self, model: &str) -> String {
        let mut out = String::new();
        for l in &self.header {
            out.push_str(l);
            out.push('\n');
        }
        for b in &self.blocks {
            out.push_str(b);
            out.push('\n');
        }
        out.push_str(&format!("model {model} {{\n"));
        for part in [
            &self.inputs,
            &self.layers,
            &self.params,
            &self.body,
            &self.outputs,
        ] {
            for l in part {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str("}\n");
        for l in &self.footer {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

/// A number as the language reads it back to the same `f32`.
pub fn number(x: f32) -> String {
    let s = format!("{x:?}");
    if x < 0.0 { format!("({s})") } else { s }
}

/// An axis or list of axes.
pub fn axes_arg(axes: &[usize]) -> String {
    match axes {
        [a] => a.to_string(),
        _ => format!(
            "[{}]",
            axes.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_identifiers_that_are_not_builtins() {
        let mut t = ModelText::default();
        assert_eq!(t.take_name("encoder.self_attn"), "encoder_self_attn");
        assert_eq!(t.take_name("lstm"), "lstm_layer");
        assert_eq!(t.take_name("lstm"), "lstm_layer_1");
        assert_eq!(t.take_name("0.weight"), "v0_weight");
    }

    #[test]
    fn numbers_read_back_exactly() {
        for x in [0.1f32, 1e-5, -2.5, 3.0, 1.0 / 3.0] {
            let s = number(x);
            let v: f64 = s.trim_matches(|c| c == '(' || c == ')').parse().unwrap();
            assert_eq!(v as f32, x);
        }
    }
}
