//! Property tests of the GGUF reader and writer: what the writer writes reads back identically,
//! and damaged or hostile files are refused with a useful error, without panicking and without
//! allocating more than a small multiple of the file's size.

use proptest::prelude::*;
use tessera_core::{DType, Shape};
use tessera_formats::{FormatError, GgufWriter, Metadata, ModelSource, Value};
use tessera_testkit::{largest_allocation, PeakAlloc};

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// Opens `bytes`, checking that a failure explains itself and that no single allocation was
/// larger than the file could justify.
fn open_checked(bytes: &[u8]) -> Result<ModelSource, FormatError> {
    let (result, largest) = largest_allocation(|| ModelSource::open_gguf_bytes(bytes));
    // A metadata value is 32 bytes and needs at least one byte of file; nothing else comes close.
    let bound = 40 * bytes.len() + 4096;
    assert!(largest <= bound, "allocated {largest} bytes at once for a {}-byte file", bytes.len());
    if let Err(e) = &result {
        let text = e.to_string();
        // Set TESSERA_PRINT_ERRORS (with --nocapture) to review every message the damage provokes.
        if std::env::var_os("TESSERA_PRINT_ERRORS").is_some() {
            eprintln!("{text}");
        }
        assert!(text.starts_with("<memory>: "), "{text}");
        assert!(text.contains("(at byte ") || text.contains("general.alignment"), "error does not say where: {text}");
    }
    result
}

/// A small file using every value type, nested and string arrays, and several tensor types.
fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into())).unwrap();
    w.add_metadata("llama.block_count", Value::U32(2)).unwrap();
    w.add_metadata("a.i8", Value::I8(-3)).unwrap();
    w.add_metadata("a.u16", Value::U16(7)).unwrap();
    w.add_metadata("a.i16", Value::I16(-7)).unwrap();
    w.add_metadata("a.i32", Value::I32(-70)).unwrap();
    w.add_metadata("a.u64", Value::U64(1 << 40)).unwrap();
    w.add_metadata("a.i64", Value::I64(-1 << 40)).unwrap();
    w.add_metadata("a.f32", Value::F32(0.25)).unwrap();
    w.add_metadata("a.f64", Value::F64(-0.5)).unwrap();
    w.add_metadata("a.bool", Value::Bool(true)).unwrap();
    w.add_metadata("a.u8", Value::U8(9)).unwrap();
    let tokens = (0..20).map(|i| Value::String(format!("tok{i}"))).collect();
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(tokens)).unwrap();
    let nested =
        Value::Array(vec![Value::Array(vec![Value::I32(1)]), Value::Array(vec![Value::F32(2.0), Value::F32(3.0)])]);
    w.add_metadata("a.nested", nested).unwrap();
    let pattern =
        |n: usize, seed: u8| (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>();
    w.add_tensor("f32", DType::F32, Shape::from([2, 3]), pattern(24, 1)).unwrap();
    w.add_tensor("q4_0", DType::Q4_0, Shape::from([2, 32]), pattern(36, 2)).unwrap();
    w.add_tensor("q4_k", DType::Q4_K, Shape::from([256]), pattern(144, 3)).unwrap();
    w.add_tensor("q8_0", DType::Q8_0, Shape::from([1, 1, 32]), pattern(34, 4)).unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn sample_file_reads() {
    let (src, largest) = largest_allocation(|| open_checked(&sample_file()).unwrap());
    // The allocation probe works: reading allocated something.
    assert!(largest > 0);
    assert_eq!(src.tensors.len(), 4);
    assert_eq!(src.metadata.len(), 14);
}

/// Tensor data of `sample_file`, each tensor padded to 32 bytes: 24, 36, 144 and 34 bytes.
const SAMPLE_DATA_LEN: usize = 32 + 64 + 160 + 64;
/// Where the last tensor's bytes end, from the start of the data section.
const SAMPLE_LAST_END: usize = 32 + 64 + 160 + 34;

#[test]
fn every_truncation_is_refused() {
    let file = sample_file();
    let data_start = file.len() - SAMPLE_DATA_LEN;
    for len in 0..file.len() {
        // Only the padding after the last tensor may go missing.
        let result = open_checked(&file[..len]);
        assert_eq!(result.is_ok(), len >= data_start + SAMPLE_LAST_END, "cut at {len}");
    }
}

/// Overwrites each header field position with hostile values: counts and lengths of 2^60 and
/// u64::MAX, type ids and dimension counts out of range. Exhaustive over the header.
#[test]
fn hostile_values_anywhere_in_the_header_are_refused() {
    let file = sample_file();
    for pos in 0..file.len() - SAMPLE_DATA_LEN {
        for v in [u64::MAX, 1 << 60, 1 << 32, 0x8000_0000_0000_0000, 0x7fff_ffff] {
            let mut f = file.clone();
            let end = (pos + 8).min(f.len());
            f[pos..end].copy_from_slice(&v.to_le_bytes()[..end - pos]);
            let _ = open_checked(&f);
        }
        for v in [u32::MAX, 13, 40, 5] {
            let mut f = file.clone();
            let end = (pos + 4).min(f.len());
            f[pos..end].copy_from_slice(&v.to_le_bytes()[..end - pos]);
            let _ = open_checked(&f);
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.]{0,16}"
}

/// Arrays whose elements share a type, as GGUF requires; arrays of arrays may mix.
fn array() -> impl Strategy<Value = Value> {
    let flat = prop_oneof![
        prop::collection::vec(any::<u8>().prop_map(Value::U8), 0..6),
        prop::collection::vec(any::<i64>().prop_map(Value::I64), 0..6),
        prop::collection::vec(any::<bool>().prop_map(Value::Bool), 0..6),
        prop::collection::vec(".{0,8}".prop_map(Value::String), 0..6),
        prop::collection::vec(prop::num::f32::NORMAL.prop_map(Value::F32), 0..6),
    ]
    .prop_map(Value::Array);
    prop_oneof![3 => flat.clone(), 1 => prop::collection::vec(flat, 0..4).prop_map(Value::Array)]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        prop::num::f32::NORMAL.prop_map(Value::F32),
        prop::num::f64::NORMAL.prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        ".{0,24}".prop_map(Value::String),
        array(),
    ]
}

/// (dtype, shape) pairs with whole blocks per row.
fn tensor_spec() -> impl Strategy<Value = (DType, Vec<usize>)> {
    let dtype = prop::sample::select(vec![DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q8_0, DType::Q6_K]);
    (dtype, prop::collection::vec(1usize..4, 0..3), 1usize..3).prop_map(|(d, mut outer, blocks)| {
        outer.push(blocks * d.block_len());
        (d, outer)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn written_files_read_back_identically(
        metadata in prop::collection::btree_map(key(), value(), 0..8),
        tensors in prop::collection::btree_map("[a-z.]{1,12}", tensor_spec(), 0..5),
        alignment in prop::sample::select(vec![None, Some(1u32), Some(8), Some(64)]),
        seed in any::<u8>(),
    ) {
        let mut w = GgufWriter::new();
        let mut expected = Metadata::new();
        if let Some(a) = alignment {
            w.set_alignment(a as u64).unwrap();
            expected.insert("general.alignment", Value::U32(a));
        }
        for (k, v) in metadata.iter().filter(|(k, _)| *k != "general.alignment") {
            w.add_metadata(k.clone(), v.clone()).unwrap();
            expected.insert(k.clone(), v.clone());
        }
        let mut data = Vec::new();
        for (name, (dtype, dims)) in &tensors {
            let shape = Shape::new(dims.clone());
            let n = dtype.bytes_for(shape.count()).unwrap();
            let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
            w.add_tensor(name.clone(), *dtype, shape.clone(), bytes.clone()).unwrap();
            data.push((name.clone(), *dtype, shape, bytes));
        }
        let src = open_checked(&w.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(&src.metadata, &expected);
        prop_assert_eq!(src.tensors.len(), data.len());
        let align = alignment.unwrap_or(32) as usize;
        for (name, dtype, shape, bytes) in &data {
            let t = src.tensor(name).unwrap();
            prop_assert_eq!((t.dtype, &t.shape), (*dtype, shape));
            prop_assert_eq!(t.bytes.as_ref(), &bytes[..]);
            // The mapping is page-aligned, so file alignment shows in the address.
            prop_assert_eq!(t.bytes.as_ref().as_ptr() as usize % align, 0);
        }
    }

    #[test]
    fn random_byte_damage_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
    ) {
        let mut f = sample_file();
        let len = f.len();
        for (at, b) in edits {
            f[at.index(len)] = b;
        }
        let _ = open_checked(&f);
    }
}
