//! The paged KV cache's blocks: owned, reference-counted ids, and the prefix cache over them.
//!
//! Every block is in exactly one of three places: held (reference count above zero, by one or
//! more [`Block`] handles), free (count zero, no cached contents), or evictable (count zero, but
//! its contents are registered under a [`BlockHash`], so a later prompt with the same prefix can
//! take it back instead of recomputing it). Allocation takes a free block first and otherwise
//! evicts the evictable block that was released longest ago. Handles return their block when the
//! last one drops, so whoever drops a sequence's blocks (finish, abort, preemption, an error
//! path) cannot leak them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::SchedulerError;

/// Index of one KV block in the engine's cache buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl BlockId {
    /// The id as an index into the cache buffers' block dimension.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}", self.0)
    }
}

/// Identity of a full block's contents: its token ids and, through the parent's hash, every
/// token before it. Equal hashes mean equal KV, so a block can be shared by hash.
///
/// 128 bits of SipHash keyed randomly per pool: collisions are out of reach even for a client
/// choosing prompts to provoke one, and hashes mean nothing outside the pool that made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHash(u128);

/// A fixed set of KV blocks of `block_size` tokens each, with the prefix cache over them.
///
/// Shared as `Arc<BlockPool>`; every [`Block`] handle keeps its pool alive.
pub struct BlockPool {
    num_blocks: usize,
    block_size: usize,
    keys: [RandomState; 2],
    state: Mutex<PoolState>,
}

struct PoolState {
    ref_counts: Vec<u32>,
    /// The hash a block's contents are registered under, if any.
    hashes: Vec<Option<BlockHash>>,
    /// Blocks with no references and no cached contents.
    free: Vec<BlockId>,
    /// Blocks with no references but cached contents, keyed by when they were released.
    evictable: BTreeMap<u64, BlockId>,
    /// For an evictable block, its key in `evictable`.
    released_at: Vec<u64>,
    clock: u64,
    cached: HashMap<BlockHash, BlockId>,
}

impl PoolState {
    /// Takes a block with no references: a free one, else the least recently released cached one.
    fn take(&mut self) -> Option<BlockId> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let (_, id) = self.evictable.pop_first()?;
                if let Some(hash) = self.hashes[id.index()].take() {
                    self.cached.remove(&hash);
                }
                id
            }
        };
        self.ref_counts[id.index()] = 1;
        Some(id)
    }

    /// Adds a reference to a block, reviving it if it was evictable.
    fn acquire(&mut self, id: BlockId) {
        let count = &mut self.ref_counts[id.index()];
        if *count == 0 {
            self.evictable.remove(&self.released_at[id.index()]);
        }
        *count += 1;
    }

    fn release(&mut self, id: BlockId) {
        let count = &mut self.ref_counts[id.index()];
        debug_assert!(*count > 0, "{id} released more often than acquired");
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        if self.hashes[id.index()].is_some() {
            self.clock += 1;
            self.released_at[id.index()] = self.clock;
            self.evictable.insert(self.clock, id);
        } else {
            self.free.push(id);
        }
    }
}

impl BlockPool {
    /// A pool of `num_blocks` blocks of `block_size` tokens, all free.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Arc<Self>, SchedulerError> {
        if block_size == 0 {
            return Err(SchedulerError::InvalidConfig("block_size must be at least 1"));
        }
        if num_blocks == 0 {
            return Err(SchedulerError::InvalidConfig("num_blocks must be at least 1"));
        }
        if u32::try_from(num_blocks).is_err() {
            return Err(SchedulerError::InvalidConfig("num_blocks must fit in 32 bits"));
        }
        // Popped from the end, so block 0 goes out first.
        let free = (0..num_blocks as u32).rev().map(BlockId).collect();
        let state = PoolState {
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            free,
            evictable: BTreeMap::new(),
            released_at: vec![0; num_blocks],
            clock: 0,
            cached: HashMap::new(),
        };
        Ok(Arc::new(BlockPool {
            num_blocks,
            block_size,
            keys: [RandomState::new(), RandomState::new()],
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding the lock, and the state stays consistent between calls.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Total number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks that can be allocated now: free ones plus evictable cached ones.
    pub fn free_blocks(&self) -> usize {
        let state = self.lock();
        state.free.len() + state.evictable.len()
    }

    /// Blocks with no references whose contents are still cached (a subset of `free_blocks`).
    pub fn evictable_blocks(&self) -> usize {
        self.lock().evictable.len()
    }

    /// Blocks whose contents are registered in the prefix cache, held or not.
    pub fn cached_blocks(&self) -> usize {
        self.lock().cached.len()
    }

    /// Fraction of blocks held by some handle (evictable cached blocks count as unused).
    pub fn usage(&self) -> f64 {
        1.0 - self.free_blocks() as f64 / self.num_blocks as f64
    }

    /// How many handles hold `id` (zero for a free or evictable block, or an id out of range).
    pub fn ref_count(&self, id: BlockId) -> usize {
        self.lock().ref_counts.get(id.index()).map_or(0, |&c| c as usize)
    }

    /// The hash `id`'s contents are registered under in the prefix cache, if any.
    pub fn block_hash(&self, id: BlockId) -> Option<BlockHash> {
        self.lock().hashes.get(id.index()).copied().flatten()
    }

    /// Allocates one block, evicting a cached one if no free block is left.
    pub fn allocate(self: &Arc<Self>) -> Option<Block> {
        let id = self.lock().take()?;
        Some(Block { pool: Arc::clone(self), id })
    }

    /// Allocates `n` blocks, or none at all if fewer than `n` can be had.
    pub fn allocate_n(self: &Arc<Self>, n: usize) -> Option<Vec<Block>> {
        let mut state = self.lock();
        if state.free.len() + state.evictable.len() < n {
            return None;
        }
        let ids: Vec<BlockId> = (0..n).filter_map(|_| state.take()).collect();
        drop(state);
        Some(ids.into_iter().map(|id| Block { pool: Arc::clone(self), id }).collect())
    }

    /// The hash of a full block holding `tokens`, following the block whose hash is `parent`
    /// (`None` for a sequence's first block).
    pub fn hash_block(&self, parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
        debug_assert_eq!(tokens.len(), self.block_size, "only full blocks are hashed");
        let key = (parent, tokens);
        let high = self.keys[0].hash_one(key) as u128;
        let low = self.keys[1].hash_one(key) as u128;
        BlockHash(high << 64 | low)
    }

    /// Appends to `hashes` the hash chain of the full blocks of `tokens` it does not cover yet.
    pub fn extend_hashes(&self, hashes: &mut Vec<BlockHash>, tokens: &[u32]) {
        let full = tokens.len() / self.block_size;
        while hashes.len() < full {
            let start = hashes.len() * self.block_size;
            let hash = self.hash_block(hashes.last().copied(), &tokens[start..start + self.block_size]);
            hashes.push(hash);
        }
    }

    /// The hash chain of the full blocks of `tokens` (a trailing partial block has none).
    pub fn hash_blocks(&self, tokens: &[u32]) -> Vec<BlockHash> {
        let mut hashes = Vec::with_capacity(tokens.len() / self.block_size);
        self.extend_hashes(&mut hashes, tokens);
        hashes
    }

    /// Records that `block` holds the computed KV of the full block with hash `hash`, so that
    /// lookups can share it. The caller must never write the block again.
    ///
    /// Returns false, leaving the block uncached, when another block already holds that hash
    /// (two sequences computed the same prefix at once) or `block` is from another pool.
    pub fn register(&self, block: &Block, hash: BlockHash) -> bool {
        if !std::ptr::eq(Arc::as_ptr(&block.pool), self) {
            debug_assert!(false, "{} registered with a pool it does not belong to", block.id);
            return false;
        }
        let mut state = self.lock();
        match state.hashes[block.id.index()] {
            Some(existing) => {
                debug_assert_eq!(existing, hash, "{} registered under two hashes", block.id);
                existing == hash
            }
            None if state.cached.contains_key(&hash) => false,
            None => {
                state.hashes[block.id.index()] = Some(hash);
                state.cached.insert(hash, block.id);
                true
            }
        }
    }

    /// The longest chain of cached blocks matching the full blocks of `tokens`, each revived
    /// (taken out of the evictable set) and returned as a new handle.
    pub fn lookup(self: &Arc<Self>, tokens: &[u32]) -> Vec<Block> {
        self.lookup_hashes(&self.hash_blocks(tokens))
    }

    /// Like [`lookup`](Self::lookup), for a hash chain already computed.
    pub fn lookup_hashes(self: &Arc<Self>, hashes: &[BlockHash]) -> Vec<Block> {
        let mut state = self.lock();
        let mut ids = Vec::new();
        for hash in hashes {
            let Some(&id) = state.cached.get(hash) else { break };
            state.acquire(id);
            ids.push(id);
        }
        drop(state);
        ids.into_iter().map(|id| Block { pool: Arc::clone(self), id }).collect()
    }

    /// Checks the pool's bookkeeping: every block is held, free or evictable, exactly once, and
    /// the prefix cache's map agrees with each block's hash. For tests and debugging.
    pub fn check_invariants(&self) -> Result<(), String> {
        let state = self.lock();
        let mut seen = vec![0u8; self.num_blocks];
        for &id in &state.free {
            seen[id.index()] += 1;
            if state.ref_counts[id.index()] != 0 || state.hashes[id.index()].is_some() {
                return Err(format!("free {id} is referenced or cached"));
            }
        }
        for (&at, &id) in &state.evictable {
            seen[id.index()] += 1;
            if state.ref_counts[id.index()] != 0 || state.hashes[id.index()].is_none() {
                return Err(format!("evictable {id} is referenced or not cached"));
            }
            if state.released_at[id.index()] != at {
                return Err(format!("evictable {id} is filed under the wrong time"));
            }
        }
        for (i, &count) in state.ref_counts.iter().enumerate() {
            let expected = u8::from(count == 0);
            if seen[i] != expected {
                return Err(format!("block {i} (refcount {count}) is listed {} times as unused", seen[i]));
            }
        }
        let hashed = state.hashes.iter().filter(|h| h.is_some()).count();
        if hashed != state.cached.len() {
            return Err(format!("{hashed} blocks have hashes but the cache maps {}", state.cached.len()));
        }
        for (hash, &id) in &state.cached {
            if state.hashes[id.index()] != Some(*hash) {
                return Err(format!("the cache maps a hash to {id}, which holds another"));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for BlockPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("BlockPool")
            .field("num_blocks", &self.num_blocks)
            .field("block_size", &self.block_size)
            .field("free", &state.free.len())
            .field("evictable", &state.evictable.len())
            .field("cached", &state.cached.len())
            .finish()
    }
}

/// An owned reference to one KV block. Cloning adds a reference; dropping the last one returns
/// the block to its pool (to the evictable set if its contents are cached, else to the free list).
pub struct Block {
    pool: Arc<BlockPool>,
    id: BlockId,
}

impl Block {
    /// The block's index in the cache buffers.
    pub fn id(&self) -> BlockId {
        self.id
    }

    /// True when this is the only reference and the contents are not cached: the only state in
    /// which a sequence may write into the block.
    pub fn is_exclusive(&self) -> bool {
        let state = self.pool.lock();
        state.ref_counts[self.id.index()] == 1 && state.hashes[self.id.index()].is_none()
    }
}

impl Clone for Block {
    fn clone(&self) -> Self {
        self.pool.lock().acquire(self.id);
        Block { pool: Arc::clone(&self.pool), id: self.id }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.lock().release(self.id);
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Block({})", self.id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(num_blocks: usize, block_size: usize) -> Arc<BlockPool> {
        BlockPool::new(num_blocks, block_size).unwrap()
    }

    /// Allocates a block, registers it as holding `tokens` after `parent`, and returns its hash.
    fn cache(pool: &Arc<BlockPool>, parent: Option<BlockHash>, tokens: &[u32]) -> (Block, BlockHash) {
        let block = pool.allocate().unwrap();
        let hash = pool.hash_block(parent, tokens);
        assert!(pool.register(&block, hash));
        (block, hash)
    }

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<BlockPool>();
        check::<Block>();
    }

    #[test]
    fn rejects_empty_configurations() {
        assert!(BlockPool::new(0, 16).is_err());
        assert!(BlockPool::new(16, 0).is_err());
    }

    #[test]
    fn clone_and_drop_count_references() {
        let pool = pool(2, 4);
        let a = pool.allocate().unwrap();
        assert_eq!(pool.ref_count(a.id()), 1);
        assert!(a.is_exclusive());
        let b = a.clone();
        assert_eq!(pool.ref_count(a.id()), 2);
        assert!(!a.is_exclusive());
        assert_eq!(pool.free_blocks(), 1);
        drop(a);
        assert_eq!(pool.free_blocks(), 1);
        drop(b);
        assert_eq!(pool.free_blocks(), 2);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn allocate_n_is_all_or_nothing() {
        let pool = pool(3, 4);
        let held = pool.allocate().unwrap();
        assert!(pool.allocate_n(3).is_none());
        assert_eq!(pool.free_blocks(), 2);
        let two = pool.allocate_n(2).unwrap();
        assert_eq!(two.len(), 2);
        assert!(pool.allocate().is_none());
        drop((held, two));
        assert_eq!(pool.free_blocks(), 3);
    }

    #[test]
    fn free_blocks_go_out_before_cached_ones() {
        let pool = pool(2, 2);
        let (cached, hash) = cache(&pool, None, &[1, 2]);
        let cached_id = cached.id();
        drop(cached);
        assert_eq!(pool.evictable_blocks(), 1);
        let other = pool.allocate().unwrap();
        assert_ne!(other.id(), cached_id);
        // The cached block survived and can still be found.
        let hit = pool.lookup_hashes(&[hash]);
        assert_eq!(hit.iter().map(Block::id).collect::<Vec<_>>(), [cached_id]);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn eviction_takes_the_least_recently_released_block() {
        let pool = pool(3, 1);
        let (a, ha) = cache(&pool, None, &[10]);
        let (b, hb) = cache(&pool, None, &[20]);
        let (c, hc) = cache(&pool, None, &[30]);
        let (ida, idb, idc) = (a.id(), b.id(), c.id());
        // Released in the order b, c, a; then b is looked up again, which makes it the newest.
        drop(b);
        drop(c);
        drop(a);
        let revived = pool.lookup_hashes(&[hb]);
        drop(revived);
        // Eviction order: c (oldest release), a, b.
        let first = pool.allocate().unwrap();
        assert_eq!(first.id(), idc);
        assert_eq!(pool.block_hash(idc), None);
        assert!(pool.lookup_hashes(&[hc]).is_empty());
        let second = pool.allocate().unwrap();
        assert_eq!(second.id(), ida);
        assert!(pool.lookup_hashes(&[ha]).is_empty());
        assert_eq!(pool.lookup_hashes(&[hb]).len(), 1);
        let third = pool.allocate().unwrap();
        assert_eq!(third.id(), idb);
        assert!(pool.allocate().is_none());
        assert_eq!(pool.cached_blocks(), 0);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn same_tokens_after_a_different_prefix_do_not_hit() {
        let pool = pool(8, 2);
        let prompt = [1, 2, 3, 4, 5, 6];
        let hashes = pool.hash_blocks(&prompt);
        assert_eq!(hashes.len(), 3);
        let blocks: Vec<Block> = hashes
            .iter()
            .map(|&h| {
                let b = pool.allocate().unwrap();
                assert!(pool.register(&b, h));
                b
            })
            .collect();
        drop(blocks);

        assert_eq!(pool.lookup(&prompt).len(), 3);
        assert_eq!(pool.lookup(&[1, 2, 3, 4, 9]).len(), 2, "a trailing partial block is never a hit");
        assert_eq!(pool.lookup(&[1, 2, 3, 9, 5, 6]).len(), 1, "the chain stops at the first change");
        // The second and third blocks' tokens, but behind another first block.
        assert!(pool.lookup(&[0, 2, 3, 4, 5, 6]).is_empty());
        assert!(pool.lookup(&[3, 4, 5, 6]).is_empty());
        // A different hash per position even for identical blocks.
        let repeated = pool.hash_blocks(&[7, 7, 7, 7]);
        assert_ne!(repeated[0], repeated[1]);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn hashes_are_private_to_a_pool() {
        let (a, b) = (pool(1, 2), pool(1, 2));
        assert_ne!(a.hash_blocks(&[1, 2]), b.hash_blocks(&[1, 2]));
        assert_eq!(a.hash_blocks(&[1, 2]), a.hash_blocks(&[1, 2]));
    }

    #[test]
    fn a_hash_is_cached_once() {
        let pool = pool(3, 2);
        let (first, hash) = cache(&pool, None, &[1, 2]);
        let second = pool.allocate().unwrap();
        assert!(!pool.register(&second, hash), "the first block keeps the hash");
        assert!(pool.register(&first, hash), "registering again is harmless");
        assert!(second.is_exclusive());
        assert!(!first.is_exclusive(), "a cached block is never written");
        drop((first, second));
        assert_eq!(pool.evictable_blocks(), 1);
        assert_eq!(pool.free_blocks(), 3);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn lookup_revives_evictable_blocks() {
        let pool = pool(2, 1);
        let (a, ha) = cache(&pool, None, &[5]);
        let id = a.id();
        drop(a);
        assert_eq!(pool.free_blocks(), 2);
        let hit = pool.lookup_hashes(&[ha]);
        assert_eq!(pool.ref_count(id), 1);
        assert_eq!(pool.free_blocks(), 1);
        assert_eq!(pool.evictable_blocks(), 0);
        let shared = hit[0].clone();
        assert_eq!(pool.ref_count(id), 2);
        drop((hit, shared));
        assert_eq!(pool.evictable_blocks(), 1);
        pool.check_invariants().unwrap();
    }
}
