//! `/_/buckets`: the known source buckets with their site buckets and figures.

use super::model::{AdoptionDoc, BucketAtSite, BucketDoc, Buckets};
use super::ApiState;

/// The document: every known bucket, plus any bucket a site has figures for.
pub fn buckets(state: &ApiState) -> Buckets {
    let v = &state.buckets;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut doc = Buckets {
        adopted: load(&v.stats.adopted),
        adoption_failures: load(&v.stats.adoption_failures),
        known: v.known.len() as u64,
        ..Default::default()
    };
    let counts: Vec<_> = (state.sites.iter())
        .map(|(n, s)| (n.clone(), s.per_bucket.snapshot()))
        .collect();
    let names = v.known.list().into_iter();
    let counted = counts.iter().flat_map(|(_, c)| c.keys().cloned());
    for b in names.chain(counted) {
        let mut d = BucketDoc::default();
        for (site, c) in &counts {
            let n = c.get(&b).cloned().unwrap_or_default();
            let name = v
                .names
                .get(site)
                .map(|m| m.dest(&b))
                .unwrap_or_else(|| b.clone());
            let at = BucketAtSite {
                bucket: name,
                bytes: n.bytes,
                completed: n.completed,
                failed: n.failed,
            };
            d.sites.insert(site.clone(), at);
        }
        doc.buckets.insert(b, d);
    }
    for (b, a) in v.stats.adoptions() {
        let d = doc.buckets.entry(b).or_default();
        d.adoption = Some(AdoptionDoc {
            created: a.created as u64,
            enqueued: a.enqueued,
            error: a.error,
        });
    }
    doc
}
