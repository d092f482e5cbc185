//! The GGUF reader. Every count and length is checked against the bytes that remain before
//! anything is allocated, all arithmetic on file values is checked, and tensor data is handed
//! out as ranges of the memory map, never copied.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tessera_core::{DType, Shape};

use super::value_type as vt;
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::{FormatError, Metadata, ModelSource, Origin, TensorBytes, TensorEntry, Value};

/// Arrays may hold arrays; a hostile file could nest them deep enough to overflow the stack.
const MAX_NESTING: u32 = 16;
/// Fewest bytes a tensor info can take: name length, dimension count, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;
/// Fewest bytes a metadata entry can take: key length, value type, a one-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// A parse failure: what went wrong and, when known, the byte offset where.
#[derive(Debug)]
pub(crate) struct ParseError {
    at: Option<usize>,
    what: String,
    unsupported: bool,
}

impl ParseError {
    fn at(at: usize, what: impl Into<String>) -> ParseError {
        ParseError { at: Some(at), what: what.into(), unsupported: false }
    }

    fn unsupported(at: usize, what: impl Into<String>) -> ParseError {
        ParseError { at: Some(at), what: what.into(), unsupported: true }
    }

    /// Prefixes the message with where in the file's structure the failure happened.
    fn context(mut self, ctx: impl fmt::Display) -> ParseError {
        self.what = format!("{ctx}: {}", self.what);
        self
    }

    pub(crate) fn into_format_error(self, path: &Path) -> FormatError {
        let what = match self.at {
            Some(at) => format!("{} (at byte {at})", self.what),
            None => self.what,
        };
        let path = path.to_path_buf();
        if self.unsupported {
            FormatError::Unsupported { path, what }
        } else {
            FormatError::Corrupt { path, what }
        }
    }
}

type Result<T> = std::result::Result<T, ParseError>;

/// A read position in the file, with little-endian readers that fail instead of running past
/// the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = self.remaining();
        if n > remaining as u64 {
            return Err(ParseError::at(self.pos, format!("{what} needs {n} bytes but only {remaining} remain")));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed UTF-8 string; the length is checked before anything is allocated.
    fn string(&mut self, what: &str) -> Result<String> {
        let start = self.pos;
        let len = self.u64(&format!("{what} length"))?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(ParseError::at(
                start,
                format!("{what} is not valid UTF-8 (byte {} of its {len} is bad)", e.valid_up_to()),
            )),
        }
    }

    /// An element count, refused unless `count * min_size` bytes remain, so that a hostile count
    /// can neither overflow nor make the caller allocate more than the file could fill.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let remaining = self.remaining() as u64;
        match n.checked_mul(min_size) {
            Some(need) if need <= remaining => Ok(n as usize),
            _ => Err(ParseError::at(
                at,
                format!("{what} is {n}, but the {remaining} bytes left can hold at most {}", remaining / min_size),
            )),
        }
    }
}

fn value(c: &mut Cursor<'_>, ty: u32, depth: u32) -> Result<Value> {
    Ok(match ty {
        vt::U8 => Value::U8(c.array::<1>("u8 value")?[0]),
        vt::I8 => Value::I8(i8::from_le_bytes(c.array("i8 value")?)),
        vt::U16 => Value::U16(u16::from_le_bytes(c.array("u16 value")?)),
        vt::I16 => Value::I16(i16::from_le_bytes(c.array("i16 value")?)),
        vt::U32 => Value::U32(c.u32("u32 value")?),
        vt::I32 => Value::I32(i32::from_le_bytes(c.array("i32 value")?)),
        vt::U64 => Value::U64(c.u64("u64 value")?),
        vt::I64 => Value::I64(i64::from_le_bytes(c.array("i64 value")?)),
        vt::F32 => Value::F32(f32::from_le_bytes(c.array("f32 value")?)),
        vt::F64 => Value::F64(f64::from_le_bytes(c.array("f64 value")?)),
        vt::BOOL => {
            let at = c.pos;
            match c.array::<1>("bool value")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(ParseError::at(at, format!("bool value is {b}, not 0 or 1"))),
            }
        }
        vt::STRING => Value::String(c.string("string value")?),
        vt::ARRAY => {
            let at = c.pos;
            if depth >= MAX_NESTING {
                return Err(ParseError::at(at, format!("arrays nested more than {MAX_NESTING} deep")));
            }
            let elem = c.u32("array element type")?;
            let min_size =
                vt::min_size(elem).ok_or_else(|| ParseError::at(at, format!("unknown array element type {elem}")))?;
            let n = c.count("array length", min_size)?;
            let mut items = Vec::with_capacity(n);
            for i in 0..n {
                items.push(value(c, elem, depth + 1).map_err(|e| e.context(format_args!("element {i}")))?);
            }
            Value::Array(items)
        }
        other => return Err(ParseError::at(c.pos.saturating_sub(4), format!("unknown value type {other}"))),
    })
}

/// A tensor as the file describes it, checked: row-major shape and a byte range of the file.
pub(crate) struct TensorLayout {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
    pub range: std::ops::Range<usize>,
}

/// Everything in a GGUF file but the tensor bytes themselves.
pub(crate) struct Layout {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorLayout>,
}

/// A tensor info before its data range is known.
struct RawInfo {
    name: String,
    at: usize,
    shape: Shape,
    size: usize,
    offset: u64,
    dtype: DType,
}

fn header(c: &mut Cursor<'_>) -> Result<u32> {
    let magic = c.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(ParseError::at(0, format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\"")));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => Ok(version),
        1 => Err(ParseError::unsupported(
            4,
            "GGUF version 1 is not supported (it predates 64-bit counts); convert the model again",
        )),
        v if matches!(v.swap_bytes(), 2 | 3) => {
            Err(ParseError::unsupported(4, "big-endian GGUF files are not supported"))
        }
        v => Err(ParseError::unsupported(4, format!("GGUF version {v} is not supported (known: 2 and 3)"))),
    }
}

fn metadata(c: &mut Cursor<'_>, n_kv: usize) -> Result<Metadata> {
    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let at = c.pos;
        let key = c.string("key").map_err(|e| e.context(format_args!("metadata entry {i}")))?;
        if metadata.contains(&key) {
            return Err(ParseError::at(at, format!("metadata key {key:?} appears twice")));
        }
        let v = c
            .u32("value type")
            .and_then(|ty| value(c, ty, 0))
            .map_err(|e| e.context(format_args!("metadata key {key:?}")))?;
        metadata.insert(key, v);
    }
    Ok(metadata)
}

fn alignment(metadata: &Metadata) -> Result<u64> {
    let Some(v) = metadata.get(ALIGNMENT_KEY) else { return Ok(DEFAULT_ALIGNMENT) };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => Ok(a),
        _ => Err(ParseError {
            at: None,
            what: format!("metadata key {ALIGNMENT_KEY:?} is {v:?}; it must be a power of two"),
            unsupported: false,
        }),
    }
}

fn tensor_info(c: &mut Cursor<'_>, names: &mut HashSet<String>) -> Result<RawInfo> {
    let at = c.pos;
    let name = c.string("tensor name")?;
    if !names.insert(name.clone()) {
        return Err(ParseError::at(at, format!("tensor {name:?} appears twice")));
    }
    let ctx = |e: ParseError| e.context(format_args!("tensor {name:?}"));
    let dims_at = c.pos;
    let n_dims = c.u32("dimension count").map_err(ctx)?;
    if n_dims as usize > MAX_DIMS {
        return Err(ctx(ParseError::at(dims_at, format!("{n_dims} dimensions; GGUF allows at most {MAX_DIMS}"))));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = c.u64("dimension").map_err(ctx)?;
        match usize::try_from(d) {
            Ok(d) if d as u64 <= i64::MAX as u64 => ne.push(d),
            _ => return Err(ctx(ParseError::at(c.pos - 8, format!("dimension {d} is too large")))),
        }
    }
    let type_at = c.pos;
    let type_id = c.u32("type").map_err(ctx)?;
    let dtype = DType::from_ggml_id(type_id)
        .map_err(|_| ctx(ParseError::at(type_at, format!("unknown or unsupported ggml type id {type_id}"))))?;
    let offset = c.u64("data offset").map_err(ctx)?;

    let row = ne.first().copied().unwrap_or(1);
    if row % dtype.block_len() != 0 {
        let block = dtype.block_len();
        return Err(ctx(ParseError::at(
            at,
            format!("rows of {row} {dtype} values are not whole {block}-value blocks"),
        )));
    }
    // GGUF lists dimensions innermost first; Shape wants outermost first.
    ne.reverse();
    let shape = Shape::new(ne);
    let size = shape
        .checked_count()
        .ok()
        .and_then(|count| dtype.bytes_for(count).ok())
        .ok_or_else(|| ctx(ParseError::at(at, format!("shape {shape} of {dtype} is too large to address"))))?;
    Ok(RawInfo { name, at, shape, size, offset, dtype })
}

/// Parses and validates a whole GGUF image.
pub(crate) fn parse_layout(bytes: &[u8]) -> Result<Layout> {
    let mut c = Cursor { bytes, pos: 0 };
    let version = header(&mut c)?;
    let n_tensors = c.count("tensor count", MIN_TENSOR_INFO)?;
    let n_kv = c.count("metadata entry count", MIN_KV)?;
    let metadata = metadata(&mut c, n_kv)?;
    let alignment = alignment(&metadata)?;

    let mut names = HashSet::with_capacity(n_tensors);
    let mut infos = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        infos.push(tensor_info(&mut c, &mut names).map_err(|e| e.context(format_args!("tensor info {i}")))?);
    }

    let file_len = bytes.len();
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    if n_tensors > 0 && data_start > file_len as u64 {
        return Err(ParseError::at(
            c.pos,
            format!("tensor data would start at byte {data_start}, past the end of the file ({file_len} bytes)"),
        ));
    }
    let mut tensors = Vec::with_capacity(n_tensors);
    for info in infos {
        let ctx = |what: String| ParseError::at(info.at, format!("tensor {:?}: {what}", info.name));
        if info.offset % alignment != 0 {
            return Err(ctx(format!("data offset {} is not a multiple of the alignment {alignment}", info.offset)));
        }
        let start = data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.size as u64));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e <= file_len as u64 => (s as usize, e as usize),
            _ => {
                return Err(ctx(format!(
                    "{} bytes of data at offset {} run past the end of the file ({file_len} bytes, data from byte \
                     {data_start})",
                    info.size, info.offset
                )))
            }
        };
        tensors.push(TensorLayout { name: info.name, dtype: info.dtype, shape: info.shape, range: start..end });
    }
    check_overlaps(&tensors)?;
    Ok(Layout { version, metadata, tensors })
}

/// Two tensors sharing bytes is a corrupt (or malicious) offset table.
fn check_overlaps(tensors: &[TensorLayout]) -> Result<()> {
    let mut order: Vec<&TensorLayout> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| t.range.start);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.range.end > b.range.start {
            return Err(ParseError::at(
                b.range.start,
                format!("tensors {:?} (bytes {:?}) and {:?} (bytes {:?}) overlap", a.name, a.range, b.name, b.range),
            ));
        }
    }
    Ok(())
}

/// Builds a [`ModelSource`] over a mapped GGUF image.
pub(crate) fn parse(map: Arc<crate::source::Mapping>, path: &Path) -> std::result::Result<ModelSource, FormatError> {
    let layout = parse_layout(&map).map_err(|e| e.into_format_error(path))?;
    // Everything before the first tensor (metadata, the tokenizer's vocabulary) is now copied
    // out; its pages need not stay resident.
    let data_start = layout.tensors.iter().map(|t| t.range.start).min().unwrap_or(map.len());
    map.release_pages(0..data_start);
    let tensors = layout
        .tensors
        .into_iter()
        .map(|t| TensorEntry {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            bytes: TensorBytes::new(map.clone(), t.range),
        })
        .collect();
    Ok(ModelSource {
        path: path.to_path_buf(),
        origin: Origin::Gguf { version: layout.version },
        metadata: layout.metadata,
        tensors,
        tokenizer_json: None,
        tokenizer_config_json: None,
    })
}

/// Maps and parses a GGUF file.
pub(crate) fn open_file(path: &Path) -> std::result::Result<ModelSource, FormatError> {
    let map = crate::source::map_file(path)?;
    parse(map, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn err(bytes: &[u8]) -> String {
        match parse_layout(bytes) {
            Ok(_) => panic!("parsed"),
            Err(e) => e.into_format_error(Path::new("x.gguf")).to_string(),
        }
    }

    #[test]
    fn empty_v3_file_parses() {
        let layout = parse_layout(&header_bytes(3, 0, 0)).unwrap();
        assert_eq!(layout.version, 3);
        assert!(layout.metadata.is_empty() && layout.tensors.is_empty());
    }

    #[test]
    fn versions_and_magic_are_checked() {
        assert!(err(&header_bytes(1, 0, 0)).contains("version 1 is not supported"));
        assert!(err(&header_bytes(3u32.swap_bytes(), 0, 0)).contains("big-endian"));
        assert!(err(&header_bytes(7, 0, 0)).contains("version 7"));
        assert!(err(b"GGML....").contains("not a GGUF file"));
        assert!(err(b"GG").contains("magic needs 4 bytes"));
    }

    #[test]
    fn hostile_counts_fail_before_allocating() {
        let e = err(&header_bytes(3, 1 << 60, 0));
        assert!(e.contains("tensor count is 1152921504606846976"), "{e}");
        let e = err(&header_bytes(3, 0, u64::MAX));
        assert!(e.contains("metadata entry count"), "{e}");
        // A string value whose length is 2^60.
        let mut b = header_bytes(3, 0, 1);
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(vt::STRING.to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        b.extend([0u8; 16]);
        let e = err(&b);
        assert!(e.contains("metadata key \"k\": string value needs 1152921504606846976 bytes"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = header_bytes(3, 0, 1);
        b.extend(1u64.to_le_bytes());
        b.push(b'k');
        b.extend(vt::ARRAY.to_le_bytes());
        for _ in 0..100 {
            b.extend(vt::ARRAY.to_le_bytes());
            b.extend(1u64.to_le_bytes());
        }
        b.extend([0u8; 32]);
        assert!(err(&b).contains("nested more than 16 deep"));
    }
}
