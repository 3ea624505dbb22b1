//! Chat sessions: categories, the status machine (`PENDING` → `ACTIVE` → `CLOSED`), close
//! reasons, and channel ids valid at every provider.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{AppointmentId, CareTeamId, CaseId, ChatSessionId, OrgId, UserId, care::stored_enum};
use crate::error::AppResult;

stored_enum!(
    /// Which audience a session belongs to (the PMS's pills).
    ChatCategory {
        /// Appointment chats with a client.
        Client => "CLIENT",
        /// 1:1 staff chats.
        Colleague => "COLLEAGUE",
        /// Group channels.
        Group => "GROUP",
        /// A case's room.
        Case => "CASE",
        /// A care team's staff conversation.
        CareTeam => "CARE_TEAM",
    }
);

impl ChatCategory {
    /// The provider metadata value (`chatCategory`).
    pub fn metadata_value(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Colleague => "colleague",
            Self::Group => "group",
            Self::Case => "case",
            Self::CareTeam => "care_team",
        }
    }
}

stored_enum!(
    /// Where a session is in its life.
    ChatStatus {
        /// Before its window opens.
        Pending => "PENDING",
        /// Open for messages.
        Active => "ACTIVE",
        /// Closed for good.
        Closed => "CLOSED",
    }
);

stored_enum!(
    /// Why a session's status changed.
    StatusReason {
        /// The state as it is (first event of a subscription).
        Current => "CURRENT",
        /// The window opened.
        WindowOpened => "WINDOW_OPENED",
        /// A person closed it.
        ClosedByUser => "CLOSED_BY_USER",
        /// The window ended.
        WindowEnded => "WINDOW_ENDED",
        /// The appointment was cancelled.
        AppointmentCancelled => "APPOINTMENT_CANCELLED",
        /// The appointment moved.
        Rescheduled => "RESCHEDULED",
        /// Someone froze the channel at the provider.
        ProviderFrozen => "PROVIDER_FROZEN",
        /// The channel was deleted at the provider.
        ProviderDeleted => "PROVIDER_DELETED",
    }
);

stored_enum!(
    /// A member's part in a session.
    ChatRole {
        /// Owns a group.
        Owner => "OWNER",
        /// Staff of the organisation.
        Staff => "STAFF",
        /// A client (guardian) of the patient.
        Client => "CLIENT",
    }
);

/// A chat session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSession {
    /// Id.
    pub id: ChatSessionId,
    /// The organisation.
    pub org_id: OrgId,
    /// The other organisation of a network chat.
    pub counterpart_org_id: Option<OrgId>,
    /// Whether it is a group.
    pub is_group: bool,
    /// Broadcast mode: only owners and admins post.
    pub read_only: bool,
    /// Image.
    pub image_url: Option<String>,
    /// Category.
    pub category: ChatCategory,
    /// Provider channel type.
    pub channel_type: String,
    /// Provider channel id.
    pub channel_id: String,
    /// Title.
    pub title: Option<String>,
    /// Who opened it.
    pub created_by: UserId,
    /// The appointment of a client chat.
    pub appointment_id: Option<AppointmentId>,
    /// The window's start (client chats).
    pub allowed_from: Option<DateTime<Utc>>,
    /// The window's end (client chats).
    pub allowed_until: Option<DateTime<Utc>>,
    /// Stored status (the scheduler keeps it in step with the window).
    pub status: ChatStatus,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Who closed it.
    pub closed_by: Option<UserId>,
    /// Why it closed.
    pub close_reason: Option<StatusReason>,
    /// Last activity (for lists).
    pub last_activity_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl ChatSession {
    /// A session about to be created now: open, without a window, an image or a counterpart,
    /// a group unless it is a 1:1 or client chat. Callers change what differs.
    pub fn new_open(
        org_id: OrgId,
        category: ChatCategory,
        channel_type: &str,
        channel_id: String,
        title: Option<String>,
        created_by: UserId,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ChatSessionId::new(),
            org_id,
            counterpart_org_id: None,
            is_group: !matches!(category, ChatCategory::Client | ChatCategory::Colleague),
            read_only: false,
            image_url: None,
            category,
            channel_type: channel_type.to_owned(),
            channel_id,
            title,
            created_by,
            appointment_id: None,
            allowed_from: None,
            allowed_until: None,
            status: ChatStatus::Active,
            closed_at: None,
            closed_by: None,
            close_reason: None,
            last_activity_at: now,
            created_at: now,
        }
    }
}

/// The status a window gives at `now` (a closed session stays closed).
pub fn status_at(
    closed: bool,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ChatStatus {
    if closed {
        return ChatStatus::Closed;
    }
    match (from, until) {
        (Some(from), _) if now < from => ChatStatus::Pending,
        (_, Some(until)) if now >= until => ChatStatus::Closed,
        _ => ChatStatus::Active,
    }
}

/// What makes a session unique (stored as its natural key): opening the same thing twice, or
/// concurrently, gets the one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKey {
    /// An appointment's chat.
    Appointment(AppointmentId),
    /// A group of an organisation, by its channel id or the slug of its title.
    Group {
        /// The organisation.
        org: OrgId,
        /// The slug.
        slug: String,
    },
    /// A 1:1 chat of an unordered pair, in one organisation or across two.
    Direct(DirectPair),
    /// A case's room.
    Case(CaseId),
    /// A care team's conversation.
    CareTeam(CareTeamId),
}

/// Who a 1:1 chat is between, in a canonical order: the same pair in either order is equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectPair {
    /// The organisations, the smaller id first (the second only for a network chat).
    pub orgs: (OrgId, Option<OrgId>),
    /// The two people, the smaller id first.
    pub users: (UserId, UserId),
}

impl DirectPair {
    /// The pair of `a` and `b` in `org` (and `counterpart`, across two organisations).
    pub fn new(org: OrgId, counterpart: Option<OrgId>, a: UserId, b: UserId) -> Self {
        let users = if a < b { (a, b) } else { (b, a) };
        let orgs = match counterpart {
            Some(c) if c < org => (c, Some(org)),
            Some(c) => (org, Some(c)),
            None => (org, None),
        };
        Self { orgs, users }
    }
}

impl SessionKey {
    /// Reads a key as stored (the form [`Display`](std::fmt::Display) writes); `None` for any
    /// other text.
    pub fn from_stored(raw: &str) -> Option<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let user = |s: &str| UserId::from_db(s).ok();
        let org = |s: &str| OrgId::from_db(s).ok();
        Some(match parts.as_slice() {
            ["appointment", id] => Self::Appointment(AppointmentId::from_db(id).ok()?),
            ["case", id] => Self::Case(CaseId::from_db(id).ok()?),
            ["care_team", id] => Self::CareTeam(CareTeamId::from_db(id).ok()?),
            ["group", o, slug] => Self::Group {
                org: org(o)?,
                slug: (*slug).to_owned(),
            },
            ["dm", o1, a, b] => Self::Direct(DirectPair {
                orgs: (org(o1)?, None),
                users: (user(a)?, user(b)?),
            }),
            ["dm", o1, o2, a, b] => Self::Direct(DirectPair {
                orgs: (org(o1)?, Some(org(o2)?)),
                users: (user(a)?, user(b)?),
            }),
            _ => return None,
        })
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Appointment(id) => write!(f, "appointment:{id}"),
            Self::Group { org, slug } => write!(f, "group:{org}:{slug}"),
            Self::Direct(DirectPair {
                orgs: (o1, Some(o2)),
                users: (a, b),
            }) => write!(f, "dm:{o1}:{o2}:{a}:{b}"),
            Self::Direct(DirectPair {
                orgs: (o1, None),
                users: (a, b),
            }) => write!(f, "dm:{o1}:{a}:{b}"),
            Self::Case(id) => write!(f, "case:{id}"),
            Self::CareTeam(id) => write!(f, "care_team:{id}"),
        }
    }
}

/// A channel id valid at every provider: at most 64 characters of `a-z 0-9 _ -`; a longer or
/// odd natural id is replaced by `prefix-<hash>`.
pub fn channel_id(prefix: &str, natural: &str) -> String {
    let candidate = format!("{prefix}-{natural}").to_lowercase();
    let valid = candidate.len() <= 64
        && candidate
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        candidate
    } else {
        let digest = hex::encode(Sha256::digest(natural.as_bytes()));
        format!("{prefix}-{}", &digest[..40])
    }
}

/// A group's channel id: unique per organisation by construction (a digest of the whole
/// organisation id, then the slug). Groups made before keep the channel id stored with them.
pub fn group_channel_id(org: OrgId, slug: &str) -> String {
    let digest = hex::encode(Sha256::digest(org.to_string().as_bytes()));
    channel_id("group", &format!("{}-{slug}", &digest[..12]))
}

/// Reads a stored optional reason.
pub fn reason_from_db(raw: Option<&str>) -> AppResult<Option<StatusReason>> {
    raw.map(StatusReason::from_db).transpose()
}

/// Whether a session's channel exists at the provider yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// The channel exists.
    Ready,
    /// Its creation is queued or under way.
    Pending,
    /// Its creation failed; it is tried again at `retry_at` (`None`: failed for good, an
    /// admin may queue it again).
    Failed {
        /// The next attempt.
        retry_at: Option<DateTime<Utc>>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn the_window_drives_the_status_and_a_close_is_final() {
        let now = Utc::now();
        let (from, until) = (
            Some(now + Duration::minutes(5)),
            Some(now + Duration::hours(1)),
        );
        assert_eq!(status_at(false, from, until, now), ChatStatus::Pending);
        assert_eq!(
            status_at(false, from, until, now + Duration::minutes(5)),
            ChatStatus::Active
        );
        assert_eq!(
            status_at(false, from, until, now + Duration::hours(1)),
            ChatStatus::Closed
        );
        assert_eq!(
            status_at(true, from, until, now + Duration::minutes(10)),
            ChatStatus::Closed
        );
        assert_eq!(status_at(false, None, None, now), ChatStatus::Active);
    }

    #[test]
    fn a_direct_key_is_the_same_in_either_order_and_keeps_the_stored_form() {
        let (o1, o2) = (OrgId::new(), OrgId::new());
        let (a, b) = (UserId::new(), UserId::new());
        assert_eq!(
            SessionKey::Direct(DirectPair::new(o1, None, a, b)),
            SessionKey::Direct(DirectPair::new(o1, None, b, a))
        );
        assert_eq!(
            SessionKey::Direct(DirectPair::new(o1, Some(o2), a, b)),
            SessionKey::Direct(DirectPair::new(o2, Some(o1), b, a))
        );
        assert_eq!(
            SessionKey::Direct(DirectPair::new(o1, None, a, b)).to_string(),
            format!("dm:{o1}:{a}:{b}")
        );
        assert_eq!(
            SessionKey::Direct(DirectPair::new(o1, Some(o2), a, b)).to_string(),
            format!("dm:{o1}:{o2}:{a}:{b}")
        );
        let case = CaseId::new();
        assert_eq!(SessionKey::Case(case).to_string(), format!("case:{case}"));
        for key in [
            SessionKey::Direct(DirectPair::new(o1, None, a, b)),
            SessionKey::Direct(DirectPair::new(o1, Some(o2), a, b)),
            SessionKey::Case(case),
            SessionKey::CareTeam(CareTeamId::new()),
            SessionKey::Appointment(AppointmentId::new()),
            SessionKey::Group {
                org: o1,
                slug: "front-desk".into(),
            },
        ] {
            assert_eq!(SessionKey::from_stored(&key.to_string()), Some(key));
        }
        assert_eq!(SessionKey::from_stored("case:not-an-id"), None);
    }

    #[test]
    fn group_channel_ids_of_two_organisations_made_in_one_minute_differ() {
        // UUIDv7 ids of one minute share their first 8 hex digits.
        let a = OrgId::from_db("0190a1b2-0000-7000-8000-000000000001").expect("id");
        let b = OrgId::from_db("0190a1b2-0000-7000-8000-000000000002").expect("id");
        assert_ne!(
            group_channel_id(a, "announcements"),
            group_channel_id(b, "announcements")
        );
        assert_eq!(
            group_channel_id(a, "announcements"),
            group_channel_id(a, "announcements")
        );
    }

    #[test]
    fn channel_ids_fit_every_provider() {
        let id = AppointmentId::new();
        assert_eq!(
            channel_id("appointment", &id.to_string()),
            format!("appointment-{id}")
        );
        let long = channel_id("group", &"x".repeat(100));
        assert!(long.len() <= 64 && long.starts_with("group-"));
        let odd = channel_id("group", "Café Team!");
        assert!(
            odd.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
