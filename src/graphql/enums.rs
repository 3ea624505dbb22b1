//! GraphQL enums of the care domain, each mapped both ways to its domain enum.

use async_graphql::Enum;

use crate::domain::care;

macro_rules! gql_enum {
    ($(#[$doc:meta])* $name:ident => $domain:ty { $($(#[$vmeta:meta])* $variant:ident => $dvariant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$name> for $domain {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => <$domain>::$dvariant),+
                }
            }
        }

        impl From<$domain> for $name {
            fn from(v: $domain) -> Self {
                match v {
                    $(<$domain>::$dvariant => $name::$variant),+
                }
            }
        }
    };
}

gql_enum!(
    /// How closely a patient needs watching.
    RiskLevel => care::RiskLevel {
        /// Routine.
        Low => Low,
        /// Watch.
        Medium => Medium,
        /// Escalate.
        High => High,
    }
);
gql_enum!(
    /// How a guardian relates to a patient.
    GuardianRelationship => care::GuardianRelationship {
        /// The patient uses the app themself.
        #[graphql(name = "SELF")]
        SelfCare => SelfCare,
        /// The main guardian (a pet's owner, a parent).
        Primary => Primary,
        /// A further guardian; takes part in client chats only with `canChat`.
        CoGuardian => CoGuardian,
    }
);
gql_enum!(
    /// What a consent allows.
    ConsentScope => care::ConsentScope {
        /// Chats.
        Messaging => Messaging,
        /// Video meetings.
        Video => Video,
        /// Records.
        Records => Records,
    }
);
gql_enum!(
    /// A care team member's role.
    CareTeamRole => care::CareTeamRole {
        /// Leads the team.
        Lead => Lead,
        /// A member.
        Member => Member,
        /// A peer-support specialist.
        PeerSupport => PeerSupport,
        /// An outside clinician.
        External => External,
    }
);
gql_enum!(
    /// What kind of unit of work a case is.
    CaseKind => care::CaseKind {
        /// A case.
        Case => Case,
        /// An insurance claim.
        Claim => Claim,
        /// An encounter.
        Encounter => Encounter,
    }
);
gql_enum!(
    /// Whether a case is open.
    CaseStatus => care::CaseStatus {
        /// Open.
        Open => Open,
        /// Closed.
        Closed => Closed,
    }
);
gql_enum!(
    /// A case participant's role.
    CaseRole => care::CaseRole {
        /// Administers the case.
        Admin => Admin,
        /// Treats.
        Practitioner => Practitioner,
        /// The patient or client.
        Patient => Patient,
    }
);
gql_enum!(
    /// How an appointment takes place.
    SessionType => care::SessionType {
        /// At the practice.
        InPerson => InPerson,
        /// By video.
        Teleconference => Teleconference,
    }
);
gql_enum!(
    /// Where an appointment is in its life.
    AppointmentStatus => care::AppointmentStatus {
        /// Asked for, not yet confirmed.
        Requested => Requested,
        /// Confirmed and ahead.
        Upcoming => Upcoming,
        /// The client has arrived (or joined).
        CheckedIn => CheckedIn,
        /// Under way.
        InProgress => InProgress,
        /// Done.
        Completed => Completed,
        /// Called off.
        Cancelled => Cancelled,
        /// The client did not come.
        NoShow => NoShow,
    }
);
gql_enum!(
    /// Whether a meeting can be joined now.
    MeetingState => crate::services::appointments::MeetingState {
        /// Before the window.
        NotYetOpen => NotYetOpen,
        /// Inside the window.
        Open => Open,
        /// After the window, or the appointment is over or called off.
        Closed => Closed,
    }
);
gql_enum!(
    /// A day of the week.
    Weekday => chrono::Weekday {
        /// Monday.
        Monday => Mon,
        /// Tuesday.
        Tuesday => Tue,
        /// Wednesday.
        Wednesday => Wed,
        /// Thursday.
        Thursday => Thu,
        /// Friday.
        Friday => Fri,
        /// Saturday.
        Saturday => Sat,
        /// Sunday.
        Sunday => Sun,
    }
);
