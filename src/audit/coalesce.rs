//! Read coalescing: an allowed `READ`, or a `JOIN` recorded when a read hands out the caller's
//! meeting link, identical to one the writer accepted less than a window ago is not written
//! again (`CAREGRAPH_AUDIT_READ_WINDOW_SECONDS`).
//!
//! "Identical" is the same organisation, actor (kind and id), action, entity type and id,
//! patient, client address and operation name; the request id and the time do not count.
//! Nothing else is ever coalesced: a denial, a change, an export or a sign-in is always
//! written, and so is `joinMeeting`'s `JOIN`, which is written in its own transaction and never
//! reaches the writer. The writer task owns the one [`ReadCoalescer`] of the process, so there is no lock;
//! each replica coalesces on its own.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
};

use siphasher::sip128::{Hasher128, SipHasher13};

use chrono::{DateTime, Duration, Utc};

use super::{AuditAction, AuditOutcome, AuditRecord};

/// The most reads remembered at once; past it a read is written without being remembered.
pub const MAX_KEYS: usize = 100_000;

/// Remembers the allowed reads accepted within the window, by key, and says which later reads
/// repeat one of them.
///
/// A key is a 128-bit hash of a read's identifying fields: SipHash-1-3 with its 128-bit output
/// (one pass over the fields), under a secret key drawn when the coalescer is made from `rand`'s
/// generator (ChaCha, seeded by the operating system). Storing the full fields would cost an
/// allocation per read and several times the memory; 128 bits keep [`MAX_KEYS`] entries within
/// a few megabytes. The key is secret and SipHash is a keyed hash built to resist chosen
/// collisions (1-3, its reduced-round variant, is what std's own hash maps rely on for that,
/// and what this coalescer used before), so a caller cannot choose reads whose hashes collide,
/// and the chance that any two of 100,000 distinct reads share a key by accident is below
/// 10^-28: a read is not mistaken for another one in any practical sense.
pub struct ReadCoalescer {
    window: Duration,
    capacity: usize,
    /// The hash's secret key.
    keys: (u64, u64),
    /// When each remembered read was accepted.
    seen: HashMap<u128, DateTime<Utc>, BuildHasherDefault<Prehashed>>,
    /// The byte stream of the read being keyed (kept to reuse its allocation).
    scratch: Collected,
    /// After a pruning that left the map full: when it ran and the earliest time a remembered
    /// read can expire (no pruning in between can free anything).
    full_until: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl ReadCoalescer {
    /// A coalescer with a window of `window` (zero: every read is written) remembering at most
    /// [`MAX_KEYS`] reads.
    pub fn new(window: std::time::Duration) -> Self {
        Self::with_capacity(window, MAX_KEYS)
    }

    /// A coalescer remembering at most `capacity` reads.
    pub fn with_capacity(window: std::time::Duration, capacity: usize) -> Self {
        Self {
            window: Duration::from_std(window).unwrap_or(Duration::MAX),
            capacity,
            keys: (rand::random(), rand::random()),
            seen: HashMap::default(),
            scratch: Collected::default(),
            full_until: None,
        }
    }

    /// How many reads are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no read is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether `record`, handed to the writer at `now`, repeats an allowed read (or join)
    /// accepted less than the window before (then it is not written); otherwise it is accepted,
    /// and remembered when it is an allowed read or join and there is room.
    ///
    /// Time is the app's clock, read by the writer: a clock set back makes a remembered read
    /// count as new (written again), one set forward expires it early. Either way a read is
    /// written more often, never less.
    pub fn is_repeat(&mut self, record: &AuditRecord, now: DateTime<Utc>) -> bool {
        if self.window.is_zero()
            || !matches!(record.entry.action, AuditAction::Read | AuditAction::Join)
            || record.entry.outcome != AuditOutcome::Allowed
        {
            return false;
        }
        let key = self.key(record);
        if let Some(accepted) = self.seen.get_mut(&key) {
            if fresh(*accepted, now, self.window) {
                return true;
            }
            *accepted = now;
            return false;
        }
        if self.make_room(now) {
            self.seen.insert(key, now);
        }
        false
    }

    /// Whether a new read can be remembered: when the map is full, the reads no longer within
    /// the window are forgotten first.
    fn make_room(&mut self, now: DateTime<Utc>) -> bool {
        if self.seen.len() < self.capacity {
            return true;
        }
        if let Some((pruned_at, until)) = self.full_until
            && pruned_at <= now
            && now < until
        {
            return false;
        }
        let window = self.window;
        let mut oldest: Option<DateTime<Utc>> = None;
        self.seen.retain(|_, accepted| {
            let keep = fresh(*accepted, now, window);
            if keep {
                oldest = Some(oldest.map_or(*accepted, |o| o.min(*accepted)));
            }
            keep
        });
        if self.seen.len() < self.capacity {
            self.full_until = None;
            return true;
        }
        self.full_until = oldest.map(|o| {
            (
                now,
                o.checked_add_signed(window)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )
        });
        false
    }

    /// The 128-bit key of a read's identifying fields (everything but its id, time and request
    /// id; the outcome is always `ALLOWED` here).
    ///
    /// The fields' `Hash` byte stream is collected once into a scratch buffer and the hash takes
    /// it in one write (SipHash does not depend on how its input is split), without the dozens
    /// of small writes per field.
    fn key(&mut self, record: &AuditRecord) -> u128 {
        let fields = (
            &record.actor,
            &record.entry,
            record.client_address.as_deref(),
            record.operation_name.as_deref(),
        );
        self.scratch.0.clear();
        fields.hash(&mut self.scratch);
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        hasher.write(&self.scratch.0);
        hasher.finish128().into()
    }
}

/// Whether a read accepted at `accepted` is still within `window` at `now` (not when the clock
/// shows a time before it).
fn fresh(accepted: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    let age = now.signed_duration_since(accepted);
    age >= Duration::zero() && age < window
}

/// A "hasher" that keeps the bytes it is given, to hash them later in one go.
#[derive(Default)]
struct Collected(Vec<u8>);

impl Hasher for Collected {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// The map's hasher for keys that are hashes already: their low 64 bits.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; any other input is folded in FNV-1a style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation intended: the low half of a uniformly distributed hash.
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        audit::{AuditActor, AuditEntity, AuditEntry, EntityId},
        domain::{OrgId, PatientId, UserId},
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn read(actor: AuditActor, entity_id: &str, address: &str) -> AuditRecord {
        AuditRecord {
            id: uuid::Uuid::new_v4(),
            at: t0(),
            actor,
            entry: AuditEntry::read(AuditEntity::Patient, entity_id).org(OrgId::new()),
            request_id: Some(Arc::from(uuid::Uuid::new_v4().to_string())),
            client_address: Some(Arc::from(address)),
            operation_name: Some(Arc::from("Dashboard")),
        }
    }

    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn a_read_of_an_id_repeats_a_read_of_the_same_id_only_and_never_one_of_its_text() {
        let mut c = ReadCoalescer::new(MINUTE);
        let first = read(AuditActor::User(UserId::new()), "unused", "10.0.0.1");
        let of = |id: EntityId| {
            let mut r = first.clone();
            r.entry.entity_id = Some(id);
            r
        };
        let patient = PatientId::new();
        assert!(!c.is_repeat(&of(patient.into()), t0()));
        assert!(c.is_repeat(&of(patient.into()), t0()));
        assert!(!c.is_repeat(&of(PatientId::new().into()), t0()));
        // The same id as text is another read: written again, never merged with the id's.
        assert!(!c.is_repeat(&of(EntityId::Text(patient.as_string())), t0()));
    }

    #[test]
    fn a_repeated_read_is_coalesced_within_the_window_and_accepted_again_after_it() {
        let mut c = ReadCoalescer::new(MINUTE);
        let user = AuditActor::User(UserId::new());
        let first = read(user.clone(), "p1", "10.0.0.1");
        let mut again = first.clone();
        again.id = uuid::Uuid::new_v4();
        again.request_id = Some(Arc::from("another request"));
        assert!(!c.is_repeat(&first, t0()));
        assert!(c.is_repeat(&again, t0() + Duration::seconds(59)));
        assert!(!c.is_repeat(&again, t0() + Duration::seconds(60)));
        assert!(c.is_repeat(&again, t0() + Duration::seconds(61)));
        // A clock set back: written again.
        assert!(!c.is_repeat(&again, t0()));
    }

    #[test]
    fn a_full_map_lets_new_reads_through_uncoalesced_and_forgets_expired_ones_first() {
        let mut c = ReadCoalescer::with_capacity(MINUTE, 3);
        let user = AuditActor::User(UserId::new());
        let reads: Vec<_> = (0..5)
            .map(|i| read(user.clone(), &format!("p{i}"), "10.0.0.1"))
            .collect();
        for r in &reads[..3] {
            assert!(!c.is_repeat(r, t0()));
        }
        assert_eq!(c.len(), 3);
        // Full of fresh reads: a new one is accepted (to be written) each time, never
        // remembered, so it is never coalesced and never dropped.
        for _ in 0..3 {
            assert!(!c.is_repeat(&reads[3], t0() + Duration::seconds(1)));
        }
        assert_eq!(c.len(), 3);
        // The remembered ones still coalesce.
        assert!(c.is_repeat(&reads[0], t0() + Duration::seconds(2)));
        // Once the window has passed, the expired reads make room.
        assert!(!c.is_repeat(&reads[4], t0() + Duration::seconds(60)));
        assert_eq!(c.len(), 1);
        assert!(c.is_repeat(&reads[4], t0() + Duration::seconds(61)));
    }

    #[test]
    fn a_meeting_link_handed_out_again_within_the_window_is_coalesced_apart_from_the_read() {
        let mut c = ReadCoalescer::new(MINUTE);
        let user = AuditActor::User(UserId::new());
        let read = read(user, "p1", "10.0.0.1");
        let mut join = read.clone();
        join.entry.action = AuditAction::Join;
        assert!(!c.is_repeat(&read, t0()));
        assert!(!c.is_repeat(&join, t0()), "a join is not the read's repeat");
        assert!(c.is_repeat(&join, t0() + Duration::seconds(30)));
    }

    #[test]
    fn denials_and_other_actions_are_never_coalesced_and_a_zero_window_coalesces_nothing() {
        let mut c = ReadCoalescer::new(MINUTE);
        let user = AuditActor::User(UserId::new());
        let mut denied = read(user.clone(), "p1", "10.0.0.1");
        denied.entry = denied.entry.denied();
        let mut export = read(user.clone(), "p1", "10.0.0.1");
        export.entry.action = AuditAction::Export;
        for r in [&denied, &export] {
            assert!(!c.is_repeat(r, t0()));
            assert!(!c.is_repeat(r, t0()));
        }
        assert!(c.is_empty());
        let mut zero = ReadCoalescer::new(std::time::Duration::ZERO);
        let r = read(user, "p1", "10.0.0.1");
        assert!(!zero.is_repeat(&r, t0()));
        assert!(!zero.is_repeat(&r, t0()));
    }

    #[test]
    fn another_address_operation_or_actor_is_a_read_of_its_own() {
        let mut c = ReadCoalescer::new(MINUTE);
        let user = AuditActor::User(UserId::new());
        let base = read(user, "p1", "10.0.0.1");
        let mut address = base.clone();
        address.client_address = Some(Arc::from("10.0.0.2"));
        let mut operation = base.clone();
        operation.operation_name = Some(Arc::from("Other"));
        let mut actor = base.clone();
        actor.actor = AuditActor::User(UserId::new());
        let mut no_operation = base.clone();
        no_operation.operation_name = None;
        for r in [&base, &address, &operation, &actor, &no_operation] {
            assert!(!c.is_repeat(r, t0()));
        }
        for r in [&base, &address, &operation, &actor, &no_operation] {
            assert!(c.is_repeat(r, t0()));
        }
    }
}
