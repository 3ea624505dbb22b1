//! Reading the audit trail: `auditEvents` and its export for an organisation's auditors, and a
//! patient's access log for their guardians and the patient's organisation's staff.
//!
//! Every read of the trail is itself recorded (`READ` of `AUDIT_TRAIL`), and every export when
//! its download starts (`EXPORT` of `AUDIT_TRAIL`, written before the first byte is sent).

use std::{net::IpAddr, sync::Arc};

use futures_util::{Stream, stream};

use super::{
    access::{auditor_of, patient_reader},
    audit_export::{
        CSV_HEADER, CheckedLink, EXPORT_TTL, ExportFormat, ExportGrant, LinkSigner, write_csv,
        write_ndjson,
    },
};
use crate::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditLog},
    auth::Viewer,
    clock::SharedClock,
    db::{self, audit_events::ChunkKey},
    domain::{
        OrgId, PatientId,
        audit::{AccessLogEntry, AuditEvent, AuditFilter},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
};

/// Records per database read while an export streams: the most the export holds in memory.
pub const EXPORT_CHUNK: u64 = 1_000;

/// A download link for an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportLink {
    /// The path (or, with `CAREGRAPH_PUBLIC_URL`, the full URL) to download from.
    pub url: String,
    /// When the link stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Who opened a download link, for the record of the export.
#[derive(Clone, Debug, Default)]
pub struct Downloader {
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The request's id (`x-request-id`).
    pub request_id: Option<String>,
}

/// The audit trail's readers.
#[derive(Clone)]
pub struct AuditTrailService {
    db: db::Db,
    clock: SharedClock,
    links: Arc<LinkSigner>,
    public_url: Option<String>,
    audit: AuditLog,
}

impl AuditTrailService {
    /// Builds the service; download links are signed with a key derived from `jwt_secret`, and
    /// downloads are recorded through `audit` (nothing when it is disabled).
    pub fn new(
        db: db::Db,
        clock: SharedClock,
        jwt_secret: &[u8],
        public_url: Option<String>,
        audit: AuditLog,
    ) -> Self {
        Self {
            db,
            clock,
            links: Arc::new(LinkSigner::new(jwt_secret)),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            audit,
        }
    }

    /// A page of `org_id`'s records matching `filter`, newest first (OWNER or auditor).
    pub async fn events(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        filter: AuditFilter,
        page: &PageRequest,
    ) -> AppResult<Page<AuditEvent>> {
        auditor_of(&self.db, viewer, org_id).await?;
        let filter = filter.validate()?;
        let found = db::audit_events::page(&self.db, org_id, &filter, page).await?;
        viewer
            .audit
            .record(AuditEntry::read(AuditEntity::AuditTrail, org_id).org(org_id));
        Ok(found)
    }

    /// A five-minute, single-use link to download `org_id`'s records matching `filter`
    /// (OWNER or auditor). The export is recorded when the link is used.
    pub async fn export(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        filter: AuditFilter,
        format: ExportFormat,
    ) -> AppResult<ExportLink> {
        let (user, _) = auditor_of(&self.db, viewer, org_id).await?;
        let filter = filter.validate()?;
        // Whole seconds: the token carries its expiry in seconds.
        let expires_at =
            chrono::DateTime::from_timestamp((self.clock.now() + EXPORT_TTL).timestamp(), 0)
                .ok_or_else(|| AppError::internal(anyhow::anyhow!("expiry out of range")))?;
        let token = self.links.sign(&ExportGrant {
            org_id,
            user_id: user.id,
            filter,
            format,
            expires_at,
        })?;
        let path = format!("/exports/audit/{token}");
        Ok(ExportLink {
            url: match &self.public_url {
                Some(base) => format!("{base}{path}"),
                None => path,
            },
            expires_at,
        })
    }

    /// Opens a download: checks and uses up the link in the database (an unknown, expired or
    /// already used one is `NOT_FOUND`, on every replica), checks that its auditor still is one
    /// and records the export (`EXPORT`, or a `DENIED` one when the auditor no longer is), when
    /// recording is on.
    pub async fn open_download(&self, token: &str, who: Downloader) -> AppResult<ExportGrant> {
        let now = self.clock.now();
        let CheckedLink { grant, nonce } = self.links.check(token, now)?;
        if !db::audit_export_links::use_once(&self.db, &nonce, grant.expires_at, now).await? {
            return Err(AppError::NotFound("export"));
        }
        let user = db::users::find(&self.db, grant.user_id)
            .await?
            .ok_or(AppError::NotFound("export"))?;
        let scope = self.audit.scope(
            AuditActor::User(user.id),
            who.request_id,
            who.client_ip.map(|ip| ip.to_string()),
        );
        let viewer = Viewer::signed_in(user, grant.expires_at, who.client_ip).with_audit(scope);
        let export = AuditEntry::new(AuditAction::Export, AuditEntity::AuditTrail, grant.org_id)
            .org(grant.org_id);
        if let Err(refused) = auditor_of(&self.db, &viewer, grant.org_id).await {
            // One record of the refusal: the denied export (not the read rule's own denial).
            let _ = viewer.audit.take();
            viewer.audit.record_in(&self.db, export.denied()).await?;
            return Err(refused);
        }
        viewer.audit.record_in(&self.db, export).await?;
        tracing::info!(org = %grant.org_id, format = grant.format.extension(), "audit export started");
        Ok(grant)
    }

    /// The export's body: the header (CSV), then the records newest first, read and rendered
    /// [`EXPORT_CHUNK`] at a time as the client takes them.
    pub fn download(
        &self,
        grant: ExportGrant,
    ) -> impl Stream<Item = AppResult<Vec<u8>>> + Send + 'static {
        struct State {
            db: db::Db,
            grant: ExportGrant,
            after: Option<ChunkKey>,
            started: bool,
            done: bool,
        }
        let state = State {
            db: self.db.clone(),
            grant,
            after: None,
            started: false,
            done: false,
        };
        stream::try_unfold(state, |mut s| async move {
            if s.done {
                return Ok(None);
            }
            let mut out = String::new();
            if !s.started {
                s.started = true;
                if s.grant.format == ExportFormat::Csv {
                    out.push_str(CSV_HEADER);
                }
            }
            let rows = db::audit_events::chunk(
                &s.db,
                s.grant.org_id,
                &s.grant.filter,
                s.after.as_ref(),
                EXPORT_CHUNK,
            )
            .await?;
            s.done = (rows.len() as u64) < EXPORT_CHUNK;
            s.after = rows.last().map(|e| (e.at, e.id.clone()));
            match s.grant.format {
                ExportFormat::Csv => write_csv(&mut out, &rows),
                ExportFormat::Ndjson => write_ndjson(&mut out, &rows),
            }
            Ok(Some((out.into_bytes(), s)))
        })
    }

    /// A page of who read `patient_id`'s record: staff reads, newest first (a guardian of the
    /// patient, or staff of the patient's organisation; anyone else `NOT_FOUND`).
    pub async fn access_log(
        &self,
        viewer: &Viewer,
        patient_id: PatientId,
        page: &PageRequest,
    ) -> AppResult<Page<AccessLogEntry>> {
        let (patient, _) = patient_reader(&self.db, viewer, patient_id).await?;
        let found = db::audit_events::access_log(&self.db, patient_id, page).await?;
        viewer.audit.record(
            AuditEntry::read(AuditEntity::AuditTrail, patient_id)
                .org(patient.org_id)
                .patient(patient_id),
        );
        Ok(found)
    }
}
