//! People and organisations: roles, email addresses and slugs.

use std::fmt;

use crate::error::AppError;

/// A member's role in an organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrgRole {
    /// Owns the organisation; manages everything.
    Owner,
    /// Manages members and settings.
    Admin,
    /// A vet, doctor or nurse practitioner.
    Practitioner,
    /// Technicians, receptionists, peer-support specialists; `title` says which.
    Staff,
}

impl OrgRole {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Admin => "ADMIN",
            Self::Practitioner => "PRACTITIONER",
            Self::Staff => "STAFF",
        }
    }

    /// Reads the stored form.
    pub fn from_db(raw: &str) -> Result<Self, AppError> {
        Ok(match raw {
            "OWNER" => Self::Owner,
            "ADMIN" => Self::Admin,
            "PRACTITIONER" => Self::Practitioner,
            "STAFF" => Self::Staff,
            other => {
                return Err(AppError::internal(anyhow::anyhow!(
                    "corrupt role {other:?}"
                )));
            }
        })
    }

    /// Whether the role manages members and settings.
    pub fn manages_organization(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// A normalised (trimmed, lowercased) email address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates an address sent by a client; `field` names the argument for the error.
    pub fn parse(raw: &str, field: &str) -> Result<Self, AppError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 320
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(email))
        } else {
            Err(AppError::bad_input(field, "not a valid email address"))
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organisation slug: 2 to 64 characters of `a-z 0-9 -`, not starting or ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Validates a slug sent by a client.
    pub fn parse(raw: &str, field: &str) -> Result<Self, AppError> {
        let slug = raw.trim();
        let valid = (2..=64).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-');
        if valid {
            Ok(Self(slug.to_owned()))
        } else {
            Err(AppError::bad_input(
                field,
                "a slug is 2 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ))
        }
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a required, trimmed piece of text of at most `max` characters.
pub fn required_text(raw: &str, field: &str, max: usize) -> Result<String, AppError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(AppError::bad_input(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Validates optional text: trimmed, empty becomes `None`, at most `max` characters.
pub fn optional_text(
    raw: Option<&str>,
    field: &str,
    max: usize,
) -> Result<Option<String>, AppError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => required_text(text, field, max).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ", "email")
                .expect("valid")
                .as_str(),
            "ada@example.org"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a da@example.org",
            "a@b@c.org",
        ] {
            assert!(Email::parse(bad, "email").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slugs_are_validated() {
        assert!(Slug::parse("riverside-vets", "slug").is_ok());
        for bad in ["R", "Riverside", "-a", "a-", "a_b", "a b"] {
            assert!(Slug::parse(bad, "slug").is_err(), "{bad:?} accepted");
        }
    }
}

/// A person, as the services see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id (also their id at the chat provider).
    pub id: super::UserId,
    /// Normalised email address.
    pub email: String,
    /// The identity provider's subject, when it owns the id.
    pub external_id: Option<String>,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Name shown to others.
    pub display_name: String,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// When the user was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// The organisation's id.
    pub id: super::OrgId,
    /// Display name.
    pub name: String,
    /// Unique slug.
    pub slug: String,
    /// Whether network chats with other organisations are allowed.
    pub cross_org_messaging: bool,
    /// Minutes before an appointment that its chat opens (`None`: the deployment's default).
    pub chat_activation_minutes: Option<i32>,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A user's membership of an organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The organisation.
    pub org_id: super::OrgId,
    /// The member.
    pub user_id: super::UserId,
    /// Their role.
    pub role: OrgRole,
    /// Job title.
    pub title: Option<String>,
    /// Whether the membership is active.
    pub active: bool,
    /// Whether the member may read and export the organisation's audit trail.
    pub auditor: bool,
}

/// Builds a display name from given and family names.
pub fn display_name(given: &str, family: &str) -> String {
    format!("{} {}", given.trim(), family.trim())
        .trim()
        .to_owned()
}
