//! Reads the real test models: metadata as llama.cpp wrote it, every tensor dequantizable, and a
//! rewrite through GgufWriter that reads back identically.

use tessera_core::DType;
use tessera_formats::{GgufWriter, ModelSource, Origin};

/// Dequantizes every tensor in bounded chunks and checks that every value is finite.
fn dequantize_all(src: &ModelSource) {
    let mut buf = Vec::new();
    for t in &src.tensors {
        let bytes = t.bytes.as_ref();
        assert_eq!(bytes.len(), t.dtype.bytes_for(t.shape.count()).unwrap(), "{}", t.name);
        let chunk_blocks = (1 << 16) / t.dtype.block_len().max(1);
        for chunk in bytes.chunks(chunk_blocks * t.dtype.block_bytes()) {
            buf.resize(chunk.len() / t.dtype.block_bytes() * t.dtype.block_len(), 0f32);
            tessera_quant::dequantize(t.dtype, chunk, &mut buf).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            assert!(buf.iter().all(|v| v.is_finite()), "{}: non-finite value", t.name);
        }
    }
}

#[test]
fn smollm2_q4_1() {
    let Some(path) = tessera_testkit::test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let src = ModelSource::open(&path).unwrap();
    assert_eq!(src.origin, Origin::Gguf { version: 3 });
    let m = &src.metadata;
    assert_eq!(m.architecture(), Ok("llama"));
    assert_eq!(m.usize("llama.block_count"), Ok(30));
    assert_eq!(m.usize("llama.embedding_length"), Ok(576));
    assert_eq!(m.usize("llama.attention.head_count_kv"), Ok(3));
    assert_eq!(m.f32("llama.rope.freq_base"), Ok(100_000.0));
    assert_eq!(m.str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(src.tensors.len(), 272);
    let embd = src.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dtype, embd.shape.dims()), (DType::Q8_0, &[49152, 576][..]));
    assert_eq!(src.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_1);
    dequantize_all(&src);

    // Rewrite it (tensor bytes borrowed from the mapping) and read the copy back.
    let mut w = GgufWriter::new();
    w.add_all_metadata(&src.metadata).unwrap();
    for t in &src.tensors {
        w.add_tensor(t.name.clone(), t.dtype, t.shape.clone(), t.bytes.as_ref()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let copy_path = dir.path().join("copy.gguf");
    w.write_file(&copy_path).unwrap();
    let copy = ModelSource::open(&copy_path).unwrap();
    assert_eq!(copy.metadata, src.metadata);
    assert_eq!(copy.tensors.len(), src.tensors.len());
    for (a, b) in src.tensors.iter().zip(&copy.tensors) {
        assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
        assert!(a.bytes.as_ref() == b.bytes.as_ref(), "{}", a.name);
    }
}

#[test]
fn gemma3_270m_q4_k_m() {
    let Some(path) = tessera_testkit::test_model("gemma-3-270m-Q4_K_M.gguf") else { return };
    let src = ModelSource::open(&path).unwrap();
    let m = &src.metadata;
    assert_eq!(m.architecture(), Ok("gemma3"));
    assert_eq!(m.usize("gemma3.block_count"), Ok(18));
    assert_eq!(m.usize("gemma3.attention.key_length"), Ok(256));
    assert_eq!(m.usize("gemma3.attention.sliding_window"), Ok(512));
    assert_eq!(src.tensors.len(), 236);
    let kinds: std::collections::HashSet<DType> = src.tensors.iter().map(|t| t.dtype).collect();
    for d in [DType::F32, DType::Q5_0, DType::Q4_K, DType::Q8_0, DType::Q6_K] {
        assert!(kinds.contains(&d), "{d}");
    }
    dequantize_all(&src);
}
