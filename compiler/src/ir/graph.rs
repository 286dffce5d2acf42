//! The graph: a petgraph `StableGraph` of [`Node`]s, edges from operand to user
//! labelled with the operand's position.
//!
//! Invariants (checked by [`Graph::verify`]): acyclic; every node has exactly the
//! operands its op takes, at positions `0..n`; every node's type is what its op's typing
//! rule gives for its operands; input and output names are unique.

use super::op::Op;
use super::types::TensorType;
use crate::source::Span;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

/// A value of the graph (one node's result). Prints as `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub NodeIndex<u32>);

impl ValueId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// One operation and its result type.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    /// Where in the source the value comes from.
    pub span: Span,
}

/// A model's dataflow graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    graph: StableDiGraph<Node, u32, u32>,
    /// Input values in declaration order.
    pub inputs: Vec<ValueId>,
    /// Named outputs in declaration order.
    pub outputs: Vec<(String, ValueId)>,
    /// Persistent values this graph replaces when it runs: `(param, new value)`. A
    /// training step's parameter and optimizer-state updates. Every read of the old
    /// value happens before the new one is stored.
    pub updates: Vec<(ValueId, ValueId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a leaf (input or parameter) with its declared type.
    pub fn add_leaf(&mut self, op: Op, ty: TensorType, span: Span) -> ValueId {
        debug_assert_eq!(op.arity(), Some(0));
        let is_input = matches!(op, Op::Input { .. });
        let id = ValueId(self.graph.add_node(Node { op, ty, span }));
        if is_input {
            self.inputs.push(id);
        }
        id
    }

    /// Adds an op over `operands`, its type given by the op's typing rule.
    pub fn add(&mut self, op: Op, operands: &[ValueId], span: Span) -> Result<ValueId, String> {
        let tys: Vec<&TensorType> = operands.iter().map(|v| &self.graph[v.0].ty).collect();
        let ty = op.infer(&tys)?;
        let id = ValueId(self.graph.add_node(Node { op, ty, span }));
        for (pos, v) in operands.iter().enumerate() {
            self.graph.add_edge(v.0, id.0, pos as u32);
        }
        Ok(id)
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.graph[v.0]
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.graph[v.0].ty
    }

    pub fn contains(&self, v: ValueId) -> bool {
        self.graph.contains_node(v.0)
    }

    /// The operands of `v`, in position order.
    pub fn operands(&self, v: ValueId) -> Vec<ValueId> {
        let mut edges: Vec<(u32, ValueId)> = self
            .graph
            .edges_directed(v.0, Direction::Incoming)
            .map(|e| (*e.weight(), ValueId(e.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// The values that use `v` (each once, in id order).
    pub fn users(&self, v: ValueId) -> Vec<ValueId> {
        let mut users: Vec<ValueId> = self
            .graph
            .neighbors_directed(v.0, Direction::Outgoing)
            .map(ValueId)
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Every value, in id order.
    pub fn values(&self) -> Vec<ValueId> {
        let mut ids: Vec<ValueId> = self.graph.node_indices().map(ValueId).collect();
        ids.sort();
        ids
    }

    /// The values added since `mark` ([`Graph::index_bound`] then) was taken, in id order, when nothing was removed
    /// from the graph before they were added (removal frees slots that new values reuse).
    /// Costs what was added, not the whole graph.
    pub fn values_since(&self, mark: usize) -> impl Iterator<Item = ValueId> + '_ {
        (mark..self.graph.node_bound())
            .map(NodeIndex::new)
            .filter(|&i| self.graph.contains_node(i))
            .map(ValueId)
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// One more than the largest value index: a vector of this length has a slot for
    /// every value, and a mark for [`Graph::values_since`].
    pub fn index_bound(&self) -> usize {
        self.graph.node_bound()
    }

    /// Values in a topological order, ties broken by id so the order is stable.
    pub fn topo_order(&self) -> Vec<ValueId> {
        // Where every operand is older than its user (a graph as built, before passes
        // rewire uses to newer values), the ids ascending are that order: at each step
        // the smallest id left is ready. Checked in one scan of the edges.
        let ascending = self
            .graph
            .edge_indices()
            .all(|e| self.graph.edge_endpoints(e).is_some_and(|(a, b)| a < b));
        if ascending {
            let mut order: Vec<ValueId> = self.graph.node_indices().map(ValueId).collect();
            order.sort_unstable();
            return order;
        }
        // Kahn's algorithm with the ready values in a min-heap; counts indexed by node.
        let mut pending = vec![0usize; self.graph.node_bound()];
        let mut ready = BinaryHeap::new();
        for n in self.graph.node_indices() {
            let count = self.graph.edges_directed(n, Direction::Incoming).count();
            pending[n.index()] = count;
            if count == 0 {
                ready.push(Reverse(ValueId(n)));
            }
        }
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse(v)) = ready.pop() {
            order.push(v);
            for e in self.graph.edges_directed(v.0, Direction::Outgoing) {
                let u = e.target();
                pending[u.index()] -= 1;
                if pending[u.index()] == 0 {
                    ready.push(Reverse(ValueId(u)));
                }
            }
        }
        order
    }

    /// Parameter values with their paths, in id order.
    pub fn params(&self) -> Vec<(ValueId, &str)> {
        self.values()
            .into_iter()
            .filter_map(|v| match &self.graph[v.0].op {
                Op::Param { path, .. } => Some((v, path.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Copies the values of `body` into this graph with `body`'s inputs replaced by
    /// `inputs` (in order, same types), and returns the copies of `body`'s outputs. Spans
    /// are kept; `body` must have no parameters.
    pub fn inline(&mut self, body: &Graph, inputs: &[ValueId]) -> Result<Vec<ValueId>, String> {
        let map = self.inline_mapped(body, inputs)?;
        Ok(body.outputs.iter().map(|(_, v)| map[v]).collect())
    }

    /// [`Graph::inline`], returning the copy of every value of `body` (its inputs map to
    /// `inputs`).
    pub fn inline_mapped(
        &mut self,
        body: &Graph,
        inputs: &[ValueId],
    ) -> Result<std::collections::HashMap<ValueId, ValueId>, String> {
        if inputs.len() != body.inputs.len() {
            return Err(format!(
                "`{}` takes {} input(s), got {}",
                body.name,
                body.inputs.len(),
                inputs.len()
            ));
        }
        let mut map: std::collections::HashMap<ValueId, ValueId> = body
            .inputs
            .iter()
            .copied()
            .zip(inputs.iter().copied())
            .collect();
        for (&i, &v) in body.inputs.iter().zip(inputs) {
            if body.ty(i) != self.ty(v) {
                return Err(format!(
                    "input {i} of `{}` is {} but is given {}",
                    body.name,
                    body.ty(i),
                    self.ty(v)
                ));
            }
        }
        for v in body.topo_order() {
            if map.contains_key(&v) {
                continue;
            }
            let node = body.node(v);
            if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
                return Err(format!("`{}` reads a leaf that is not an input", body.name));
            }
            let operands: Vec<ValueId> = body.operands(v).iter().map(|o| map[o]).collect();
            let copy = self.add(node.op.clone(), &operands, node.span)?;
            map.insert(v, copy);
        }
        Ok(map)
    }

    /// Gives input `v` type `ty`, keeping its place among the inputs. Its users' types
    /// were inferred from the old one: the caller rewires or removes them.
    pub fn retype_input(&mut self, v: ValueId, ty: TensorType) {
        debug_assert!(self.inputs.contains(&v));
        self.graph[v.0].ty = ty;
    }

    /// Sets the source span of `v` (for values built from text other than the model's).
    pub fn set_span(&mut self, v: ValueId, span: Span) {
        self.graph[v.0].span = span;
    }

    /// Removes `v`; it must have no users.
    pub fn remove(&mut self, v: ValueId) {
        debug_assert!(self.users(v).is_empty());
        self.graph.remove_node(v.0);
        self.inputs.retain(|i| *i != v);
    }

    /// Removes `values`, none of which may have users, freeing their slots in the order
    /// given (the order later values reuse them in, as [`Graph::remove`] one by one
    /// would). Their operand edges go first, highest index first, which is mostly newest
    /// first: an edge is unlinked from its operand's list of users by a walk from the
    /// newest user, so removing a thousand users of one value (a shared constant, the
    /// step counter) oldest first would walk a thousand times over the rest.
    pub fn remove_all(&mut self, values: &[ValueId]) {
        let mut edges: Vec<petgraph::stable_graph::EdgeIndex<u32>> = values
            .iter()
            .flat_map(|v| {
                self.graph
                    .edges_directed(v.0, Direction::Incoming)
                    .map(|e| e.id())
            })
            .collect();
        edges.sort_unstable_by(|a, b| b.cmp(a));
        for e in edges {
            self.graph.remove_edge(e);
        }
        for &v in values {
            self.remove(v);
        }
    }

    /// Makes every use of `old` a use of `new`: operand edges (same positions), outputs,
    /// and the new-value side of updates (a parameter stays the parameter it is). `new`
    /// must have `old`'s type and must not be computed from `old`; `old` is left without
    /// users, for the caller (or dead-code elimination) to remove.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        self.replace_operand_uses(old, new);
        for (_, v) in &mut self.outputs {
            if *v == old {
                *v = new;
            }
        }
        for (_, v) in &mut self.updates {
            if *v == old {
                *v = new;
            }
        }
    }

    /// [`Graph::replace_all_uses`] for operand edges only: outputs and updates still
    /// name `old` until [`Graph::replace_in_outputs`]. A pass replacing many values does
    /// that once at the end, rather than scanning every output and update per value.
    pub fn replace_operand_uses(&mut self, old: ValueId, new: ValueId) {
        if old == new {
            return;
        }
        let edges: Vec<(NodeIndex<u32>, u32, petgraph::stable_graph::EdgeIndex<u32>)> = self
            .graph
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight(), e.id()))
            .collect();
        for (target, pos, id) in edges {
            self.graph.remove_edge(id);
            self.graph.add_edge(new.0, target, pos);
        }
    }

    /// Replaces, in the outputs and the new-value side of updates, every value that
    /// `replaced` maps by its replacement.
    pub fn replace_in_outputs(&mut self, replaced: &std::collections::HashMap<ValueId, ValueId>) {
        if replaced.is_empty() {
            return;
        }
        for (_, v) in &mut self.outputs {
            if let Some(new) = replaced.get(v) {
                *v = *new;
            }
        }
        for (_, v) in &mut self.updates {
            if let Some(new) = replaced.get(v) {
                *v = *new;
            }
        }
    }

    /// Puts a computation between `old` and its present users: `build` makes a value
    /// from `old` (of `old`'s type), and every use of `old` that existed before the call
    /// (operands, outputs, the new-value side of updates) becomes a use of it. The nodes
    /// `build` adds keep their operand edges from `old`.
    pub fn interpose(
        &mut self,
        old: ValueId,
        build: impl FnOnce(&mut Graph, ValueId) -> Result<ValueId, String>,
    ) -> Result<ValueId, String> {
        let edges: Vec<(NodeIndex<u32>, u32, petgraph::stable_graph::EdgeIndex<u32>)> = self
            .graph
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight(), e.id()))
            .collect();
        let outputs: Vec<usize> = (0..self.outputs.len())
            .filter(|&i| self.outputs[i].1 == old)
            .collect();
        let updates: Vec<usize> = (0..self.updates.len())
            .filter(|&i| self.updates[i].1 == old)
            .collect();
        let new = build(self, old)?;
        if self.ty(new) != self.ty(old) {
            return Err(format!(
                "an interposed value must keep the type {}, got {}",
                self.ty(old),
                self.ty(new)
            ));
        }
        for (target, pos, id) in edges {
            self.graph.remove_edge(id);
            self.graph.add_edge(new.0, target, pos);
        }
        for i in outputs {
            self.outputs[i].1 = new;
        }
        for i in updates {
            self.updates[i].1 = new;
        }
        Ok(new)
    }

    /// Checks the invariants listed in the module docs.
    pub fn verify(&self) -> Result<(), String> {
        let order = self.topo_order();
        if order.len() != self.graph.node_count() {
            return Err("the graph has a cycle".into());
        }
        for v in order {
            let node = &self.graph[v.0];
            let operands = self.operands(v);
            let positions: Vec<u32> = {
                let mut p: Vec<u32> = self
                    .graph
                    .edges_directed(v.0, Direction::Incoming)
                    .map(|e| *e.weight())
                    .collect();
                p.sort();
                p
            };
            if positions.iter().enumerate().any(|(i, p)| *p as usize != i) {
                return Err(format!("{v}: operand positions {positions:?} are not 0..n"));
            }
            match node.op {
                Op::Input { .. } | Op::Param { .. } => {
                    if !operands.is_empty() {
                        return Err(format!("{v}: a leaf with operands"));
                    }
                }
                _ => {
                    let tys: Vec<&TensorType> = operands.iter().map(|o| self.ty(*o)).collect();
                    let ty = node
                        .op
                        .infer(&tys)
                        .map_err(|e| format!("{v} ({}): {e}", node.op.mnemonic()))?;
                    if ty != node.ty {
                        return Err(format!(
                            "{v} ({}): recorded type {} but its operands give {ty}",
                            node.op.mnemonic(),
                            node.ty
                        ));
                    }
                }
            }
        }
        for (name, v) in &self.outputs {
            if !self.contains(*v) {
                return Err(format!("output `{name}` refers to a removed value"));
            }
        }
        for (param, new) in &self.updates {
            if !self.contains(*param) || !self.contains(*new) {
                return Err(format!("update of {param} refers to a removed value"));
            }
            if !matches!(self.node(*param).op, Op::Param { .. }) {
                return Err(format!("update of {param}: only parameters are persistent"));
            }
            if self.ty(*param) != self.ty(*new) {
                return Err(format!(
                    "update of {param}: {} replaced by {}",
                    self.ty(*param),
                    self.ty(*new)
                ));
            }
        }
        let mut names: Vec<&str> = self.outputs.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("duplicate output names".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, Dim, UnaryOp};
    use crate::source::Span;

    /// The smallest id whose operands are all placed, repeatedly: the order `topo_order`
    /// promises, computed the slow way.
    fn smallest_first(g: &Graph) -> Vec<ValueId> {
        let mut left = g.values();
        left.sort_unstable();
        let mut placed = std::collections::HashSet::new();
        let mut order = Vec::new();
        while !left.is_empty() {
            let at = left
                .iter()
                .position(|v| g.operands(*v).iter().all(|o| placed.contains(o)))
                .expect("a DAG");
            let v = left.remove(at);
            placed.insert(v);
            order.push(v);
        }
        order
    }

    /// A chain of adds and negations over one input, each reading two earlier values.
    fn grown(n: u64) -> Graph {
        let mut g = Graph::new("T");
        let x = g.add_leaf(
            Op::Input { name: "x".into() },
            crate::ir::TensorType::f32(vec![Dim::Batch, Dim::Fixed(3)]),
            Span::default(),
        );
        let mut values = vec![x];
        for i in 0..n {
            let a = values[(i * 7 % values.len() as u64) as usize];
            let b = values[(i * 3 % values.len() as u64) as usize];
            let v = match i % 3 {
                0 => g.add(Op::Unary(UnaryOp::Neg), &[a], Span::default()),
                _ => g.add(Op::Binary(BinaryOp::Add), &[a, b], Span::default()),
            };
            values.push(v.expect("adds"));
        }
        g.outputs
            .push(("y".into(), *values.last().expect("values")));
        g
    }

    #[test]
    fn topo_order_is_the_smallest_id_first_order_with_and_without_rewired_uses() {
        let mut g = grown(60);
        // Operands older than users: the ascending-ids path.
        assert_eq!(g.topo_order(), smallest_first(&g));
        // Rewire uses of early values to newer ones: the heap path.
        for old in [3, 10, 25] {
            let old = g.values()[old];
            let op = g.node(old).op.clone();
            let newer = g.add(op, &g.operands(old), Span::default()).expect("adds");
            g.replace_all_uses(old, newer);
            let (mut with_old, mut without) = (g.values(), g.topo_order());
            with_old.sort_unstable();
            without.sort_unstable();
            assert_eq!(with_old, without, "every value once");
        }
        assert_eq!(g.topo_order(), smallest_first(&g));
    }
}
