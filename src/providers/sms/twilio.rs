//! Twilio's Messages REST API: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded `To`, `From` (or `MessagingServiceSid`) and `Body`, HTTP basic auth with the
//! account SID and auth token; the answer's `sid` names the message. Also the check of
//! `X-Twilio-Signature` on inbound webhooks: base64(HMAC-SHA1(auth token, the full URL followed
//! by every form parameter's name and value, sorted by name)), compared in constant time.

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;

use super::{OutboundSms, ProviderError, SmsGateway};
use crate::{config::TwilioConfig, providers::http::ProviderHttp};

/// Twilio's Messages API.
pub struct Twilio {
    http: ProviderHttp,
    base_url: String,
    account_sid: String,
    auth_token: SecretString,
    from_number: Option<String>,
    messaging_service_sid: Option<String>,
}

impl Twilio {
    /// Builds the adapter over `http`, at `config.base_url`.
    pub fn new(config: &TwilioConfig, http: ProviderHttp) -> Self {
        Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            from_number: config.from_number.clone(),
            messaging_service_sid: config.messaging_service_sid.clone(),
        }
    }
}

/// A provider's message with every run of five or more digits replaced, so that no phone
/// number reaches a log, an outbox row or an admin's screen.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.chars().filter(char::is_ascii_digit).count() >= 5 {
            out.push_str("[number]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in message.chars() {
        if c.is_ascii_digit() || (c == '+' && digits.is_empty()) {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

fn redacted(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Rejected { status, message } => ProviderError::Rejected {
            status,
            message: redact(&message),
        },
        ProviderError::Unavailable(message) => ProviderError::Unavailable(redact(&message)),
        other => other,
    }
}

#[async_trait]
impl SmsGateway for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        );
        let mut form: Vec<(&str, &str)> = vec![("To", sms.to.as_str())];
        match (&self.messaging_service_sid, &self.from_number) {
            (Some(service), _) => form.push(("MessagingServiceSid", service.as_str())),
            (None, Some(from)) => form.push(("From", from.as_str())),
            (None, None) => {}
        }
        form.push(("Body", sms.body.as_str()));
        let response = self
            .http
            .send("send_sms", |c| {
                c.post(&url)
                    .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
                    .form(&form)
            })
            .await
            .map_err(redacted)?;
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|_| ProviderError::Unavailable("Twilio's answer is not JSON".into()))?;
        answer
            .get("sid")
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Unavailable("Twilio's answer has no sid".into()))
    }
}

/// Twilio's signature of a webhook request: base64(HMAC-SHA1(`auth_token`, `url` followed by
/// each parameter's name and value, sorted by name and then value)).
pub fn signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &[u8], url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// Whether `given` (the `X-Twilio-Signature` header) signs `url` and `params` with
/// `auth_token`, compared in constant time.
pub fn verify(auth_token: &[u8], url: &str, params: &[(String, String)], given: &str) -> bool {
    match STANDARD.decode(given.trim()) {
        Ok(given) => mac(auth_token, url, params).verify_slice(&given).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[test]
    fn the_signature_matches_twilios_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = signature(b"12345", url, &example());
        // TwilioDevEd/api-snippets, security/signature_validation (twilio-node).
        assert_eq!(sig, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(verify(b"12345", url, &example(), &sig));
    }

    #[test]
    fn a_signature_holds_only_for_its_token_url_and_parameters() {
        let url = "https://example.org/webhooks/twilio";
        let sig = signature(b"token", url, &example());
        assert!(!verify(b"other", url, &example(), &sig));
        assert!(!verify(
            b"token",
            "https://example.org/other",
            &example(),
            &sig
        ));
        let mut changed = example();
        changed[2].1 = "9999".into();
        assert!(!verify(b"token", url, &changed, &sig));
        assert!(!verify(b"token", url, &example(), "not base64!"));
    }

    #[test]
    fn numbers_in_provider_messages_are_redacted() {
        assert_eq!(
            redact("The 'To' number +15005550001 is not a valid phone number. (21211)"),
            "The 'To' number [number] is not a valid phone number. ([number])"
        );
        assert_eq!(redact("400 Bad Request"), "400 Bad Request");
    }
}
