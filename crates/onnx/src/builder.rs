//! Writing ONNX graphs: nodes with fresh value names, small constants, attributes.

use std::collections::HashMap;

use crate::proto::{
    attribute_type, data_type, AttributeProto, Dimension, NodeProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto,
};

pub(crate) fn value_info(name: &str, elem_type: i32, dims: &[usize]) -> ValueInfoProto {
    let dim = dims.iter().map(|&d| Dimension { dim_value: d as i64 }).collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

pub(crate) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i, ..Default::default() }
}

pub(crate) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints: ints.to_vec(), ..Default::default() }
}

pub(crate) fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::STRING, s: s.as_bytes().to_vec(), ..Default::default() }
}

/// Appends ONNX nodes with fresh value names.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    pub(crate) outputs: Vec<ValueInfoProto>,
    pub(crate) next: usize,
    pub(crate) constants: HashMap<(i32, Vec<u8>, Vec<i64>), String>,
}

impl Builder {
    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}.{}", self.next)
    }

    pub(crate) fn op(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op_type.into(),
            domain: String::new(),
            attribute,
        });
        out
    }

    /// A small constant kept inside the model.
    pub(crate) fn constant(&mut self, elem: i32, raw: Vec<u8>, dims: Vec<i64>) -> String {
        let key = (elem, raw, dims);
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = self.fresh("const");
        let (data_type, raw_data, dims) = key.clone();
        self.initializers.push(TensorProto { dims, data_type, name: name.clone(), raw_data, ..Default::default() });
        self.constants.insert(key, name.clone());
        name
    }

    pub(crate) fn i64s(&mut self, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(data_type::INT64, raw, vec![values.len() as i64])
    }

    pub(crate) fn f32_scalar(&mut self, v: f32) -> String {
        self.constant(data_type::FLOAT, v.to_le_bytes().to_vec(), vec![])
    }

    pub(crate) fn reshape(&mut self, x: &str, dims: &[i64]) -> String {
        let shape = self.i64s(dims);
        self.op("Reshape", &[x, &shape], vec![])
    }

    pub(crate) fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    /// `x[..., start..end]` along `axis`.
    pub(crate) fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        let (s, e, a) = (self.i64s(&[start]), self.i64s(&[end]), self.i64s(&[axis]));
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }

    pub(crate) fn cast(&mut self, x: &str, to: i32) -> String {
        self.op("Cast", &[x], vec![attr_int("to", to as i64)])
    }
}
