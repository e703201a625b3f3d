//! A bucket listed for lifecycle: ListObjectVersions page by page, one key's entries at a
//! time, newest first, with the marker a pass resumes from (the last key whose entries were
//! all seen), and incomplete multipart uploads page by page.

use crate::s3::ops::list_object_versions::{
    sort_newest_first, ListObjectVersionsError, ListObjectVersionsRequest, ListedVersion,
};
use crate::s3::Client;

use super::eval::Entry;

/// At most this many entries of one key are held; a key with more is evaluated on its
/// newest ones only (the rest wait for a pass after those are gone).
pub const MAX_ENTRIES_PER_KEY: usize = 100_000;

/// One key's entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntries {
    pub key: String,
    pub entries: Vec<Entry>,
}

/// Reads a listed entry for the rules.
pub fn entry_of(l: ListedVersion) -> Entry {
    Entry {
        modified: crate::time::parse_rfc3339(&l.last_modified),
        version_id: l.version_id,
        delete_marker: l.delete_marker,
        last_modified: l.last_modified,
        size: l.size,
        etag: l.etag,
        storage_class: if l.storage_class.is_empty() {
            "STANDARD".into()
        } else {
            l.storage_class
        },
        tags: Vec::new(),
    }
}

/// Pages of one bucket's versions, handed out a key at a time.
pub struct Lister<'a> {
    client: &'a Client,
    bucket: &'a str,
    prefix: Option<&'a str>,
    /// Where the next page starts (`None` with `done`: the listing is over).
    next: Option<(String, Option<String>)>,
    done: bool,
    /// The last key of the latest page, whose entries may go on.
    pending: Option<(String, Vec<ListedVersion>)>,
    /// Complete keys not yet handed out, in key order.
    ready: std::collections::VecDeque<KeyEntries>,
    /// Entries listed so far.
    pub listed: u64,
    /// The key a resumed listing starts after: its entries are never handed out again
    /// (moto lists a marker key's versions again when the key has delete markers).
    after: Option<String>,
}

impl<'a> Lister<'a> {
    /// Lists `bucket` under `prefix`, after key `after` (a resumed pass) if given.
    pub fn new(
        client: &'a Client,
        bucket: &'a str,
        prefix: Option<&'a str>,
        after: Option<String>,
    ) -> Self {
        Self {
            client,
            bucket,
            prefix,
            next: after.clone().map(|k| (k, None)),
            after,
            done: false,
            pending: None,
            ready: Default::default(),
            listed: 0,
        }
    }

    /// The next key with all its entries, or `None` at the end of the bucket.
    pub async fn next_key(&mut self) -> Result<Option<KeyEntries>, ListObjectVersionsError> {
        loop {
            if let Some(k) = self.ready.pop_front() {
                return Ok(Some(k));
            }
            if self.done {
                return Ok(self.pending.take().map(finish));
            }
            self.page().await?;
        }
    }

    async fn page(&mut self) -> Result<(), ListObjectVersionsError> {
        let (key_marker, vid_marker) = match &self.next {
            Some((k, v)) => (Some(k.as_str()), v.as_deref()),
            None => (None, None),
        };
        let r = ListObjectVersionsRequest {
            prefix: self.prefix,
            key_marker,
            version_id_marker: vid_marker,
            max_keys: Some(1000),
        };
        let mut page = self.client.list_object_versions(self.bucket, r).await?;
        self.listed += page.versions.len() as u64;
        // Some servers (moto) list a page's versions, then its delete markers: a key's
        // entries are brought together (the sort is stable: each keeps its order).
        page.versions.sort_by(|a, b| a.key.cmp(&b.key));
        for l in page.versions {
            self.take(l);
        }
        match (page.is_truncated, page.next_key_marker) {
            (true, Some(k)) => self.next = Some((k, page.next_version_id_marker)),
            _ => self.done = true,
        }
        Ok(())
    }

    /// One listed entry: joins its key's, or completes the key before it.
    fn take(&mut self, l: ListedVersion) {
        if self.after.as_ref().is_some_and(|a| l.key <= *a) {
            return;
        }
        match &mut self.pending {
            Some((k, list)) if *k == l.key => {
                if list.len() < MAX_ENTRIES_PER_KEY {
                    list.push(l);
                }
            }
            _ => {
                if let Some(p) = self.pending.take() {
                    self.ready.push_back(finish(p));
                }
                self.pending = Some((l.key.clone(), vec![l]));
            }
        }
    }
}

fn finish((key, mut list): (String, Vec<ListedVersion>)) -> KeyEntries {
    sort_newest_first(&mut list);
    KeyEntries {
        key,
        entries: list.into_iter().map(entry_of).collect(),
    }
}

/// Every entry of exactly `key`, newest first (a re-check before an action).
pub async fn key_now(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<Entry>, ListObjectVersionsError> {
    let mut lister = Lister::new(client, bucket, Some(key), None);
    while let Some(k) = lister.next_key().await? {
        if k.key == key {
            return Ok(k.entries);
        }
        if k.key.as_str() > key {
            break;
        }
    }
    Ok(Vec::new())
}
