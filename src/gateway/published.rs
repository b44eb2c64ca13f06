//! The route table as the gateway's workers read it: each worker thread
//! routes with its own copy.
//!
//! A request keeps its app and instance (`Arc`s) until its response's last
//! byte. With one table shared by every worker, both cores wrote the same
//! reference counts on every request, and each of those `lock`-prefixed
//! adds waited for the line to come over from the other core
//! (bench/RESULTS.md, "Speed, fifth step"). A worker's copy has its own
//! `AppEntry` and `Upstream` allocations; what must be shared (in-flight
//! counts, breakers, retirement flags, connection limits) stays shared
//! inside them. A new table is published with a version number; a worker
//! that sees a new version copies the table before routing its next
//! request, so no request is routed with a table older than it would
//! have been before.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::routes::RouteTable;

/// The current route table and its version.
pub(super) struct Published {
    table: ArcSwap<RouteTable>,
    /// Bumped after each new table is stored.
    version: AtomicU64,
    /// Tells this gateway's copies from another's (tests run many).
    id: u64,
}

/// A worker's copy, by gateway id: (version, table). Workers belong to one
/// gateway and end before it, so their copies go with them.
type Copy = (u64, (u64, RouteTable));

thread_local! {
    static COPIES: RefCell<Vec<Copy>> = const { RefCell::new(Vec::new()) };
}

impl Published {
    pub fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            // Copies start at version 0 with an empty table, like this.
            version: AtomicU64::new(0),
            id: crate::sharded::owner_id(),
        }
    }

    /// Publishes `table`: every request routed after this returns sees it.
    pub fn store(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` with the calling thread's copy of the current table.
    pub fn with<R>(&self, f: impl FnOnce(&RouteTable) -> R) -> R {
        // Read before the table: a table stored after this is at least as
        // new as this version says (`store` bumps after storing).
        let version = self.version.load(Ordering::Acquire);
        COPIES.with(|copies| {
            let mut copies = copies.borrow_mut();
            let (v, table) = crate::sharded::entry(&mut copies, self.id);
            if *v != version {
                *table = self.table.load().per_thread_copy();
                *v = version;
            }
            f(table)
        })
    }
}
