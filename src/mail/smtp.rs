//! The SMTP adapter of the [`Mailer`] port (lettre, rustls): `CAREGRAPH_SMTP_URL` says where
//! and how (`smtp://user:pass@host:25` plain, `smtp://…:587?tls=required` STARTTLS,
//! `smtps://…:465` implicit TLS), `CAREGRAPH_MAIL_FROM` who sends.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

use super::{Delivered, Mail, MailError, Mailer};

/// One SMTP command's timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends mail through an SMTP server, one connection per mail (mail is rare: no pool).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// An adapter for the server at `url` sending as `from` (`Name <address>` or an address);
    /// the error names what is wrong without repeating the URL (it may hold a password).
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("CAREGRAPH_SMTP_URL: not a usable SMTP URL ({e})"))?
            .timeout(Some(COMMAND_TIMEOUT))
            .build();
        let from = from
            .trim()
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("CAREGRAPH_MAIL_FROM: not a mail address ({e})"))?;
        Ok(Self { transport, from })
    }
}

/// A lettre error in words that name no address: the reply code, or the kind of failure.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("the SMTP server replied {code}"),
        None if e.is_timeout() => "the SMTP server did not answer in time".into(),
        None if e.is_tls() => "TLS with the SMTP server failed".into(),
        None => "the SMTP server could not be reached or broke off".into(),
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, mail: &Mail) -> Result<Delivered, MailError> {
        let to = mail
            .to
            .parse::<Mailbox>()
            .map_err(|_| MailError::Permanent("the recipient is not a mail address".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|_| MailError::Permanent("the mail could not be built".into()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(Delivered::Sent),
            Err(e) if e.is_permanent() => Err(MailError::Permanent(describe(&e))),
            Err(e) => Err(MailError::Transient(describe(&e))),
        }
    }
}
