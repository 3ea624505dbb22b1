//! The audit export's download link and its formats: a signed, short-lived, single-use token
//! naming what to export, and the CSV and NDJSON renderings of a chunk of records.
//!
//! A token is `base64url(claims).base64url(HMAC-SHA256(claims))`, keyed by a key derived from
//! the JWT secret, so any replica sharing the secret can serve it; it lives five minutes, and
//! its nonce is stored in the database when it is used (`audit_export_links`, unique), so it
//! serves once whichever replica is asked.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    audit::{AuditAction, AuditEntity, AuditOutcome},
    domain::{
        OrgId, PatientId, UserId,
        audit::{AuditEvent, AuditFilter},
    },
    error::{AppError, AppResult},
};

type HmacSha256 = Hmac<Sha256>;

/// How long a download link works.
pub const EXPORT_TTL: Duration = Duration::minutes(5);

/// The length of a link's nonce (a v4 UUID in 32 hex digits), the width of its column.
pub const NONCE_LEN: usize = 32;

/// The export's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormat {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
}

impl ExportFormat {
    /// The response's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// The file name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

/// What a download link grants: this user's export of this organisation's filtered trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportGrant {
    /// The organisation.
    pub org_id: OrgId,
    /// The auditor who asked for it (checked again when the link is used).
    pub user_id: UserId,
    /// Which records.
    pub filter: AuditFilter,
    /// In which format.
    pub format: ExportFormat,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    o: OrgId,
    u: UserId,
    f: FilterClaims,
    x: ExportFormat,
    e: i64,
    n: String,
}

#[derive(Serialize, Deserialize)]
struct FilterClaims {
    p: Option<PatientId>,
    a: Option<String>,
    t: Option<String>,
    c: Option<String>,
    r: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// A checked link: what it grants, and the nonce that uses it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedLink {
    /// What the link grants.
    pub grant: ExportGrant,
    /// The link's nonce, stored when the link is used.
    pub nonce: String,
}

/// Signs and checks download links.
pub struct LinkSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

fn not_found() -> AppError {
    AppError::NotFound("export")
}

fn code<T>(raw: Option<String>, parse: fn(&str) -> Option<T>) -> AppResult<Option<T>> {
    raw.map(|r| parse(&r).ok_or_else(not_found)).transpose()
}

impl LinkSigner {
    /// A signer whose key is derived from `secret` (the JWT secret), for this purpose only.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"caregraph audit export link v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac())
    }

    /// A token for `grant`.
    pub fn sign(&self, grant: &ExportGrant) -> AppResult<String> {
        let f = &grant.filter;
        let claims = Claims {
            o: grant.org_id,
            u: grant.user_id,
            f: FilterClaims {
                p: f.patient_id,
                a: f.actor_id.clone(),
                t: f.entity.map(|e| e.as_str().to_owned()),
                c: f.action.map(|a| a.as_str().to_owned()),
                r: f.outcome.map(|o| o.as_str().to_owned()),
                from: f.from,
                to: f.to,
            },
            x: grant.format,
            e: grant.expires_at.timestamp(),
            n: uuid::Uuid::new_v4().simple().to_string(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(AppError::internal)?);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{body}.{tag}"))
    }

    /// Checks a token at `now` (the caller uses up its nonce): a forged, altered or expired
    /// token is `NOT_FOUND`, like a link that never existed.
    pub fn check(&self, token: &str, now: DateTime<Utc>) -> AppResult<CheckedLink> {
        let (body, tag) = token.split_once('.').ok_or_else(not_found)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| not_found())?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| not_found())?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| not_found())?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| not_found())?;
        let expires_at = DateTime::from_timestamp(claims.e, 0).ok_or_else(not_found)?;
        if now >= expires_at {
            return Err(not_found());
        }
        let filter = AuditFilter {
            patient_id: claims.f.p,
            actor_id: claims.f.a,
            entity: code(claims.f.t, AuditEntity::from_str_opt)?,
            action: code(claims.f.c, AuditAction::from_str_opt)?,
            outcome: code(claims.f.r, AuditOutcome::from_str_opt)?,
            from: claims.f.from,
            to: claims.f.to,
        };
        if claims.n.len() != NONCE_LEN {
            return Err(not_found());
        }
        Ok(CheckedLink {
            grant: ExportGrant {
                org_id: claims.o,
                user_id: claims.u,
                filter,
                format: claims.x,
                expires_at,
            },
            nonce: claims.n,
        })
    }
}

/// HMAC-SHA256 takes a key of any length; this cannot happen.
fn unreachable_hmac() -> HmacSha256 {
    unreachable!("HMAC accepts keys of any length")
}

/// The CSV header row.
pub const CSV_HEADER: &str = "id,at,actor_kind,actor_id,organization_id,action,entity_type,entity_id,patient_id,outcome,request_id,client_address,operation_name\r\n";

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One CSV field: quoted when it holds a comma, a quote or a line break (quotes doubled), and
/// prefixed with `'` when it starts like a spreadsheet formula (`=`, `+`, `-`, `@`, tab, CR).
fn csv_field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends records as CSV rows (CRLF line ends).
pub fn write_csv(out: &mut String, events: &[AuditEvent]) {
    for e in events {
        let org = e.org_id.map(|o| o.as_string());
        let fields: [&str; 13] = [
            &e.id,
            &time(e.at),
            e.actor_kind.as_str(),
            e.actor_id.as_deref().unwrap_or(""),
            org.as_deref().unwrap_or(""),
            e.action.as_str(),
            e.entity.as_str(),
            e.entity_id.as_deref().unwrap_or(""),
            e.patient_id.as_deref().unwrap_or(""),
            e.outcome.as_str(),
            e.request_id.as_deref().unwrap_or(""),
            e.client_address.as_deref().unwrap_or(""),
            e.operation_name.as_deref().unwrap_or(""),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(out, f);
        }
        out.push_str("\r\n");
    }
}

/// Appends records as NDJSON, one object per line, with the GraphQL field names.
pub fn write_ndjson(out: &mut String, events: &[AuditEvent]) {
    for e in events {
        let line = serde_json::json!({
            "id": e.id,
            "at": time(e.at),
            "actorKind": e.actor_kind.as_str(),
            "actorId": e.actor_id,
            "organizationId": e.org_id.map(|o| o.as_string()),
            "action": e.action.as_str(),
            "entityType": e.entity.as_str(),
            "entityId": e.entity_id,
            "patientId": e.patient_id,
            "outcome": e.outcome.as_str(),
            "requestId": e.request_id,
            "clientAddress": e.client_address,
            "operationName": e.operation_name,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(now: DateTime<Utc>) -> ExportGrant {
        ExportGrant {
            org_id: OrgId::new(),
            user_id: UserId::new(),
            filter: AuditFilter {
                action: Some(AuditAction::Read),
                actor_id: Some("abc".into()),
                ..AuditFilter::default()
            },
            format: ExportFormat::Csv,
            expires_at: now + EXPORT_TTL,
        }
    }

    #[test]
    fn a_link_checks_before_expiry_with_a_fresh_nonce_and_never_altered() {
        let signer = LinkSigner::new(b"secret");
        let now = Utc::now();
        let g = grant(now);
        let token = signer.sign(&g).expect("sign");
        let got = signer.check(&token, now).expect("checks");
        assert_eq!(got.grant.filter, g.filter);
        assert_eq!(got.grant.org_id, g.org_id);
        assert_eq!(got.nonce.len(), NONCE_LEN);
        let again = signer.sign(&g).expect("sign");
        assert_ne!(signer.check(&again, now).expect("checks").nonce, got.nonce);
        let late = signer.sign(&g).expect("sign");
        assert!(matches!(
            signer.check(&late, now + EXPORT_TTL),
            Err(AppError::NotFound(_))
        ));
        let other = LinkSigner::new(b"another secret");
        let foreign = other.sign(&g).expect("sign");
        assert!(matches!(
            signer.check(&foreign, now),
            Err(AppError::NotFound(_))
        ));
        let fresh = signer.sign(&g).expect("sign");
        let (body, tag) = fresh.split_once('.').expect("two parts");
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("b64")).expect("json");
        claims["f"]["c"] = serde_json::Value::Null;
        let altered = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert!(matches!(
            signer.check(&altered, now),
            Err(AppError::NotFound(_))
        ));
        assert!(signer.check(&fresh, now).is_ok());
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        csv_field(&mut out, "plain");
        out.push('|');
        csv_field(&mut out, "a,\"b\"\nc");
        out.push('|');
        csv_field(&mut out, "=1+2");
        assert_eq!(out, "plain|\"a,\"\"b\"\"\nc\"|'=1+2");
    }
}
