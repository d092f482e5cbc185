//! Quantized block formats: ggml-exact dequantization and reference quantization, one file per format family.
