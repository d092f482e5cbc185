//! Continuous batching over a paged KV cache, with prefix caching. Pure logic: no tensors, no
//! backend, no async; the engine turns each [`StepPlan`] into one batched forward pass.
//!
//! - [`BlockPool`] and [`Block`]: KV blocks as owned, reference-counted ids. Dropping the last
//!   handle returns a block, so a finished, aborted, preempted or failed sequence cannot leak
//!   memory. Full blocks whose KV is computed are cached under a hash of their tokens and of
//!   everything before them, and stay findable after release until evicted (least recently
//!   released first).
//! - [`Scheduler`]: each step, one token for every decoding sequence, then prefill chunks within
//!   a token budget (a long prompt does not stall streams), preemption by recompute when blocks
//!   run out, and copy-on-write for forked sequences.
//!
//! The engine's loop:
//!
//! ```
//! use tessera_scheduler::{Scheduler, SchedulerConfig, SeqId};
//!
//! let mut scheduler = Scheduler::new(SchedulerConfig::new(16, 64))?;
//! scheduler.add_request(SeqId(1), vec![1, 2, 3], 2)?;
//! while scheduler.has_unfinished() {
//!     let plan = scheduler.schedule();
//!     // Run plan.copies, then one forward pass over plan.items; sample where wants_logits.
//!     let sampled: Vec<_> =
//!         plan.items.iter().filter(|item| item.wants_logits).map(|item| (item.id, Some(42))).collect();
//!     let ended = scheduler.complete_step(&plan, &sampled)?;
//!     # let _ = ended;
//! }
//! assert_eq!(scheduler.pool().free_blocks(), 64);
//! # Ok::<(), tessera_scheduler::SchedulerError>(())
//! ```

mod block_pool;
mod error;
mod plan;
mod scheduler;

pub use block_pool::{Block, BlockHash, BlockId, BlockPool};
pub use error::SchedulerError;
pub use plan::{BlockCopy, ScheduledSeq, StepPlan};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerStats, SeqId, SeqView};
