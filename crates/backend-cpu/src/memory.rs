//! Buffer storage: 64-byte aligned, zero-filled host allocations, or host memory mapped in place.

use bytemuck::{Pod, Zeroable};
use tessera_backend::HostBytes;

/// One cache line; a `Vec` of these is a 64-byte aligned byte buffer without unsafe code.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);

/// The memory behind one buffer id.
pub(crate) enum Storage {
    /// Allocated by `alloc`: aligned, zero-filled, writable.
    Owned { lines: Vec<Line>, len: usize },
    /// Wrapped by `map_host`: read in place, never written.
    Host(HostBytes),
}

impl Storage {
    /// `len` zero bytes, or `None` when the allocation fails.
    pub(crate) fn zeroed(len: usize) -> Option<Storage> {
        let n = len.div_ceil(64);
        let mut lines = Vec::new();
        lines.try_reserve_exact(n).ok()?;
        lines.resize(n, Line([0; 64]));
        Some(Storage::Owned { lines, len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned { lines, len } => &bytemuck::cast_slice::<Line, u8>(lines)[..*len],
            Storage::Host(h) => (**h).as_ref(),
        }
    }

    /// `None` for read-only host memory.
    pub(crate) fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            Storage::Owned { lines, len } => Some(&mut bytemuck::cast_slice_mut::<Line, u8>(lines)[..*len]),
            Storage::Host(_) => None,
        }
    }

    /// Lets mapped memory drop the resident pages of `range` (see `HostMemory::release_pages`).
    pub(crate) fn release_pages(&self, range: std::ops::Range<usize>) {
        if let Storage::Host(h) = self {
            h.release_pages(range);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// Total and available memory from `/proc/meminfo`, in bytes, where the system has one.
pub(crate) fn meminfo() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return (None, None) };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// The CPU's model name from `/proc/cpuinfo`, where the system has one.
pub(crate) fn cpu_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_storage_is_aligned_and_zeroed() {
        let s = Storage::zeroed(100).unwrap();
        assert_eq!(s.len(), 100);
        assert_eq!(s.bytes().as_ptr() as usize % 64, 0);
        assert!(s.bytes().iter().all(|&b| b == 0));
        assert!(Storage::zeroed(0).unwrap().bytes().is_empty());
    }

    #[test]
    fn meminfo_reads_linux_proc() {
        if std::path::Path::new("/proc/meminfo").exists() {
            let (total, free) = meminfo();
            assert!(total.unwrap() > 0 && free.unwrap() <= total.unwrap());
        }
    }
}
