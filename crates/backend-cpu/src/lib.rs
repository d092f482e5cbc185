//! The CPU backend: SIMD kernels (AVX2, AVX-512, NEON) with runtime detection, multithreaded.
//!
//! [`CpuBackend`] implements the `tessera_backend::Backend` contract on host memory. A matrix
//! multiplication converts each activation row once to the weight type's 8-bit block type (or
//! f16/bf16) and multiplies block by block with integer dot products, bit for bit the activation
//! quantization llama.cpp's x86 build uses, so greedy outputs can be compared with it; a weight
//! is never dequantized as a whole. Rows computed together give exactly what each row gives
//! alone.
//!
//! What a caller should know:
//! - `CpuBackend::new(threads)` computes on its own pool of `threads` threads (0: one per core)
//!   with the best [`Isa`] the CPU has; [`CpuBackend::with_isa`] pins one (tests, comparisons).
//! - `map_host` always works and is zero-copy: a memory-mapped model file is read in place. On
//!   AVX-512 VNNI, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q6_K weights are repacked once, on first use, for sixteen-row
//!   kernels, and the mapped source is told to release its pages as they are copied.
//!   Mapped buffers are read-only (uploads and stores into them are errors). Tensors may sit at
//!   any offset; F32 data at 4-byte aligned offsets is read in place, otherwise copied per use.
//! - `execute` locks every buffer its graph names for the whole graph (read, or write for
//!   `Store` and `StoreRows` destinations), on the calling thread and in id order: concurrent
//!   graphs sharing a KV cache run one after the other, never interleaved, and cannot deadlock.
//! - Every op of the contract is implemented, `PagedAttention` and `StoreRows` included; a row's
//!   attention result is bit-identical whatever else is in the batch, and `PagedAttention` over
//!   an identity block table is bit-identical to `Attention` over the same cache.
//! - Bad input (ids or positions out of range, leaves outside their buffers) is an error.
//!
//! Layout: `backend.rs` (buffer table, contract), `exec.rs` (graph walk, intermediate values),
//! `packs.rs` (repacked weights per leaf),
//! `ops/` (one file per op family), `kernels/` (dot products: the scalar reference, `x86/` for
//! AVX2 and AVX-512, `arm.rs` for NEON).

mod backend;
mod exec;
mod kernels;
mod memory;
mod ops;
mod packs;

pub use backend::CpuBackend;
pub use kernels::Isa;
