//! Values that elaboration computes: tensors (graph values) and compile-time constants.

use crate::ir::ValueId;
use crate::source::Span;

/// What a name or an expression stands for during elaboration.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A tensor: a value of the graph being built.
    Tensor(ValueId),
    /// A compile-time number (hyper-parameters, literals, arithmetic on them).
    Number {
        value: f64,
        integer: bool,
    },
    Str(String),
    Bool(bool),
    List(Vec<Value>),
    /// A bare name that is not bound to a value: a layer, block, initializer or `batch`.
    Symbol(String),
    /// A layer instance declared with `layer name = call(...)`.
    Instance(String),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "a tensor",
            Value::Number { integer: true, .. } => "an integer",
            Value::Number { .. } => "a number",
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::List(_) => "a list",
            Value::Symbol(_) => "a name",
            Value::Instance(_) => "a layer instance",
        }
    }

    pub fn number(value: f64) -> Value {
        Value::Number {
            value,
            integer: value.fract() == 0.0 && value.abs() < 9.0e15,
        }
    }
}

/// A value with the span of the expression that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned {
    pub value: Value,
    pub span: Span,
}

/// A hyper-parameter value given on the command line (`--set name=value`).
pub fn parse_override(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number {
            value: i as f64,
            integer: true,
        };
    }
    if let Ok(f) = text.parse::<f64>() {
        return Value::Number {
            value: f,
            integer: false,
        };
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::Str(text.to_string()),
    }
}
