//! Weights repacked once for the packed kernels (see `kernels::packed`), kept per leaf until
//! their buffer is written or freed.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_backend::BufferId;
use tessera_core::DType;

use crate::kernels::packed::{PackKind, PackedWeight};

/// Which bytes a packed weight was made from, and how they were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PackKey {
    pub buffer: BufferId,
    pub offset: usize,
    pub dtype: DType,
    pub m: usize,
    pub k: usize,
}

#[derive(Default)]
pub(crate) struct PackCache {
    /// `None`: the weight could not be packed (memory); it is not tried again.
    entries: Mutex<HashMap<PackKey, Option<Arc<PackedWeight>>>>,
}

impl PackCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<PackKey, Option<Arc<PackedWeight>>>> {
        // Every statement leaves the map consistent, so a panic elsewhere leaves it usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The packed copy of the weight `key` names, packed from `bytes` on first use (`None` when
    /// it cannot be: the caller uses the block kernels). `release` is told each range of `bytes`
    /// once it is copied, so the source's pages can go.
    pub(crate) fn get(
        &self,
        key: PackKey,
        bytes: &[u8],
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Option<Arc<PackedWeight>> {
        if let Some(entry) = self.lock().get(&key) {
            return entry.clone();
        }
        let kind = PackKind::of(key.dtype)?;
        // Packed without the lock held: two graphs meeting a new weight at once both pack it,
        // and the first copy stored wins.
        let packed = PackedWeight::pack(kind, bytes, key.m, key.k, release).map(Arc::new);
        self.lock().entry(key).or_insert(packed).clone()
    }

    /// The packed copy of `key`'s weight, if one was made.
    pub(crate) fn lookup(&self, key: PackKey) -> Option<Arc<PackedWeight>> {
        self.lock().get(&key).cloned().flatten()
    }

    /// Drops the packed copies made from `buffer` (it was written or freed).
    pub(crate) fn forget(&self, buffer: BufferId) {
        let mut entries = self.lock();
        if !entries.is_empty() {
            entries.retain(|k, _| k.buffer != buffer);
        }
    }

    /// Bytes held by packed copies.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().values().flatten().map(|p| p.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_is_packed_once_and_forgotten_with_its_buffer() {
        let cache = PackCache::default();
        let key = PackKey { buffer: BufferId(3), offset: 0, dtype: DType::Q8_0, m: 2, k: 32 };
        let bytes = vec![0u8; 68];
        let released = Mutex::new(Vec::new());
        let release = |r: Range<usize>| released.lock().unwrap().push(r);
        let a = cache.get(key, &bytes, &release).unwrap();
        let b = cache.get(key, &bytes, &release).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*released.lock().unwrap(), vec![0..68, 0..68]);
        assert!(cache.bytes() > 0);
        cache.forget(BufferId(4));
        assert!(cache.bytes() > 0);
        cache.forget(BufferId(3));
        assert_eq!(cache.bytes(), 0);
        // Types without a packed layout, and bytes too short for the shape, are not packed.
        assert!(cache.get(PackKey { dtype: DType::Q6_K, ..key }, &bytes, &release).is_none());
        assert!(cache.get(PackKey { m: 3, ..key }, &bytes, &release).is_none());
        assert_eq!(released.lock().unwrap().len(), 2);
    }
}
