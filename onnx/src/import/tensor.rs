//! Reading an ONNX file's tensors and node attributes: initializers and `Constant`
//! values as [`Known`] tensors, with every length checked against the shape.

use super::known::{Known, SymInt, numel};
use crate::proto::pb;
use pb::attribute_proto::AttributeType;
use pb::tensor_proto::DataType;

/// A `TensorProto` as a known tensor: `float` as `f32`, every integer type and `bool`
/// as integers; other types (and external data) are an error.
pub fn read_tensor(t: &pb::TensorProto) -> Result<Known, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = numel(&dims)?;
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err(format!(
            "tensor `{}` keeps its data in an external file, which import does not read",
            t.name
        ));
    }
    let raw = &t.raw_data;
    let ty = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let check = |len: usize| -> Result<(), String> {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "tensor `{}` of shape {dims:?} holds {len} elements",
                t.name
            ))
        }
    };
    let mut known = match ty {
        DataType::Float => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            if !raw.is_empty() && !raw.len().is_multiple_of(4) {
                return Err(format!(
                    "tensor `{}`: raw data of {} bytes",
                    t.name,
                    raw.len()
                ));
            }
            check(v.len())?;
            Known::f32(dims, v)
        }
        DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint8
        | DataType::Bool => {
            let width = match ty {
                DataType::Int64 => 8,
                DataType::Int32 => 4,
                DataType::Int16 => 2,
                _ => 1,
            };
            let v: Vec<i64> = if raw.is_empty() {
                match ty {
                    DataType::Int64 => t.int64_data.clone(),
                    _ => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
                }
            } else {
                if !raw.len().is_multiple_of(width) {
                    return Err(format!(
                        "tensor `{}`: raw data of {} bytes",
                        t.name,
                        raw.len()
                    ));
                }
                raw.chunks_exact(width)
                    .map(|c| match width {
                        8 => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                        4 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                        2 => i64::from(i16::from_le_bytes([c[0], c[1]])),
                        _ if ty == DataType::Int8 => i64::from(c[0] as i8),
                        _ => i64::from(c[0]),
                    })
                    .collect()
            };
            check(v.len())?;
            Known::ints(dims, v.into_iter().map(SymInt::fixed).collect())
        }
        other => {
            return Err(format!(
                "tensor `{}` has element type {other:?}; import reads float and integer tensors",
                t.name
            ));
        }
    };
    if !t.name.is_empty() {
        known.origin = Some(t.name.clone());
    }
    Ok(known)
}

/// A node's attributes, read by name; [`Attrs::finish`] rejects the ones no reader
/// asked for, so an attribute that changes the meaning is never silently dropped.
pub struct Attrs<'n> {
    node: &'n pb::NodeProto,
    read: Vec<&'n str>,
}

impl<'n> Attrs<'n> {
    pub fn new(node: &'n pb::NodeProto) -> Attrs<'n> {
        Attrs {
            node,
            read: Vec::new(),
        }
    }

    fn get(&mut self, name: &'n str) -> Option<&'n pb::AttributeProto> {
        self.read.push(name);
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn typed(
        &mut self,
        name: &'n str,
        ty: AttributeType,
    ) -> Result<Option<&'n pb::AttributeProto>, String> {
        match self.get(name) {
            Some(a) if a.r#type == ty as i32 => Ok(Some(a)),
            Some(a) if !a.ref_attr_name.is_empty() => Err(format!(
                "attribute `{name}` refers to a function's attribute, which import does not read"
            )),
            Some(_) => Err(format!("attribute `{name}` is not of type {ty:?}")),
            None => Ok(None),
        }
    }

    pub fn int(&mut self, name: &'n str, default: i64) -> Result<i64, String> {
        Ok(self
            .typed(name, AttributeType::Int)?
            .map_or(default, |a| a.i))
    }

    pub fn float(&mut self, name: &'n str, default: f32) -> Result<f32, String> {
        Ok(self
            .typed(name, AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&mut self, name: &'n str) -> Result<Option<Vec<i64>>, String> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&mut self, name: &'n str) -> Result<Option<Vec<f32>>, String> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&mut self, name: &'n str) -> Result<Option<String>, String> {
        Ok(self
            .typed(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn strings(&mut self, name: &'n str) -> Result<Option<Vec<String>>, String> {
        Ok(self.typed(name, AttributeType::Strings)?.map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        }))
    }

    pub fn tensor(&mut self, name: &'n str) -> Result<Option<&'n pb::TensorProto>, String> {
        Ok(self
            .typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// A subgraph attribute (a `Scan`'s body).
    pub fn graph(&mut self, name: &'n str) -> Result<Option<&'n pb::GraphProto>, String> {
        Ok(self
            .typed(name, AttributeType::Graph)?
            .and_then(|a| a.g.as_ref()))
    }

    /// Every attribute the node has was read.
    pub fn finish(self) -> Result<(), String> {
        match self
            .node
            .attribute
            .iter()
            .find(|a| !self.read.contains(&a.name.as_str()))
        {
            Some(a) => Err(format!("attribute `{}` is not supported", a.name)),
            None => Ok(()),
        }
    }
}
