//! The idle connections of a load client. An operation takes one for itself (or opens a new one when none is
//! idle) and gives it back only if it is still good, so a connection is never shared by two operations and a
//! broken one is never reused. The driver's in-flight bound caps how many exist at once.

use std::sync::Mutex;

pub struct Idle<C> {
    idle: Mutex<Vec<C>>,
}

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<C> Idle<C> {
    /// The most recently returned connection (warm caches, and the one least likely to have been cut).
    pub fn take(&self) -> Option<C> {
        self.idle.lock().unwrap().pop()
    }

    pub fn put(&self, conn: C) {
        self.idle.lock().unwrap().push(conn);
    }
}
