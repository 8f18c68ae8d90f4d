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
//! The journal is bounded (`max_bytes`); a cabinet offline for days fills it in tiers,
//! so what matters most is what is kept:
//!
//! | journal size            | parcel events (deposit, pickup, collected) | alarms   | failed matches |
//! |-------------------------|--------------------------------------------|----------|----------------|
//! | below ¾ of `max_bytes`  | recorded                                   | recorded | recorded       |
//! | ¾ up to `max_bytes`     | recorded                                   | recorded | dropped, counted |
//! | at or over `max_bytes`  | recorded                                   | dropped, counted | dropped, counted |
//!
//! * Parcel events are never refused: a door that opened must be accounted for, and
//!   there are at most three per parcel the cabinet holds (and no new parcels arrive
//!   while it is offline), so they can overrun `max_bytes` by only a few KB.
//! * Crossing ¾ records one `journal_near_full` alarm (itself an alarm, so it is kept);
//!   it is armed again once the journal is back under half.
//! * What was dropped is counted ([`Journal::dropped`], on the agent's `/status`), and
//!   once there is room again one `journal_dropped` alarm tells the server how many of
//!   each kind were lost ([`Journal::report_dropped`]).
//! * Nothing already recorded is ever dropped to make room.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use lockerfleet_shared::envelope::{CabinetEvent, EventKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
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

/// What became of an event handed to [`Journal::record`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// On disk, with its id and sequence number.
    Kept(CabinetEvent),
    /// Not recorded: the journal is too full for its kind (counted in [`Journal::dropped`]).
    Dropped,
}

/// Events dropped for want of room since the last `journal_dropped` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub failed_matches: u64,
    pub alarms: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.failed_matches + self.alarms
    }
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
    /// Dropped for want of room and not yet reported to the server.
    dropped: Dropped,
    /// The `journal_near_full` alarm was raised and the journal has not been under half since.
    near_full_raised: bool,
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
        Ok(Self {
            path: path.to_owned(),
            file,
            bytes: valid_len,
            max_bytes,
            next_seq,
            pending,
            dead_records: dead,
            dropped: Dropped::default(),
            near_full_raised: valid_len >= max_bytes / 4 * 3,
        })
    }

    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).expect("journal records serialise");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Where failed matches stop being recorded: ¾ of `max_bytes`.
    fn telemetry_limit(&self) -> u64 {
        self.max_bytes / 4 * 3
    }

    /// Whether the journal is under `limit`, compacting first if that would help.
    fn room_under(&mut self, limit: u64) -> Result<bool, JournalError> {
        if self.bytes >= limit && self.dead_records > 0 {
            self.compact()?;
        }
        Ok(self.bytes < limit)
    }

    /// Records a new event durably, or drops it if the journal is too full for its kind
    /// (see the module's table). An `Err` is a disk failure: nothing was recorded.
    pub fn record(&mut self, what: EventKind, at: DateTime<Utc>) -> Result<Recorded, JournalError> {
        let limit = match &what {
            EventKind::Deposit { .. } | EventKind::Pickup { .. } | EventKind::Collected { .. } => None,
            EventKind::Alarm { .. } => Some(self.max_bytes),
            EventKind::FailedMatch { .. } => Some(self.telemetry_limit()),
        };
        if let Some(limit) = limit
            && !self.room_under(limit)?
        {
            match what {
                EventKind::FailedMatch { .. } => self.dropped.failed_matches += 1,
                _ => self.dropped.alarms += 1,
            }
            return Ok(Recorded::Dropped);
        }
        let event = self.append_event(what, at)?;
        if !self.near_full_raised && self.bytes >= self.telemetry_limit() {
            self.near_full_raised = true;
            let detail =
                format!("{} of {} bytes used; failed matches are no longer recorded", self.bytes, self.max_bytes);
            self.append_event(EventKind::Alarm { code: "journal_near_full".into(), detail }, at)?;
        }
        Ok(Recorded::Kept(event))
    }

    fn append_event(&mut self, what: EventKind, at: DateTime<Utc>) -> Result<CabinetEvent, JournalError> {
        let event = CabinetEvent { id: Uuid::now_v7(), seq: self.next_seq, at, what };
        self.append(&Record::Add(event.clone()))?;
        self.next_seq += 1;
        self.pending.insert(event.seq, event.clone());
        Ok(event)
    }

    /// Events dropped for want of room and not yet reported.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Once there is room again, records one `journal_dropped` alarm saying what was
    /// dropped, and resets the count. Returns the alarm if one was recorded.
    pub fn report_dropped(&mut self, at: DateTime<Utc>) -> Result<Option<CabinetEvent>, JournalError> {
        let limit = self.telemetry_limit();
        if self.dropped.total() == 0 || !self.room_under(limit)? {
            return Ok(None);
        }
        let Dropped { failed_matches, alarms } = self.dropped;
        let detail = format!("dropped while the journal was full: {failed_matches} failed matches, {alarms} alarms");
        let event = self.append_event(EventKind::Alarm { code: "journal_dropped".into(), detail }, at)?;
        self.dropped = Dropped::default();
        Ok(Some(event))
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
        if self.near_full_raised && self.bytes < self.max_bytes / 2 {
            self.near_full_raised = false;
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
        if self.near_full_raised && self.bytes < self.max_bytes / 2 {
            self.near_full_raised = false;
        }
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

    fn failed_match() -> EventKind {
        EventKind::FailedMatch { reason: "wrong pickup code".into() }
    }

    fn pickup() -> EventKind {
        EventKind::Pickup {
            parcel: ParcelId::generate(),
            compartment: lockerfleet_shared::CompartmentId::new("A1").unwrap(),
            method: lockerfleet_shared::envelope::PickupMethod::Code,
        }
    }

    /// Records an event that must be kept.
    fn keep(j: &mut Journal, what: EventKind) -> CabinetEvent {
        match j.record(what, Utc::now()).unwrap() {
            Recorded::Kept(e) => e,
            Recorded::Dropped => panic!("the event was dropped"),
        }
    }

    fn codes(j: &Journal) -> Vec<String> {
        j.pending()
            .filter_map(|e| match &e.what {
                EventKind::Alarm { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn events_survive_a_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (a, b) = {
            let mut j = Journal::open(&path, 1 << 20).unwrap();
            let a = keep(&mut j, alarm(1));
            let b = keep(&mut j, alarm(2));
            assert_eq!((a.seq, b.seq), (1, 2));
            j.ack(&[a.id]).unwrap();
            (a, b)
        };
        // "kill -9": the journal is simply dropped and opened again.
        let mut j = Journal::open(&path, 1 << 20).unwrap();
        let pending: Vec<_> = j.pending().map(|e| e.id).collect();
        assert_eq!(pending, vec![b.id]);
        let c = keep(&mut j, alarm(3));
        assert_eq!(c.seq, 3, "sequence numbers continue after a restart");
        assert_eq!(j.ack(&[a.id]).unwrap(), 0, "a repeated ack changes nothing");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let kept = {
            let mut j = Journal::open(&path, 1 << 20).unwrap();
            keep(&mut j, alarm(1))
        };
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"add\":{\"id\":\"0192").unwrap();
        drop(f);
        let mut j = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(j.pending().map(|e| e.id).collect::<Vec<_>>(), vec![kept.id]);
        let next = keep(&mut j, alarm(2));
        drop(j);
        let j = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(j.depth(), 2, "the record after the cut is readable: {next:?}");
    }

    #[test]
    fn a_filling_journal_drops_failed_matches_then_alarms_but_never_parcel_events() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4000;
        let mut j = Journal::open(&dir.path().join("j.log"), max).unwrap();
        // Failed matches (a brute-forcer at the keypad, days offline) until they stop.
        let mut kept = 0;
        while let Recorded::Kept(_) = j.record(failed_match(), Utc::now()).unwrap() {
            kept += 1;
        }
        assert!(kept >= 10, "{kept}");
        assert!(j.bytes() >= max / 4 * 3 && j.bytes() < max, "{}", j.bytes());
        assert_eq!(codes(&j), ["journal_near_full"], "one alarm when crossing three quarters");
        assert_eq!(j.dropped(), Dropped { failed_matches: 1, alarms: 0 });
        // Alarms still go in up to the limit, then are dropped and counted too.
        let mut alarms = 0;
        while let Recorded::Kept(_) = j.record(alarm(alarms), Utc::now()).unwrap() {
            alarms += 1;
        }
        assert!(alarms >= 1);
        assert!(j.bytes() >= max);
        assert_eq!(j.dropped(), Dropped { failed_matches: 1, alarms: 1 });
        // A pickup is never refused: its door has opened.
        let depth = j.depth();
        let p = keep(&mut j, pickup());
        assert_eq!(j.depth(), depth + 1);
        // Nothing recorded was dropped to make room, and all of it survives a restart.
        drop(j);
        let mut j = Journal::open(&dir.path().join("j.log"), max).unwrap();
        assert_eq!(j.depth(), depth + 1);
        assert_eq!(j.pending().last().unwrap().id, p.id);
        assert_eq!(j.report_dropped(Utc::now()).unwrap(), None, "counts are in memory: a restart forgets them");
    }

    #[test]
    fn once_acks_make_room_the_dropped_count_is_reported_and_recording_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j.log"), 4000).unwrap();
        while let Recorded::Kept(_) = j.record(failed_match(), Utc::now()).unwrap() {}
        for _ in 0..4 {
            assert_eq!(j.record(failed_match(), Utc::now()).unwrap(), Recorded::Dropped);
        }
        assert_eq!(j.report_dropped(Utc::now()).unwrap(), None, "no room to report yet");
        // The cabinet reconnects and the server acks the backlog.
        let ids: Vec<Uuid> = j.pending().map(|e| e.id).collect();
        j.ack(&ids).unwrap();
        let report = j.report_dropped(Utc::now()).unwrap().expect("a journal_dropped alarm");
        match &report.what {
            EventKind::Alarm { code, detail } => {
                assert_eq!(code, "journal_dropped");
                assert!(detail.contains("5 failed matches, 0 alarms"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(j.dropped().total(), 0);
        assert!(matches!(j.record(failed_match(), Utc::now()).unwrap(), Recorded::Kept(_)));
        // Back under half: the near-full alarm is armed again.
        while let Recorded::Kept(_) = j.record(failed_match(), Utc::now()).unwrap() {}
        assert_eq!(codes(&j), ["journal_dropped", "journal_near_full"]);
    }

    #[test]
    fn compaction_keeps_exactly_the_pending_events_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let mut j = Journal::open(&path, 1 << 24).unwrap();
        let mut all = Vec::new();
        for i in 0..50 {
            all.push(keep(
                &mut j,
                EventKind::Pickup {
                    parcel: ParcelId::generate(),
                    compartment: lockerfleet_shared::CompartmentId::new(format!("C{i}")).unwrap(),
                    method: lockerfleet_shared::envelope::PickupMethod::Code,
                },
            ));
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
