//! Bit-exactness against implementations written outside Tessera: gguf-py (llama.cpp's Python
//! package) and, for what gguf-py lacks, ggml itself; torch's `float8_e4m3fn` for F8_E4M3. The
//! expected outputs were made by `scripts/fixtures/quant/make_quant_fixtures.py` (ggml types)
//! and `make_plain8_fixtures.py` (I8, F8_E4M3); see their doc strings for what each file holds.

use std::path::PathBuf;

use tessera_core::DType;
use tessera_quant::{dequantize_to_vec, quantize_to_vec};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn file_stem(dtype: DType) -> String {
    dtype.name().to_lowercase()
}

/// Types whose reference quantizer is fixtured: every type but F32 and I32.
fn quantized() -> impl Iterator<Item = DType> {
    DType::ALL.into_iter().filter(|&d| !matches!(d, DType::F32 | DType::I32))
}

/// Types whose dequantization is fixtured: the same but Q8_1, which ggml does not dequantize.
fn dequantized() -> impl Iterator<Item = DType> {
    quantized().filter(|&d| d != DType::Q8_1)
}

/// The input file the quantization fixture of `dtype` was made from.
fn quant_input(dtype: DType) -> String {
    match dtype {
        DType::I8 | DType::F8_E4M3 => format!("quant_input_{}.f32", file_stem(dtype)),
        DType::NVFP4 => "quant_input_64.f32".into(),
        d if d.block_len() == 256 => "quant_input_256.f32".into(),
        _ => "quant_input_32.f32".into(),
    }
}

#[test]
fn dequantization_is_bit_exact() {
    for dtype in dequantized() {
        let stem = file_stem(dtype);
        let blocks = fixture(&format!("dequant_{stem}.blocks"));
        let expected = f32s(&fixture(&format!("dequant_{stem}.f32")));
        let got = dequantize_to_vec(dtype, &blocks).unwrap();
        assert_eq!(got.len(), expected.len(), "{dtype}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{dtype} value {i} (block {}): {g} != {e}", i / dtype.block_len());
        }
    }
}

#[test]
fn quantization_is_bit_exact() {
    for dtype in quantized() {
        let input = f32s(&fixture(&quant_input(dtype)));
        let expected = fixture(&format!("quant_{}.blocks", file_stem(dtype)));
        let got = quantize_to_vec(dtype, &input).unwrap();
        assert_eq!(got.len(), expected.len(), "{dtype}");
        if let Some(i) = got.iter().zip(&expected).position(|(g, e)| g != e) {
            let block = i / dtype.block_bytes();
            panic!("{dtype}: byte {} of block {block} differs: {} != {}", i % dtype.block_bytes(), got[i], expected[i]);
        }
    }
}
