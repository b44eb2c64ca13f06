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

#[cfg(test)]
mod tests {
    use super::super::routes::testing::table;
    use super::*;

    fn app_for(p: &Published, host: &str) -> Option<(String, usize)> {
        p.with(|t| {
            t.find(host, "/")
                .map(|m| (m.app.name.to_string(), Arc::as_ptr(m.app) as usize))
        })
    }

    #[test]
    fn each_thread_routes_with_its_own_copy_of_the_newest_table() {
        let p = Published::new();
        assert_eq!(app_for(&p, "a.localhost"), None);
        p.store(table(
            "[apps.a]\nroutes = [{ host = \"a.localhost\" }]\nupstreams = [\"127.0.0.1:1\"]\n",
        ));
        let (name, here) = app_for(&p, "a.localhost").unwrap();
        assert_eq!(name, "a");
        assert_eq!(
            app_for(&p, "a.localhost").unwrap().1,
            here,
            "kept until the next table"
        );
        let there = std::thread::scope(|s| s.spawn(|| app_for(&p, "a.localhost")).join().unwrap());
        assert_ne!(there.unwrap().1, here, "another thread has its own copy");
        p.store(table(
            "[apps.b]\nroutes = [{ host = \"b.localhost\" }]\nupstreams = [\"127.0.0.1:1\"]\n",
        ));
        assert_eq!(
            app_for(&p, "a.localhost"),
            None,
            "the next request sees the new table"
        );
        assert_eq!(app_for(&p, "b.localhost").unwrap().0, "b");
    }
}
