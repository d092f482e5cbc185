//! The CPU backend: SIMD kernels (AVX2, AVX-512, NEON) with runtime detection, multithreaded.
