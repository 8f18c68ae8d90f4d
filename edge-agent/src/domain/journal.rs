//! The cabinet's durable event journal.
//!
//! ```text
//!   record(event) ──► append {"add":…} + fsync ──► pending (in order) ──► link sends
//!   ack(ids)      ──► append {"ack":[…]} + fsync ──► removed from pending
//!   open()        ──► replay the file: pending = adds − acks, next seq = max seq + 1
//!   compaction    ──► when acked records dominate: write pending to a new file, fsync,
//!                     rename over the old one (atomic), fsync the directory
//! ```
//!
//! An event counts as made only once its record is on disk: a `kill -9` at any moment
//! loses nothing that `record` returned for, and an event is forgotten only when the
//! server's ack names it. A torn last line (power cut mid-write) is detected and ignored;
//! every record before it is intact because each append is fsynced before the next.
//!
//! The journal is bounded (`max_bytes`). When full, new events are refused with
//! [`JournalError::Full`]; the agent then raises an alarm and keeps operating doors, and
//! the operator sees `journal_depth` in the cabinet's heartbeat. Nothing already
//! recorded is ever dropped to make room.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use lockerfleet_shared::envelope::{CabinetEvent, EventKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why the journal refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal is full ({bytes} bytes, limit {limit}); the event was not recorded")]
    Full { bytes: u64, limit: u64 },
    #[error("journal I/O failed at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Add(CabinetEvent),
    Ack(Vec<Uuid>),
}

/// The journal: a file of JSON lines, and the events not yet acked, in sequence order.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
    max_bytes: u64,
    next_seq: u64,
    pending: BTreeMap<u64, CabinetEvent>,
    /// Records in the file that compaction would drop (acks and acked adds).
    dead_records: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

impl Journal {
    /// Opens (or creates) the journal at `path` and replays it.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut pending = BTreeMap::new();
        let mut next_seq = 1;
        let mut dead = 0;
        let mut valid_len = 0u64;
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io(path))?);
            for line in reader.split(b'\n') {
                let line = line.map_err(io(path))?;
                match serde_json::from_slice::<Record>(&line) {
                    Ok(Record::Add(e)) => {
                        next_seq = next_seq.max(e.seq + 1);
                        pending.insert(e.seq, e);
                    }
                    Ok(Record::Ack(ids)) => {
                        dead += 1;
                        pending.retain(|_, e| {
                            let acked = ids.contains(&e.id);
                            if acked {
                                dead += 1;
                            }
                            !acked
                        });
                    }
                    // A torn final record from a crash mid-write: everything before it is
                    // intact; it is cut off below.
                    Err(_) => break,
                }
                valid_len += line.len() as u64 + 1;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
        let on_disk = file.metadata().map_err(io(path))?.len();
        if on_disk > valid_len {
            file.set_len(valid_len).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        Ok(Self { path: path.to_owned(), file, bytes: valid_len, max_bytes, next_seq, pending, dead_records: dead })
    }

    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).expect("journal records serialise");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Records a new event durably and returns it (with its id and sequence number).
    pub fn record(&mut self, what: EventKind, at: DateTime<Utc>) -> Result<CabinetEvent, JournalError> {
        if self.bytes >= self.max_bytes {
            self.compact()?;
            if self.bytes >= self.max_bytes {
                return Err(JournalError::Full { bytes: self.bytes, limit: self.max_bytes });
            }
        }
        let event = CabinetEvent { id: Uuid::now_v7(), seq: self.next_seq, at, what };
        self.append(&Record::Add(event.clone()))?;
        self.next_seq += 1;
        self.pending.insert(event.seq, event.clone());
        Ok(event)
    }

    /// Forgets the events the server acked. Unknown ids (already acked) are ignored.
    pub fn ack(&mut self, ids: &[Uuid]) -> Result<usize, JournalError> {
        let known: Vec<Uuid> = ids.iter().copied().filter(|id| self.pending.values().any(|e| e.id == *id)).collect();
        if known.is_empty() {
            return Ok(0);
        }
        self.append(&Record::Ack(known.clone()))?;
        self.pending.retain(|_, e| !known.contains(&e.id));
        self.dead_records += 1 + known.len() as u64;
        if self.dead_records > 1000 && self.dead_records as usize > 4 * self.pending.len() {
            self.compact()?;
        }
        Ok(known.len())
    }

    /// Events not yet acked, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &CabinetEvent> {
        self.pending.values()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rewrites the file with only the pending events (atomic rename).
    pub fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("compact");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            for e in self.pending.values() {
                let mut line = serde_json::to_vec(&Record::Add(e.clone())).expect("journal records serialise");
                line.push(b'\n');
                f.write_all(&line).map_err(io(&tmp))?;
            }
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io(&self.path))?;
        self.bytes = self.file.metadata().map_err(io(&self.path))?.len();
        self.dead_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerfleet_shared::ParcelId;

    fn alarm(n: u32) -> EventKind {
        EventKind::Alarm { code: "test".into(), detail: n.to_string() }
    }

    #[test]
    fn events_survive_a_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (a, b) = {
            let mut j = Journal::open(&path, 1 << 20).unwrap();
            let a = j.record(alarm(1), Utc::now()).unwrap();
            let b = j.record(alarm(2), Utc::now()).unwrap();
            assert_eq!((a.seq, b.seq), (1, 2));
            j.ack(&[a.id]).unwrap();
            (a, b)
        };
        // "kill -9": the journal is simply dropped and opened again.
        let mut j = Journal::open(&path, 1 << 20).unwrap();
        let pending: Vec<_> = j.pending().map(|e| e.id).collect();
        assert_eq!(pending, vec![b.id]);
        let c = j.record(alarm(3), Utc::now()).unwrap();
        assert_eq!(c.seq, 3, "sequence numbers continue after a restart");
        assert_eq!(j.ack(&[a.id]).unwrap(), 0, "a repeated ack changes nothing");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let kept = {
            let mut j = Journal::open(&path, 1 << 20).unwrap();
            j.record(alarm(1), Utc::now()).unwrap()
        };
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"add\":{\"id\":\"0192").unwrap();
        drop(f);
        let mut j = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(j.pending().map(|e| e.id).collect::<Vec<_>>(), vec![kept.id]);
        let next = j.record(alarm(2), Utc::now()).unwrap();
        drop(j);
        let j = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(j.depth(), 2, "the record after the cut is readable: {next:?}");
    }

    #[test]
    fn a_full_journal_refuses_new_events_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.log"), 600).unwrap();
        let mut recorded = 0;
        let err = loop {
            match j.record(alarm(recorded), Utc::now()) {
                Ok(_) => recorded += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, JournalError::Full { .. }), "{err}");
        assert!(recorded >= 2);
        assert_eq!(j.depth(), recorded as usize, "nothing recorded was dropped");
        // Acks free room again.
        let ids: Vec<Uuid> = j.pending().map(|e| e.id).collect();
        j.ack(&ids).unwrap();
        j.compact().unwrap();
        assert!(j.record(alarm(99), Utc::now()).is_ok());
    }

    #[test]
    fn compaction_keeps_exactly_the_pending_events_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut j = Journal::open(&path, 1 << 24).unwrap();
        let mut all = Vec::new();
        for i in 0..50 {
            all.push(
                j.record(
                    EventKind::Pickup {
                        parcel: ParcelId::generate(),
                        compartment: lockerfleet_shared::CompartmentId::new(format!("C{i}")).unwrap(),
                        method: lockerfleet_shared::envelope::PickupMethod::Code,
                    },
                    Utc::now(),
                )
                .unwrap(),
            );
        }
        let acked: Vec<Uuid> = all.iter().step_by(2).map(|e| e.id).collect();
        j.ack(&acked).unwrap();
        let before = j.bytes();
        j.compact().unwrap();
        assert!(j.bytes() < before);
        drop(j);
        let j = Journal::open(&path, 1 << 24).unwrap();
        let left: Vec<u64> = j.pending().map(|e| e.seq).collect();
        let expected: Vec<u64> = all.iter().skip(1).step_by(2).map(|e| e.seq).collect();
        assert_eq!(left, expected);
    }
}
