//! The care domain: patients and guardians, consent, care teams, cases and appointments, with
//! the rules that need no I/O (appointment status transitions, windows, phone numbers).

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::{
    AppointmentId, CareTeamId, CareTeamMemberId, CaseId, ComplianceGroupId, ConsentId, OrgId,
    PatientId, UserId,
};
use crate::error::{AppError, AppResult};

/// Declares an enum stored as its SCREAMING_CASE name.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Reads the stored form.
            pub fn from_db(raw: &str) -> $crate::error::AppResult<Self> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::error::AppError::internal(anyhow::anyhow!(
                        concat!("corrupt ", stringify!($name), " {:?}"), other
                    ))),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                match raw.as_ref() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, &[$($text),+])),
                }
            }
        }
    };
}
pub(crate) use stored_enum;

stored_enum!(
    /// How closely a patient needs watching.
    RiskLevel { /** Routine. */ Low => "LOW", /** Watch. */ Medium => "MEDIUM", /** Escalate. */ High => "HIGH" }
);
stored_enum!(
    /// How a guardian relates to a patient.
    GuardianRelationship {
        /// The patient uses the app themself.
        SelfCare => "SELF",
        /// The main guardian (a pet's owner, a parent).
        Primary => "PRIMARY",
        /// A further guardian; takes part in client chats only with `canChat`.
        CoGuardian => "CO_GUARDIAN",
    }
);
stored_enum!(
    /// What a consent allows.
    ConsentScope { /** Chats. */ Messaging => "MESSAGING", /** Video meetings. */ Video => "VIDEO", /** Records. */ Records => "RECORDS" }
);
stored_enum!(
    /// A care team member's role.
    CareTeamRole {
        /// Leads the team.
        Lead => "LEAD",
        /// A member.
        Member => "MEMBER",
        /// A peer-support specialist.
        PeerSupport => "PEER_SUPPORT",
        /// An outside clinician.
        External => "EXTERNAL",
    }
);
stored_enum!(
    /// What kind of unit of work a case is.
    CaseKind { /** A case. */ Case => "CASE", /** An insurance claim. */ Claim => "CLAIM", /** An encounter. */ Encounter => "ENCOUNTER" }
);
stored_enum!(
    /// Whether a case is open.
    CaseStatus { /** Open. */ Open => "OPEN", /** Closed. */ Closed => "CLOSED" }
);
stored_enum!(
    /// A case participant's role.
    CaseRole { /** Administers the case. */ Admin => "ADMIN", /** Treats. */ Practitioner => "PRACTITIONER", /** The patient or client. */ Patient => "PATIENT" }
);
stored_enum!(
    /// How an appointment takes place.
    SessionType { /** At the practice. */ InPerson => "IN_PERSON", /** By video. */ Teleconference => "TELECONFERENCE" }
);
stored_enum!(
    /// Where an appointment is in its life.
    AppointmentStatus {
        /// Asked for, not yet confirmed.
        Requested => "REQUESTED",
        /// Confirmed and ahead.
        Upcoming => "UPCOMING",
        /// The client has arrived (or joined).
        CheckedIn => "CHECKED_IN",
        /// Under way.
        InProgress => "IN_PROGRESS",
        /// Done.
        Completed => "COMPLETED",
        /// Called off.
        Cancelled => "CANCELLED",
        /// The client did not come.
        NoShow => "NO_SHOW",
    }
);

impl AppointmentStatus {
    /// Whether nothing can follow this status.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::NoShow)
    }

    /// Whether `self → next` is a legal transition (staying put is legal and changes nothing).
    pub fn can_become(self, next: Self) -> bool {
        use AppointmentStatus::*;
        self == next
            || matches!(
                (self, next),
                (Requested, Upcoming | Cancelled)
                    | (
                        Upcoming,
                        CheckedIn | InProgress | Completed | Cancelled | NoShow
                    )
                    | (CheckedIn, InProgress | Completed | Cancelled | NoShow)
                    | (InProgress, Completed)
            )
    }

    /// Checks a transition, naming the argument at fault.
    pub fn transition(self, next: Self) -> AppResult<Self> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(AppError::bad_input(
                "status",
                format!(
                    "an appointment cannot go from {} to {}",
                    self.as_str(),
                    next.as_str()
                ),
            ))
        }
    }
}

/// A patient: a person, or an animal when `species` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patient {
    /// Id.
    pub id: PatientId,
    /// The organisation that cares for the patient.
    pub org_id: OrgId,
    /// Name.
    pub name: String,
    /// Species, for animals.
    pub species: Option<String>,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A guardian of a patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guardian {
    /// The patient.
    pub patient_id: PatientId,
    /// The guardian.
    pub user_id: UserId,
    /// How they relate.
    pub relationship: GuardianRelationship,
    /// Whether they take part in client chats.
    pub can_chat: bool,
}

impl Guardian {
    /// Whether this guardian takes part in client chats and meetings: themself, the primary
    /// guardian, and co-guardians with `canChat`.
    pub fn may_chat(&self) -> bool {
        match self.relationship {
            GuardianRelationship::SelfCare | GuardianRelationship::Primary => true,
            GuardianRelationship::CoGuardian => self.can_chat,
        }
    }
}

/// A consent to share a patient's care with another organisation or a compliance group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    /// Id.
    pub id: ConsentId,
    /// The patient.
    pub patient_id: PatientId,
    /// What it allows.
    pub scope: ConsentScope,
    /// The organisation it is granted to (or `None` with a compliance group).
    pub granted_to: Option<OrgId>,
    /// The compliance group it is granted to.
    pub compliance_group: Option<ComplianceGroupId>,
    /// Granted.
    pub granted_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Consent {
    /// Whether the consent counts at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A set of organisations that may share a patient's care under one consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplianceGroup {
    /// Id.
    pub id: ComplianceGroupId,
    /// Name.
    pub name: String,
    /// The organisation that made it.
    pub owner_org_id: OrgId,
    /// Its members: the owner and the organisations that accepted their invitation.
    pub org_ids: Vec<OrgId>,
    /// Organisations invited that have not accepted (ids as the inviter gave them: one may name
    /// no organisation at all).
    pub invited_org_ids: Vec<OrgId>,
}

/// An organisation's pending invitation to a compliance group, as its OWNERs and ADMINs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplianceGroupInvitation {
    /// The group.
    pub group_id: ComplianceGroupId,
    /// The group's name.
    pub group_name: String,
    /// The invited organisation.
    pub org_id: OrgId,
    /// The organisation that made the group and sent the invitation.
    pub invited_by: OrgId,
    /// That organisation's name.
    pub invited_by_name: String,
    /// When it was sent.
    pub invited_at: DateTime<Utc>,
}

/// A care team around a patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CareTeam {
    /// Id.
    pub id: CareTeamId,
    /// The patient.
    pub patient_id: PatientId,
    /// The patient's organisation.
    pub org_id: OrgId,
    /// Name.
    pub name: String,
}

/// A care team member: a user, or an outside clinician reached by phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CareTeamMember {
    /// Id.
    pub id: CareTeamMemberId,
    /// The team.
    pub care_team_id: CareTeamId,
    /// The member's account, when they have one.
    pub user_id: Option<UserId>,
    /// E.164 phone number of an external member without an account.
    pub phone: Option<String>,
    /// Name of an external member without an account.
    pub display_name: Option<String>,
    /// Role.
    pub role: CareTeamRole,
    /// The organisation the member acts for, when not the patient's own.
    pub member_org_id: Option<OrgId>,
}

impl CareTeamMember {
    /// Whether the member is outside the patient's organisation.
    pub fn is_external(&self) -> bool {
        self.user_id.is_none()
            || self.member_org_id.is_some()
            || self.role == CareTeamRole::External
    }
}

/// A case (claim, encounter): a unit of work with its own chat room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Id.
    pub id: CaseId,
    /// Organisation.
    pub org_id: OrgId,
    /// The caller's own reference, unique per organisation.
    pub reference: String,
    /// Kind.
    pub kind: CaseKind,
    /// Title.
    pub title: String,
    /// Status.
    pub status: CaseStatus,
    /// The patient, when there is one.
    pub patient_id: Option<PatientId>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
}

/// A case participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseParticipant {
    /// The case.
    pub case_id: CaseId,
    /// The participant.
    pub user_id: UserId,
    /// Role.
    pub role: CaseRole,
}

/// An appointment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appointment {
    /// Id.
    pub id: AppointmentId,
    /// Organisation.
    pub org_id: OrgId,
    /// The patient.
    pub patient_id: PatientId,
    /// The client (a guardian of the patient).
    pub client_id: UserId,
    /// The practitioner.
    pub practitioner_id: UserId,
    /// Starts.
    pub starts_at: DateTime<Utc>,
    /// Ends.
    pub ends_at: DateTime<Utc>,
    /// Length.
    pub duration_minutes: i32,
    /// In person or by video.
    pub session_type: SessionType,
    /// Status.
    pub status: AppointmentStatus,
    /// Why.
    pub reason: Option<String>,
    /// The PMS's own id.
    pub external_ref: Option<String>,
    /// Minutes before the start that the appointment chat opens (`None`: the default).
    pub activation_minutes: Option<i32>,
    /// The video room, fixed at scheduling (teleconferences only).
    pub room_name: Option<String>,
}

/// Cuts a client's time to microseconds, the precision both databases store, so that what a
/// mutation returns equals what a later read returns.
pub fn stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

/// Validates an appointment length.
pub fn duration(minutes: i32) -> AppResult<Duration> {
    if !(5..=480).contains(&minutes) {
        return Err(AppError::bad_input(
            "durationMinutes",
            "must be between 5 and 480",
        ));
    }
    Ok(Duration::minutes(i64::from(minutes)))
}

/// Validates an E.164 phone number (`+` and 8 to 15 digits, no leading zero).
pub fn phone_number(raw: &str, field: &str) -> AppResult<String> {
    let phone: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = phone.strip_prefix('+').unwrap_or("");
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(phone)
    } else {
        Err(AppError::bad_input(
            field,
            "a phone number is + and 8 to 15 digits (E.164), e.g. +447700900123",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppointmentStatus::*;

    #[test]
    fn finished_appointments_cannot_come_back() {
        for done in [Completed, Cancelled, NoShow] {
            assert!(done.is_terminal());
            for next in [Requested, Upcoming, CheckedIn, InProgress] {
                assert!(!done.can_become(next), "{done:?} -> {next:?}");
            }
        }
        assert!(Upcoming.can_become(CheckedIn));
        assert!(CheckedIn.can_become(InProgress));
        assert!(!InProgress.can_become(Upcoming));
        assert!(Upcoming.transition(Upcoming).is_ok());
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert_eq!(
            phone_number("+44 7700 900123", "phone").expect("valid"),
            "+447700900123"
        );
        for bad in [
            "07700900123",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+44abc",
        ] {
            assert!(phone_number(bad, "phone").is_err(), "{bad}");
        }
    }

    #[test]
    fn co_guardians_chat_only_when_allowed() {
        let g = |relationship, can_chat| Guardian {
            patient_id: PatientId::new(),
            user_id: UserId::new(),
            relationship,
            can_chat,
        };
        assert!(g(GuardianRelationship::Primary, false).may_chat());
        assert!(!g(GuardianRelationship::CoGuardian, false).may_chat());
        assert!(g(GuardianRelationship::CoGuardian, true).may_chat());
    }

    #[test]
    fn a_consent_counts_until_revoked_or_expired() {
        let now = Utc::now();
        let mut c = Consent {
            id: ConsentId::new(),
            patient_id: PatientId::new(),
            scope: ConsentScope::Video,
            granted_to: Some(OrgId::new()),
            compliance_group: None,
            granted_at: now,
            expires_at: Some(now + Duration::hours(1)),
            revoked_at: None,
        };
        assert!(c.is_active(now));
        assert!(!c.is_active(now + Duration::hours(2)));
        c.expires_at = None;
        c.revoked_at = Some(now);
        assert!(!c.is_active(now));
    }
}
