//! What incremental ingestion remembers of a bucket between passes, on the node's disk:
//! the last seen state of every key (`snapshot`: one line per key, sorted as S3 lists them),
//! the snapshot a pass is writing (`next`), and where that pass stands (`cursor`), so a
//! pass stopped or crashed resumes after its last finished page. Each bucket has its own
//! directory under `source.ingest_state_dir`.
//!
//! A file rather than a key-value store: a pass reads the old snapshot once, in key order,
//! beside the listing (a merge of two sorted streams), so memory stays one page whatever
//! the bucket's size, and the new snapshot is written in the same order.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The last seen state of a key: its latest version (or delete marker) id, ETag and
/// LastModified. Unversioned sources have version `null`: their ETag and LastModified
/// tell a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "v")]
    pub version_id: String,
    #[serde(rename = "e")]
    pub etag: String,
    #[serde(rename = "m")]
    pub last_modified: i64,
}

/// Where a pass stands: what it has written, and where its listing goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The pass's number (1 for the first pass over the bucket).
    pub pass: u64,
    /// The last key whose versions were all handled (the listing resumes after it).
    pub after: Option<String>,
    /// Bytes of `next` that hold finished keys.
    pub written: u64,
    /// Keys listed, listing pages asked for, and entries enqueued so far in this pass.
    pub keys: u64,
    pub pages: u64,
    pub enqueued: u64,
    /// When the pass started (Unix seconds).
    pub started: u64,
}

impl Cursor {
    /// The pass finished at `finished` (Unix seconds), as `done` records it.
    pub fn done(&self, finished: u64) -> Done {
        Done {
            pass: self.pass,
            keys: self.keys,
            pages: self.pages,
            enqueued: self.enqueued,
            started: self.started,
            finished,
        }
    }
}

/// What a bucket's last finished pass left (`done`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub pass: u64,
    pub keys: u64,
    pub pages: u64,
    pub enqueued: u64,
    pub started: u64,
    pub finished: u64,
}

/// A bucket's ingestion files.
pub struct BucketState {
    dir: PathBuf,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

impl BucketState {
    /// The bucket's directory under `root` (created if missing).
    pub fn open(root: &Path, bucket: &str) -> Result<Self, String> {
        let dir = root.join(bucket);
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, String> {
        let p = self.path(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "{} is damaged ({e}): remove it to start the pass again",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &p, e)),
        }
    }

    /// Writes `name` whole or not at all (a temporary file renamed over it).
    fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<(), String> {
        let (p, tmp) = (self.path(name), self.path(&format!("{name}.tmp")));
        let body = serde_json::to_vec(v).expect("state serializes");
        let mut f = File::create(&tmp).map_err(|e| io("cannot write", &tmp, e))?;
        f.write_all(&body)
            .and_then(|()| f.sync_data())
            .map_err(|e| io("cannot write", &tmp, e))?;
        fs::rename(&tmp, &p).map_err(|e| io("cannot rename", &tmp, e))
    }

    /// The pass under way, if one was stopped.
    pub fn cursor(&self) -> Result<Option<Cursor>, String> {
        self.read_json("cursor")
    }

    pub fn save_cursor(&self, c: &Cursor) -> Result<(), String> {
        self.write_json("cursor", c)
    }

    /// The last finished pass.
    pub fn done(&self) -> Result<Option<Done>, String> {
        self.read_json("done")
    }

    /// The last finished pass's snapshot, read in key order (empty before the first).
    pub fn snapshot(&self) -> Result<SnapshotReader, String> {
        let p = self.path("snapshot");
        match File::open(&p) {
            Ok(f) => Ok(SnapshotReader {
                lines: Some(BufReader::new(f)),
                peeked: None,
                path: p,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SnapshotReader {
                lines: None,
                peeked: None,
                path: p,
            }),
            Err(e) => Err(io("cannot read", &p, e)),
        }
    }

    /// The snapshot the pass writes, cut back to `written` bytes (what the cursor says is
    /// finished: a crash may have left more).
    pub fn next(&self, written: u64) -> Result<SnapshotWriter, String> {
        let p = self.path("next");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| io("cannot open", &p, e))?;
        let len = f.metadata().map_err(|e| io("cannot read", &p, e))?.len();
        if len < written {
            return Err(format!(
                "{} holds {len} bytes, fewer than its cursor's {written}",
                p.display()
            ));
        }
        f.set_len(written).map_err(|e| io("cannot cut", &p, e))?;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|e| io("cannot seek", &p, e))?;
        Ok(SnapshotWriter {
            out: BufWriter::new(f),
            written,
            path: p,
        })
    }

    /// The pass is finished: recorded as done, its cursor removed, then its snapshot put in
    /// place of the last one. A crash between two steps costs a pass compared with the
    /// older snapshot (its changes enqueued again), never a change missed: a cursor whose
    /// pass is done is stale (see [`BucketState::cursor_to_resume`]).
    pub fn finish(&self, mut next: SnapshotWriter, done: &Done) -> Result<(), String> {
        next.flush()?;
        drop(next);
        self.write_json("done", done)?;
        self.forget_cursor()?;
        let (n, s) = (self.path("next"), self.path("snapshot"));
        fs::rename(&n, &s).map_err(|e| io("cannot rename", &n, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", &self.dir, e))
    }

    fn forget_cursor(&self) -> Result<(), String> {
        match fs::remove_file(self.path("cursor")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("cannot remove", &self.path("cursor"), e))
            }
            _ => Ok(()),
        }
    }

    /// The cursor of a pass to resume: none when there is none, when its pass is already
    /// done, or when the snapshot it was writing is shorter than it says (then the pass
    /// starts again, after saying why).
    pub fn cursor_to_resume(&self) -> Result<Option<Cursor>, String> {
        let Some(c) = self.cursor()? else {
            return Ok(None);
        };
        let done = self.done()?.map_or(0, |d| d.pass);
        let len = fs::metadata(self.path("next")).map_or(0, |m| m.len());
        if c.pass <= done || len < c.written {
            tracing::warn!(dir = %self.dir.display(), pass = c.pass, "a stopped pass cannot be resumed: it starts again");
            self.forget_cursor()?;
            return Ok(None);
        }
        Ok(Some(c))
    }
}

/// The old snapshot, read a key at a time in order.
pub struct SnapshotReader {
    lines: Option<BufReader<File>>,
    peeked: Option<KeyState>,
    path: PathBuf,
}

impl SnapshotReader {
    fn read(&mut self) -> Result<Option<KeyState>, String> {
        let Some(r) = self.lines.as_mut() else {
            return Ok(None);
        };
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .map_err(|e| io("cannot read", &self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line).map(Some).map_err(|e| {
            format!(
                "{} is damaged ({e}): remove the bucket's ingestion directory to list it afresh",
                self.path.display()
            )
        })
    }

    /// The state `key` had at the last pass, if it was listed then. Keys before `key` are
    /// passed over (gone since: their versions were deleted).
    pub fn state_of(&mut self, key: &str) -> Result<Option<KeyState>, String> {
        loop {
            if self.peeked.is_none() {
                self.peeked = self.read()?;
            }
            match &self.peeked {
                Some(s) if s.key.as_str() < key => self.peeked = None,
                Some(s) if s.key == key => return Ok(self.peeked.take()),
                _ => return Ok(None),
            }
        }
    }
}

/// The new snapshot, written a key at a time in order.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    written: u64,
    path: PathBuf,
}

impl SnapshotWriter {
    pub fn push(&mut self, s: &KeyState) -> Result<(), String> {
        let mut line = serde_json::to_vec(s).expect("a key state serializes");
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|e| io("cannot write", &self.path, e))?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Makes what was pushed durable; the bytes written so far.
    pub fn flush(&mut self) -> Result<u64, String> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| io("cannot write", &self.path, e))?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(k: &str, v: &str) -> KeyState {
        KeyState {
            key: k.into(),
            version_id: v.into(),
            etag: String::new(),
            last_modified: 0,
        }
    }

    #[test]
    fn a_pass_resumes_where_its_cursor_says_and_replaces_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let b = BucketState::open(dir.path(), "bkt").unwrap();
        assert!(b.cursor().unwrap().is_none());
        assert_eq!(b.snapshot().unwrap().state_of("a").unwrap(), None);
        let mut w = b.next(0).unwrap();
        w.push(&ks("a", "1")).unwrap();
        let written = w.flush().unwrap();
        w.push(&ks("b", "1")).unwrap(); // pushed after the checkpoint: lost in a crash
        w.flush().unwrap();
        let c = Cursor {
            pass: 1,
            after: Some("a".into()),
            written,
            ..Default::default()
        };
        b.save_cursor(&c).unwrap();
        drop(w);
        let c = b.cursor().unwrap().unwrap();
        let mut w = b.next(c.written).unwrap();
        w.push(&ks("b", "2")).unwrap();
        w.push(&ks("d", "1")).unwrap();
        b.finish(w, &Done::default()).unwrap();
        assert!(b.cursor().unwrap().is_none());
        let mut r = b.snapshot().unwrap();
        assert_eq!(r.state_of("a").unwrap(), Some(ks("a", "1")));
        assert_eq!(
            r.state_of("b").unwrap(),
            Some(ks("b", "2")),
            "the line after the checkpoint was cut"
        );
        assert_eq!(r.state_of("c").unwrap(), None);
        assert_eq!(r.state_of("e").unwrap(), None, "d passed over: gone");
    }
}
