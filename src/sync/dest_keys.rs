//! The destination's keys, listed alongside the source's scan so that `sync` knows which
//! keys the destination holds nothing of without asking per key. Owns: the destination's
//! listing task and the merge of its keys with the source's, in the listings' shared order.
//! May call: `populate::scan`, `s3`.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::rc::Rc;

use crate::populate::scan::scan;
use crate::s3::Client;
use crate::shard::Shutdown;

/// Keys listed ahead of the source's scan, at most.
const AHEAD: usize = 4096;

/// Follows the destination's listing; [`DestKeys::absent`] is asked with the source's keys in
/// listing order. Anything unexpected (the listing failing, keys out of order on either
/// side) makes it answer "ask" for every later key.
pub struct DestKeys {
    rx: async_channel::Receiver<String>,
    /// The first destination key not yet passed by the source's keys.
    head: RefCell<Option<String>>,
    /// The last key seen on each side, to check both listings keep the order.
    last_dest: RefCell<Option<String>>,
    last_source: RefCell<Option<String>>,
    usable: Cell<bool>,
    failed: Rc<Cell<bool>>,
}

impl DestKeys {
    /// Starts listing `bucket` (under `prefix`) on this shard.
    pub fn follow(client: Client, bucket: String, prefix: Option<String>, stop: Shutdown) -> Self {
        let (tx, rx) = async_channel::bounded(AHEAD);
        let failed = Rc::new(Cell::new(false));
        let failed2 = failed.clone();
        glommio::spawn_local(async move {
            let r = scan(&client, &bucket, prefix.as_deref(), &stop, |kv| {
                let tx = tx.clone();
                async move { tx.send(kv.key).await.is_ok() }
            });
            match r.await {
                Err(e) => {
                    tracing::info!(
                        bucket, error = %e,
                        "listing the destination failed: every key is checked with a HEAD instead"
                    );
                    failed2.set(true);
                }
                // Stopped early: what it did not list is not known absent.
                Ok(()) if stop.is_set() => failed2.set(true),
                Ok(()) => {}
            }
        })
        .detach();
        DestKeys {
            rx,
            head: RefCell::new(None),
            last_dest: RefCell::new(None),
            last_source: RefCell::new(None),
            usable: Cell::new(true),
            failed,
        }
    }

    /// True when the destination's listing held nothing of `key` (no version, no delete
    /// marker); false when it did, or when that is not known.
    pub async fn absent(&self, key: &str) -> bool {
        if !self.in_order(&self.last_source, key) {
            return false;
        }
        loop {
            if !self.usable.get() {
                return false;
            }
            let head = self.head.borrow_mut().take();
            let head = match head {
                Some(h) => h,
                None => match self.rx.recv().await {
                    Ok(k) if self.in_order(&self.last_dest, &k) => k,
                    Ok(_) => return false,
                    // The listing ended: complete unless it failed.
                    Err(_) => return !self.failed.get(),
                },
            };
            match head.as_str().cmp(key) {
                Ordering::Less => continue,
                Ordering::Equal => {
                    *self.head.borrow_mut() = Some(head);
                    return false;
                }
                Ordering::Greater => {
                    *self.head.borrow_mut() = Some(head);
                    return true;
                }
            }
        }
    }

    /// Records `key` as the last of its side; false (and unusable from now on) when it does
    /// not come after the previous one.
    fn in_order(&self, last: &RefCell<Option<String>>, key: &str) -> bool {
        let mut last = last.borrow_mut();
        if last.as_deref().is_some_and(|l| l >= key) {
            self.usable.set(false);
            return false;
        }
        *last = Some(key.to_string());
        true
    }
}
