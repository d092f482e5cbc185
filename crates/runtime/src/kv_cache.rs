//! The KV cache of one sequence: per layer, K and V rows for every position (F16 by default,
//! as llama.cpp keeps them).

use std::sync::Arc;

use tessera_backend::{Backend, BackendError, DType, OwnedBuffer};

pub struct KvCache {
    layers: Vec<(OwnedBuffer, OwnedBuffer)>,
    capacity: usize,
    row_width: usize,
    dtype: DType,
}

impl KvCache {
    /// Allocates `n_layers` pairs of `[capacity, row_width]` buffers of `dtype` (F16 or F32).
    pub fn new(
        backend: &Arc<dyn Backend>,
        n_layers: usize,
        capacity: usize,
        row_width: usize,
        dtype: DType,
    ) -> Result<KvCache, BackendError> {
        let bytes = capacity
            .checked_mul(row_width)
            .and_then(|n| n.checked_mul(dtype.block_bytes()))
            .ok_or(BackendError::OutOfMemory { requested: usize::MAX, detail: "KV cache size overflows".into() })?;
        let layers = (0..n_layers)
            .map(|_| Ok((OwnedBuffer::alloc(backend, bytes)?, OwnedBuffer::alloc(backend, bytes)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(KvCache { layers, capacity, row_width, dtype })
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn row_width(&self) -> usize {
        self.row_width
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn layers(&self) -> &[(OwnedBuffer, OwnedBuffer)] {
        &self.layers
    }

    /// Device memory the cache holds, in bytes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}
