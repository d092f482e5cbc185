use std::collections::BTreeMap;

/// A metadata value, with GGUF's value types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetadataError {
    #[error("metadata key {0:?} is missing")]
    Missing(String),
    #[error("metadata key {key:?} should be {expected}, found {found}")]
    WrongType { key: String, expected: &'static str, found: String },
}

/// Model metadata as GGUF key/value pairs (`llama.block_count`, `tokenizer.ggml.tokens`, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: BTreeMap<String, Value>,
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        self.entries.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<T, MetadataError> {
        let v = self.get(key).ok_or_else(|| MetadataError::Missing(key.to_string()))?;
        f(v).ok_or_else(|| MetadataError::WrongType {
            key: key.to_string(),
            expected,
            found: v.type_name().to_string(),
        })
    }

    pub fn u64(&self, key: &str) -> Result<u64, MetadataError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub fn usize(&self, key: &str) -> Result<usize, MetadataError> {
        self.typed(key, "a non-negative integer", |v| v.as_u64().and_then(|x| usize::try_from(x).ok()))
    }

    pub fn f32(&self, key: &str) -> Result<f32, MetadataError> {
        self.typed(key, "a number", |v| v.as_f64().map(|x| x as f32))
    }

    pub fn bool(&self, key: &str) -> Result<bool, MetadataError> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn str(&self, key: &str) -> Result<&str, MetadataError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn array(&self, key: &str) -> Result<&[Value], MetadataError> {
        self.typed(key, "an array", Value::as_array)
    }

    /// An array of strings (token lists, merges).
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, MetadataError> {
        self.typed(key, "an array of strings", |v| v.as_array()?.iter().map(Value::as_str).collect())
    }

    /// An array of numbers as f32 (token scores).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, MetadataError> {
        self.typed(key, "an array of numbers", |v| v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
    }

    /// An array of integers as i64 (token types).
    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>, MetadataError> {
        self.typed(key, "an array of integers", |v| v.as_array()?.iter().map(Value::as_i64).collect())
    }

    /// The value at `key` if present, or `None`; a present value of the wrong type is an error.
    pub fn opt<T>(
        &self,
        key: &str,
        f: impl Fn(&Metadata, &str) -> Result<T, MetadataError>,
    ) -> Result<Option<T>, MetadataError> {
        if self.contains(key) {
            f(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, MetadataError> {
        self.str("general.architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_convert_and_report() {
        let mut m = Metadata::new();
        m.insert("a", Value::U32(7));
        m.insert("b", Value::String("x".into()));
        m.insert("c", Value::Array(vec![Value::F32(1.5), Value::I32(2)]));
        assert_eq!(m.usize("a"), Ok(7));
        assert_eq!(m.f32("a"), Ok(7.0));
        assert_eq!(m.f32_array("c"), Ok(vec![1.5, 2.0]));
        assert!(matches!(m.u64("b"), Err(MetadataError::WrongType { .. })));
        assert_eq!(m.str("zz"), Err(MetadataError::Missing("zz".into())));
        assert_eq!(m.opt("zz", Metadata::usize), Ok(None));
    }
}
