//! The compiler's limits on what one model file may ask for: how deeply expressions and
//! block calls nest, how large the elaborated graph and the parameters may grow. Every
//! limit is checked where the input first reaches it and refused with a located
//! diagnostic (code E0015), so hostile or mistaken input never overflows the stack,
//! exhausts memory or runs for hours in a later stage.
//!
//! The nesting limits are fixed: they bound recursion in the parser, the syntax tree's
//! own drop and clone, and elaboration, which must stay inside a normal 2 MB thread
//! stack. The size limits are budgets a user with a big machine may raise, with the
//! environment variables [`GRAPH_NODES_VAR`] and [`PARAMETER_BYTES_VAR`] (read by
//! [`Limits::from_env`]).

/// The deepest brackets (`(`, `[`, `{`) and `repeat`s may nest in a model file, together.
pub const MAX_BRACKET_DEPTH: usize = 64;

/// The deepest one expression may nest, counting every operator, pipe stage, call and
/// `repeat` between the expression's top and its deepest leaf (`a |> relu |> relu` is 3
/// deep, `a + a + a` is 3 deep). A longer chain is written as several bindings.
pub const MAX_EXPR_DEPTH: usize = 200;

/// The deepest blocks may call blocks (a block's body calling another block, and so on).
pub const MAX_BLOCK_DEPTH: usize = 64;

/// The environment variable that raises [`Limits::graph_nodes`].
pub const GRAPH_NODES_VAR: &str = "STRATA_MAX_GRAPH_NODES";

/// The environment variable that raises [`Limits::parameter_bytes`].
pub const PARAMETER_BYTES_VAR: &str = "STRATA_MAX_PARAMETER_BYTES";

/// The budgets elaboration checks; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most values the elaborated graph may hold (after every `repeat` and block
    /// call is expanded): later stages copy and walk the graph several times.
    pub graph_nodes: usize,
    /// The most bytes the model's parameters may take (f32 values, before optimizer
    /// state, which may triple it).
    pub parameter_bytes: u64,
}

impl Limits {
    /// 500,000 values, 2 GiB of parameters.
    pub const DEFAULT: Limits = Limits {
        graph_nodes: 500_000,
        parameter_bytes: 2 << 30,
    };

    /// The defaults, raised or lowered by [`GRAPH_NODES_VAR`] and [`PARAMETER_BYTES_VAR`]
    /// when they hold a whole number.
    pub fn from_env() -> Result<Limits, String> {
        let mut limits = Limits::DEFAULT;
        if let Some(n) = env_number(GRAPH_NODES_VAR)? {
            limits.graph_nodes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = env_number(PARAMETER_BYTES_VAR)? {
            limits.parameter_bytes = n;
        }
        Ok(limits)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

fn env_number(var: &str) -> Result<Option<u64>, String> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{var} must be a whole number, got `{text}`")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{var} must be a whole number")),
    }
}
