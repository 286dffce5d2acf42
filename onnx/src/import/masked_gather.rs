//! Strata's guarded gather as `embedding`.
//!
//! ONNX's `Gather` counts a negative id from the end and leaves one past the rows
//! undefined, where Strata's `gather` (and so `embedding`) gives a row of zeros, so
//! Strata's export guards the ids (docs/onnx.md, the export table):
//!
//! ```text
//! inside = And(GreaterOrEqual(ids, 0), Less(ids, rows))
//! picked = Gather(table, Where(inside, ids, 0), axis = 0)
//! out    = Mul(picked, Cast(Unsqueeze(inside, -1), float))
//! ```
//!
//! which is exactly `embedding` of `ids` for every id. The parts are followed lazily
//! ([`Guard`]) from the comparisons to the product, which becomes the layer; a part read
//! anywhere else is an error, since the language has no boolean tensors to write it
//! with.

use super::known::{Known, SymInt, norm_axis};
use super::{Dyn, Importer, R, Val};
use crate::proto::pb;

/// A value on the way from the ids to the guarded rows.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The ONNX name of the ids every part is computed from.
    ids: String,
    stage: Stage,
    /// The ONNX value's shape.
    pub shape: Vec<SymInt>,
}

#[derive(Clone, Debug)]
enum Stage {
    /// `ids >= 0`.
    NotNegative,
    /// `ids < rows`.
    Below(i64),
    /// `0 <= ids < rows`.
    Inside(i64),
    /// The ids with those outside `0..rows` replaced by 0.
    Safe(i64),
    /// `inside` with a last axis of 1, and whether it is cast to float yet.
    Column { rows: i64, float: bool },
    /// The table's rows by the safe ids, before the mask: the embedding itself, as an id
    /// outside the table is zeroed by the mask's product only.
    Picked { rows: i64, rows_of: Box<Dyn> },
}

impl Guard {
    /// Why a part read other than as the pattern cannot be written.
    pub fn unfinished(&self) -> String {
        format!(
            "a part of a guarded gather of `{}` (ids checked against a table's rows, `Where`, the mask of the rows) read other than as the pattern Strata's export writes for `embedding`: the language has no boolean tensors to write it with",
            self.ids
        )
    }
}

impl Importer<'_> {
    /// `GreaterOrEqual`, `Less`, `And` and `Where`, read only as parts of the guard.
    pub(super) fn guard_op(&mut self, n: &pb::NodeProto) -> R<()> {
        let op = n.op_type.as_str();
        let not_guard = || {
            format!(
                "`{op}` is imported only as a part of the guard of Strata's gather (ids checked against a table's rows): the language's comparisons give 1.0 or 0.0, not booleans"
            )
        };
        if n.input.len() != if op == "Where" { 3 } else { 2 } {
            return Err(format!("{} inputs", n.input.len()));
        }
        let guard = match (op, self.need(n, 0)?, self.need(n, 1)?) {
            ("GreaterOrEqual" | "Less", Val::Dyn(ids), Val::Known(bound)) if !ids.float => {
                let bound = scalar_int(&bound).ok_or_else(not_guard)?;
                let stage = match (op, bound) {
                    ("GreaterOrEqual", 0) => Stage::NotNegative,
                    ("Less", rows) if rows > 0 => Stage::Below(rows),
                    _ => return Err(not_guard()),
                };
                Guard {
                    ids: n.input[0].clone(),
                    stage,
                    shape: ids.shape(),
                }
            }
            ("And", Val::Guard(a), Val::Guard(b)) if a.ids == b.ids => {
                let rows = match (&a.stage, &b.stage) {
                    (Stage::NotNegative, Stage::Below(r))
                    | (Stage::Below(r), Stage::NotNegative) => *r,
                    _ => return Err(not_guard()),
                };
                Guard {
                    stage: Stage::Inside(rows),
                    ..a
                }
            }
            ("Where", Val::Guard(inside), Val::Dyn(_)) => {
                let Stage::Inside(rows) = inside.stage else {
                    return Err(not_guard());
                };
                let zero = match self.need(n, 2)? {
                    Val::Known(k) => scalar_int(&k),
                    _ => None,
                };
                if n.input[1] != inside.ids || zero != Some(0) {
                    return Err(not_guard());
                }
                Guard {
                    stage: Stage::Safe(rows),
                    ..inside
                }
            }
            _ => return Err(not_guard()),
        };
        self.set(n, 0, Val::Guard(guard));
        Ok(())
    }

    /// `Unsqueeze` of the ids' test to a last axis of 1 (the mask's column), or `None`
    /// for any other unsqueeze of a guard.
    pub(super) fn guard_unsqueeze(&self, g: &Guard, target: &[SymInt]) -> Option<Val> {
        let Stage::Inside(rows) = g.stage else {
            return None;
        };
        let mut column = g.shape.clone();
        column.push(SymInt::fixed(1));
        (target == column).then(|| {
            Val::Guard(Guard {
                stage: Stage::Column { rows, float: false },
                shape: column,
                ids: g.ids.clone(),
            })
        })
    }

    /// `Cast` of the mask's column to float.
    pub(super) fn guard_cast(&self, g: &Guard, float: bool) -> R<Val> {
        match g.stage {
            Stage::Column { rows, float: false } if float => Ok(Val::Guard(Guard {
                stage: Stage::Column { rows, float: true },
                ..g.clone()
            })),
            _ => Err(g.unfinished()),
        }
    }

    /// `Gather` of a table's rows by the safe ids: the embedding, waiting for its mask.
    pub(super) fn guard_gather(
        &mut self,
        n: &pb::NodeProto,
        table: Known,
        ids: &Guard,
        axis: i64,
    ) -> R<Val> {
        let Stage::Safe(rows) = ids.stage else {
            return Err(ids.unfinished());
        };
        if norm_axis(axis, table.dims.len())? != 0 || table.dims.first() != Some(&(rows as usize)) {
            return Err(format!(
                "a guarded gather of ids below {rows} from a table of shape {:?} along axis {axis}: the guard is the table's rows",
                table.dims
            ));
        }
        let raw = match self.val(&ids.ids)? {
            Val::Dyn(d) => d,
            _ => return Err(ids.unfinished()),
        };
        let rows_of = self.embedding_of(n, table, raw)?;
        Ok(Val::Guard(Guard {
            stage: Stage::Picked {
                rows,
                rows_of: Box::new(rows_of.clone()),
            },
            shape: rows_of.shape(),
            ids: ids.ids.clone(),
        }))
    }

    /// `Mul` of the picked rows by their mask: `embedding` of the ids, or `None` when
    /// neither operand is a guard.
    pub(super) fn guard_product(&mut self, x: &Val, y: &Val) -> R<Option<Dyn>> {
        let (picked, mask) = match (x, y) {
            (Val::Guard(a), Val::Guard(b)) => match (&a.stage, &b.stage) {
                (Stage::Picked { .. }, _) => (a, b),
                _ => (b, a),
            },
            (Val::Guard(g), _) | (_, Val::Guard(g)) => return Err(g.unfinished()),
            _ => return Ok(None),
        };
        match (&picked.stage, &mask.stage) {
            (
                Stage::Picked { rows, rows_of },
                Stage::Column {
                    rows: r,
                    float: true,
                },
            ) if rows == r && picked.ids == mask.ids => Ok(Some((**rows_of).clone())),
            _ => Err(picked.unfinished()),
        }
    }
}

/// The one integer of a known scalar (or one-element) tensor.
fn scalar_int(k: &Known) -> Option<i64> {
    match k.as_i64s() {
        Ok(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    }
}
