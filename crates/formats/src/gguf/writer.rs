//! The GGUF writer: metadata and tensors in, a version 3 file out, laid out as ggml lays it out
//! (data section and every tensor aligned, each tensor padded to the alignment).
//!
//! Tensors are either added with their bytes ([`GgufWriter::add_tensor`]) or only declared
//! ([`GgufWriter::declare_tensor`]) and streamed after the header ([`GgufWriter::stream`]), so
//! that a quantizer holds one converted tensor at a time rather than the whole model.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use tessera_core::{DType, Shape};

use super::value_type as vt;
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, VERSION};
use crate::{Metadata, Value};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing GGUF: {0}")]
    Io(#[from] io::Error),
    #[error("metadata key {0:?} added twice")]
    DuplicateKey(String),
    #[error("tensor {0:?} added twice")]
    DuplicateTensor(String),
    #[error("metadata key {key:?}: array elements must all have one type ({first} then {other})")]
    MixedArray { key: String, first: &'static str, other: &'static str },
    #[error("alignment {0} is not a power of two that fits in a u32")]
    BadAlignment(u64),
    #[error("tensor {name:?}: {what}")]
    BadTensor { name: String, what: String },
}

struct PendingTensor<'a> {
    name: String,
    dtype: DType,
    shape: Shape,
    /// Bytes the tensor occupies (before padding).
    size: usize,
    /// `None` for a declared tensor, whose bytes come through a [`GgufStream`].
    bytes: Option<Cow<'a, [u8]>>,
}

/// Collects metadata and tensors, then writes them as one GGUF file. Tensor bytes may be
/// borrowed (from a mapped source model) or owned (freshly quantized).
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
    alignment: u64,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry; entries are written in the order added. Setting
    /// `general.alignment` also sets the alignment the data is written with.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) -> Result<(), WriteError> {
        let key = key.into();
        check_homogeneous(&key, &value)?;
        if self.keys.contains(&key) {
            return Err(WriteError::DuplicateKey(key));
        }
        if key == ALIGNMENT_KEY {
            match value.as_u64() {
                Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => self.alignment = a,
                _ => return Err(WriteError::BadAlignment(value.as_u64().unwrap_or(0))),
            }
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds every entry of `metadata` (in key order).
    pub fn add_all_metadata(&mut self, metadata: &Metadata) -> Result<(), WriteError> {
        for (k, v) in metadata.iter() {
            self.add_metadata(k.clone(), v.clone())?;
        }
        Ok(())
    }

    /// Sets the alignment (default 32), recording it as `general.alignment` as ggml does.
    pub fn set_alignment(&mut self, alignment: u64) -> Result<(), WriteError> {
        if !alignment.is_power_of_two() || alignment > u32::MAX as u64 {
            return Err(WriteError::BadAlignment(alignment));
        }
        self.add_metadata(ALIGNMENT_KEY, Value::U32(alignment as u32))
    }

    /// Adds a tensor: `shape` is row-major (outermost first) and `bytes` must hold exactly
    /// the tensor in `dtype`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Shape,
        bytes: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), WriteError> {
        let name = name.into();
        let bytes = bytes.into();
        let size = self.check_tensor(&name, dtype, &shape)?;
        if bytes.len() != size {
            let what = format!("{shape} of {dtype} is {size} bytes, got {}", bytes.len());
            return Err(WriteError::BadTensor { name, what });
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor { name, dtype, shape, size, bytes: Some(bytes) });
        Ok(())
    }

    /// Declares a tensor whose bytes are written later, in declaration order, through
    /// [`GgufWriter::stream`].
    pub fn declare_tensor(&mut self, name: impl Into<String>, dtype: DType, shape: Shape) -> Result<(), WriteError> {
        let name = name.into();
        let size = self.check_tensor(&name, dtype, &shape)?;
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor { name, dtype, shape, size, bytes: None });
        Ok(())
    }

    /// Checks a tensor about to be added and returns its size in bytes.
    fn check_tensor(&self, name: &str, dtype: DType, shape: &Shape) -> Result<usize, WriteError> {
        let bad = |what: String| WriteError::BadTensor { name: name.to_string(), what };
        if dtype.ggml_id().is_none() {
            return Err(bad(format!("{dtype} has no ggml type id, so GGUF cannot hold it")));
        }
        if shape.rank() > MAX_DIMS {
            return Err(bad(format!("{} dimensions; GGUF allows at most {MAX_DIMS}", shape.rank())));
        }
        if !shape.cols().is_multiple_of(dtype.block_len()) {
            return Err(bad(format!("rows of {} are not whole {dtype} blocks", shape.cols())));
        }
        let count = shape.checked_count().map_err(|e| bad(e.to_string()))?;
        let size = dtype.bytes_for(count).map_err(|e| bad(e.to_string()))?;
        if self.names.contains(name) {
            return Err(WriteError::DuplicateTensor(name.to_string()));
        }
        Ok(size)
    }

    /// Writes the file to `out`. Every tensor must have been added with its bytes; a writer
    /// with declared tensors writes through [`GgufWriter::stream`] instead.
    pub fn write(&self, out: &mut impl Write) -> Result<(), WriteError> {
        if let Some(t) = self.tensors.iter().find(|t| t.bytes.is_none()) {
            let what = "was declared without bytes; write this file with `stream`".to_string();
            return Err(WriteError::BadTensor { name: t.name.clone(), what });
        }
        self.stream(out)?.finish()
    }

    /// Writes the header (metadata and tensor infos) to `out` and returns a stream that takes
    /// the declared tensors' bytes in declaration order; tensors added with their bytes are
    /// written in their place without being asked for.
    pub fn stream<'s, W: Write>(&'s self, out: &'s mut W) -> Result<GgufStream<'s, 'a, W>, WriteError> {
        let mut w = Counting { inner: out, written: 0 };
        self.write_header(&mut w)?;
        Ok(GgufStream { out: w, tensors: &self.tensors, next: 0, alignment: self.alignment })
    }

    fn write_header<W: Write>(&self, w: &mut Counting<'_, W>) -> Result<(), WriteError> {
        w.write_all(&MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(&mut *w, key)?;
            w.write_all(&type_id(value).to_le_bytes())?;
            write_value(&mut *w, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut *w, &t.name)?;
            w.write_all(&(t.shape.rank() as u32).to_le_bytes())?;
            for &d in t.shape.dims().iter().rev() {
                w.write_all(&(d as u64).to_le_bytes())?;
            }
            // add_tensor admits only types with an id.
            let id = t.dtype.ggml_id().unwrap_or(u32::MAX);
            w.write_all(&id.to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset += padded(t.size as u64, self.alignment);
        }
        if !self.tensors.is_empty() {
            pad(w, self.alignment)?;
        }
        Ok(())
    }

    /// Writes the file to `path` (through a buffer).
    pub fn write_file(&self, path: &Path) -> Result<(), WriteError> {
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        self.write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }

    /// The file as bytes; handy for tests and small files.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::new();
        self.write(&mut out)?;
        Ok(out)
    }
}

/// The data section of a file being written: tensor bytes in declaration order, each padded to
/// the alignment. Made by [`GgufWriter::stream`]; [`GgufStream::finish`] checks that every
/// tensor was written.
pub struct GgufStream<'s, 'a, W: Write> {
    out: Counting<'s, W>,
    tensors: &'s [PendingTensor<'a>],
    next: usize,
    alignment: u64,
}

impl<W: Write> GgufStream<'_, '_, W> {
    /// Writes the bytes of declared tensor `name`, which must be the next one in declaration
    /// order (after any tensors that came with their bytes).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        self.write_stored()?;
        let bad = |what: String| WriteError::BadTensor { name: name.to_string(), what };
        let Some(t) = self.tensors.get(self.next) else {
            return Err(bad("written after every declared tensor".to_string()));
        };
        if t.name != name {
            return Err(bad(format!("written out of order: {:?} comes next", t.name)));
        }
        if bytes.len() != t.size {
            return Err(bad(format!("{} of {} is {} bytes, got {}", t.shape, t.dtype, t.size, bytes.len())));
        }
        self.put(bytes)?;
        self.write_stored()
    }

    /// Writes the remaining tensors that came with their bytes and flushes; fails if a declared
    /// tensor was never written.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.write_stored()?;
        if let Some(t) = self.tensors.get(self.next) {
            let what = "was declared but its bytes were never written".to_string();
            return Err(WriteError::BadTensor { name: t.name.clone(), what });
        }
        self.out.flush()?;
        Ok(())
    }

    /// Writes tensors that came with their bytes, up to the next declared one.
    fn write_stored(&mut self) -> Result<(), WriteError> {
        while let Some(bytes) = self.tensors.get(self.next).and_then(|t| t.bytes.as_deref()) {
            self.put(bytes)?;
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.out.write_all(bytes)?;
        pad(&mut self.out, self.alignment)?;
        self.next += 1;
        Ok(())
    }
}

/// Tracks the bytes written so padding can be computed without `Seek`.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn padded(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

fn pad<W: Write>(w: &mut Counting<'_, W>, alignment: u64) -> io::Result<()> {
    let n = padded(w.written, alignment) - w.written;
    w.write_all(&vec![0u8; n as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => vt::U8,
        Value::I8(_) => vt::I8,
        Value::U16(_) => vt::U16,
        Value::I16(_) => vt::I16,
        Value::U32(_) => vt::U32,
        Value::I32(_) => vt::I32,
        Value::U64(_) => vt::U64,
        Value::I64(_) => vt::I64,
        Value::F32(_) => vt::F32,
        Value::F64(_) => vt::F64,
        Value::Bool(_) => vt::BOOL,
        Value::String(_) => vt::STRING,
        Value::Array(_) => vt::ARRAY,
    }
}

/// GGUF arrays have one element type; nested arrays may differ from each other.
fn check_homogeneous(key: &str, v: &Value) -> Result<(), WriteError> {
    if let Value::Array(items) = v {
        if let Some(first) = items.first() {
            for item in items {
                if type_id(item) != type_id(first) {
                    let (first, other) = (first.type_name(), item.type_name());
                    return Err(WriteError::MixedArray { key: key.to_string(), first, other });
                }
                check_homogeneous(key, item)?;
            }
        }
    }
    Ok(())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_string(w, s),
        Value::Array(items) => {
            // An empty array has no element to take a type from; u8 reads back the same.
            let elem = items.first().map_or(vt::U8, type_id);
            w.write_all(&elem.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(w, item))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelSource;

    fn every_value_type() -> Vec<(&'static str, Value)> {
        vec![
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-100)),
            ("u16", Value::U16(65000)),
            ("i16", Value::I16(-30000)),
            ("u32", Value::U32(4_000_000_000)),
            ("i32", Value::I32(-2_000_000_000)),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f32", Value::F32(-1.5e-7)),
            ("f64", Value::F64(std::f64::consts::PI)),
            ("bool", Value::Bool(true)),
            ("string", Value::String("héllo ▁world".into())),
            ("empty", Value::Array(vec![])),
            ("strings", Value::Array(vec![Value::String("a".into()), Value::String(String::new())])),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I32(1), Value::I32(2)]),
                    Value::Array(vec![Value::F64(0.5)]),
                ]),
            ),
        ]
    }

    #[test]
    fn every_value_type_round_trips() {
        let mut w = GgufWriter::new();
        for (k, v) in every_value_type() {
            w.add_metadata(k, v).unwrap();
        }
        let q = tessera_quant::quantize_to_vec(DType::Q4_0, &[0.5; 64]).unwrap();
        w.add_tensor("a", DType::Q4_0, Shape::from([2, 32]), q.clone()).unwrap();
        w.add_tensor("b", DType::F32, Shape::from([3]), vec![0u8; 12]).unwrap();
        let src = ModelSource::open_gguf_bytes(&w.to_bytes().unwrap()).unwrap();
        for (k, v) in every_value_type() {
            assert_eq!(src.metadata.get(k), Some(&v), "{k}");
        }
        let a = src.tensor("a").unwrap();
        assert_eq!((a.dtype, a.shape.dims()), (DType::Q4_0, &[2, 32][..]));
        assert_eq!(a.bytes.as_ref(), &q[..]);
        assert_eq!(src.tensor("b").unwrap().bytes.as_ref(), &[0u8; 12]);
    }

    #[test]
    fn released_pages_read_back_unchanged_from_a_file_and_from_memory() {
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8 + 1).collect();
        let mut w = GgufWriter::new();
        w.add_metadata("general.name", Value::String("x".repeat(5000))).unwrap();
        w.add_tensor("t", DType::F32, Shape::from([data.len() / 4]), data[..data.len() / 4 * 4].to_vec()).unwrap();
        let bytes = w.to_bytes().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        // Opening a file releases its metadata pages; an anonymous mapping must not be touched.
        for src in [ModelSource::open(&path).unwrap(), ModelSource::open_gguf_bytes(&bytes).unwrap()] {
            let t = src.tensor("t").unwrap();
            let want = &data[..data.len() / 4 * 4];
            assert_eq!(t.bytes.as_ref(), want);
            t.bytes.release_pages(0..want.len());
            t.bytes.release_pages(5..want.len() + 1);
            assert_eq!(t.bytes.as_ref(), want);
            assert_eq!(src.metadata.get("general.name"), Some(&Value::String("x".repeat(5000))));
        }
    }

    #[test]
    fn alignment_is_honoured() {
        let mut w = GgufWriter::new();
        w.set_alignment(64).unwrap();
        w.add_tensor("a", DType::F32, Shape::from([3]), vec![1u8; 12]).unwrap();
        w.add_tensor("b", DType::F32, Shape::from([1]), vec![2u8; 4]).unwrap();
        let bytes = w.to_bytes().unwrap();
        assert_eq!(bytes.len() % 64, 0);
        let src = ModelSource::open_gguf_bytes(&bytes).unwrap();
        assert_eq!(src.tensor("b").unwrap().bytes.as_ref(), &[2u8; 4]);
        assert!(matches!(w.set_alignment(48), Err(WriteError::BadAlignment(48))));
    }

    #[test]
    fn streamed_tensors_give_the_same_file() {
        let q = tessera_quant::quantize_to_vec(DType::Q8_0, &[0.25; 64]).unwrap();
        let mut whole = GgufWriter::new();
        whole.add_metadata("k", Value::U32(7)).unwrap();
        whole.add_tensor("a", DType::F32, Shape::from([3]), vec![1u8; 12]).unwrap();
        whole.add_tensor("b", DType::Q8_0, Shape::from([2, 32]), q.clone()).unwrap();
        whole.add_tensor("c", DType::F32, Shape::from([1]), vec![2u8; 4]).unwrap();

        let mut streamed = GgufWriter::new();
        streamed.add_metadata("k", Value::U32(7)).unwrap();
        streamed.add_tensor("a", DType::F32, Shape::from([3]), vec![1u8; 12]).unwrap();
        streamed.declare_tensor("b", DType::Q8_0, Shape::from([2, 32])).unwrap();
        streamed.declare_tensor("c", DType::F32, Shape::from([1])).unwrap();
        assert!(matches!(streamed.to_bytes(), Err(WriteError::BadTensor { .. })), "declared tensors need stream");
        let mut out = Vec::new();
        let mut stream = streamed.stream(&mut out).unwrap();
        stream.write_tensor("b", &q).unwrap();
        stream.write_tensor("c", &[2u8; 4]).unwrap();
        stream.finish().unwrap();
        assert_eq!(out, whole.to_bytes().unwrap());
    }

    #[test]
    fn streams_refuse_wrong_order_size_and_missing_tensors() {
        let mut w = GgufWriter::new();
        w.declare_tensor("a", DType::F32, Shape::from([2])).unwrap();
        w.declare_tensor("b", DType::F32, Shape::from([1])).unwrap();
        assert!(matches!(w.declare_tensor("a", DType::F32, Shape::from([1])), Err(WriteError::DuplicateTensor(_))));
        let mut out = Vec::new();
        let mut stream = w.stream(&mut out).unwrap();
        let err = stream.write_tensor("b", &[0u8; 4]).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
        let err = stream.write_tensor("a", &[0u8; 4]).unwrap_err().to_string();
        assert!(err.contains("8 bytes, got 4"), "{err}");
        stream.write_tensor("a", &[0u8; 8]).unwrap();
        let err = stream.finish().unwrap_err().to_string();
        assert!(err.contains("\"b\"") && err.contains("never written"), "{err}");
        let mut stream = w.stream(&mut out).unwrap();
        stream.write_tensor("a", &[0u8; 8]).unwrap();
        stream.write_tensor("b", &[0u8; 4]).unwrap();
        let err = stream.write_tensor("c", &[0u8; 4]).unwrap_err().to_string();
        assert!(err.contains("after every declared tensor"), "{err}");
    }

    #[test]
    fn bad_input_is_refused() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", Value::U8(1)).unwrap();
        assert!(matches!(w.add_metadata("k", Value::U8(1)), Err(WriteError::DuplicateKey(_))));
        let mixed = Value::Array(vec![Value::U8(1), Value::I8(1)]);
        assert!(matches!(w.add_metadata("m", mixed), Err(WriteError::MixedArray { .. })));
        assert!(matches!(
            w.add_tensor("t", DType::F32, Shape::from([2]), vec![0u8; 4]),
            Err(WriteError::BadTensor { .. })
        ));
        assert!(matches!(
            w.add_tensor("t", DType::Q8_0, Shape::from([16]), vec![0u8; 17]),
            Err(WriteError::BadTensor { .. })
        ));
        w.add_tensor("t", DType::F32, Shape::from([1]), vec![0u8; 4]).unwrap();
        assert!(matches!(
            w.add_tensor("t", DType::F32, Shape::from([1]), vec![0u8; 4]),
            Err(WriteError::DuplicateTensor(_))
        ));
    }
}
