//! People outside caregraph who take part in a chat by SMS: the external member, the keywords
//! that opt a number out and in again, and the short prefix every relayed message carries. No
//! I/O here.

use chrono::{DateTime, Utc};

use super::{CareTeamMemberId, ChatSessionId, ExternalMemberId};

/// The longest SMS body caregraph sends, in characters (Twilio's limit is 1600).
pub const SMS_BODY_MAX: usize = 1600;

/// A person outside caregraph in a chat session, reached by SMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalChatMember {
    /// Id (also their user id at the chat provider).
    pub id: ExternalMemberId,
    /// The session.
    pub session_id: ChatSessionId,
    /// Display name.
    pub name: String,
    /// E.164 phone number.
    pub phone_number: String,
    /// Whether the number sent STOP (nothing is relayed to it until START).
    pub opted_out: bool,
    /// The phone-only care-team member this one follows (added and removed with them).
    pub care_team_member_id: Option<CareTeamMemberId>,
    /// When a message was last relayed to them (an inbound reply goes to the chat relayed last).
    pub last_relayed_at: Option<DateTime<Utc>>,
    /// Added.
    pub created_at: DateTime<Utc>,
}

/// An SMS the local gateway recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSms {
    /// Its sid.
    pub id: String,
    /// The recipient's id in caregraph (an external member).
    pub reference: String,
    /// To.
    pub to: String,
    /// From.
    pub from: String,
    /// Text.
    pub body: String,
    /// Recorded.
    pub created_at: DateTime<Utc>,
}

/// What an inbound SMS asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyword {
    /// Stop sending to this number (`STOP`, `STOPALL`, `UNSUBSCRIBE`, `CANCEL`, `END`, `QUIT`).
    OptOut,
    /// Send again (`START`, `YES`, `UNSTOP`).
    OptIn,
    /// `HELP` or `INFO`: answered by the carrier or Twilio, not posted.
    Help,
}

/// The keyword an inbound body is (the whole body, case and surrounding blanks ignored), as
/// Twilio's default opt-out handling reads them.
pub fn keyword(body: &str) -> Option<Keyword> {
    match body.trim().to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::OptOut),
        "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
        "HELP" | "INFO" => Some(Keyword::Help),
        _ => None,
    }
}

/// The short label of a chat in relayed messages: its kind and the last six hex digits of its
/// id (the random part), never its title, which may name a patient.
pub fn chat_label(kind: &str, session: ChatSessionId) -> String {
    let id = session.as_string().replace('-', "");
    format!("{kind} chat #{}", &id[id.len() - 6..])
}

/// A relayed message: `[<author>, <chat label>] <text>`, cut to [`SMS_BODY_MAX`] characters.
pub fn relayed_body(author: &str, label: &str, text: &str) -> String {
    let author: String = author.chars().take(60).collect();
    let body = format!("[{author}, {label}] {text}");
    if body.chars().count() <= SMS_BODY_MAX {
        body
    } else {
        let mut cut: String = body.chars().take(SMS_BODY_MAX - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_and_opt_in_keywords_are_read_whole_and_in_any_case() {
        assert_eq!(keyword(" stop "), Some(Keyword::OptOut));
        assert_eq!(keyword("Unsubscribe"), Some(Keyword::OptOut));
        assert_eq!(keyword("START"), Some(Keyword::OptIn));
        assert_eq!(keyword("help"), Some(Keyword::Help));
        assert_eq!(keyword("please stop the meds"), None);
    }

    #[test]
    fn a_relayed_message_names_author_and_chat_but_not_its_title() {
        let id = ChatSessionId::from_db("0190a1b2-0000-7000-8000-00000000abcd").expect("id");
        let label = chat_label("Care team", id);
        assert_eq!(label, "Care team chat #00abcd");
        assert_eq!(
            relayed_body("Vera Vet", &label, "BP is stable"),
            "[Vera Vet, Care team chat #00abcd] BP is stable"
        );
        let long = "x".repeat(2000);
        assert_eq!(
            relayed_body("A", &label, &long).chars().count(),
            SMS_BODY_MAX
        );
    }
}
