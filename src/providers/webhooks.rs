//! Webhooks from chat providers: verifying a delivery (constant-time HMAC-SHA256 over the raw
//! body, Stream's possibly gzipped) and reading it into [`ProviderEvent`]s. What caregraph does
//! with the events is the chat service's business.
//!
//! | Provider | Signature | Delivery id | Events read |
//! |---|---|---|---|
//! | Stream | `X-Signature`: hex HMAC-SHA256(API secret, body; gunzipped first when it starts `1f 8b`) | `X-Webhook-Id` (else a hash of the body) | `message.new`, `channel.updated` (frozen flag), `channel.frozen`/`unfrozen`, `channel.deleted`, `member.added`/`removed` |
//! | Sendbird | `x-sendbird-signature`: hex HMAC-SHA256(master API token, body) | a hash of the body (Sendbird retries the same bytes) | `group_channel:message_send`, `:freeze`/`:unfreeze`, `:changed` (freeze), `:remove`, `:join`/`:invite`, `:leave` |
//!
//! caregraph stays the source of truth for who is in a chat: a member added at the provider
//! behind its back is taken out there again; one who left there leaves here too.
//!
//! Ethora offers no webhooks (see the README).

use std::io::Read;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::chat::{ChannelRef, ChatMessage};

/// What a provider told caregraph about a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// A message was posted.
    Message {
        /// The channel.
        channel: ChannelRef,
        /// The message.
        message: ChatMessage,
    },
    /// The channel was frozen or unfrozen.
    Frozen {
        /// The channel.
        channel: ChannelRef,
        /// Whether it is frozen now.
        frozen: bool,
        /// When (deliveries arrive out of order).
        at: DateTime<Utc>,
    },
    /// The channel was deleted.
    Deleted {
        /// The channel.
        channel: ChannelRef,
        /// When (a late report must not close a channel made again since).
        at: DateTime<Utc>,
    },
    /// Users joined the channel.
    MembersAdded {
        /// The channel.
        channel: ChannelRef,
        /// Their ids.
        user_ids: Vec<String>,
    },
    /// Users left the channel.
    MembersRemoved {
        /// The channel.
        channel: ChannelRef,
        /// Their ids.
        user_ids: Vec<String>,
        /// When (a late report must not remove someone who joined since).
        at: DateTime<Utc>,
    },
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No signature, or a wrong one (401).
    Unsigned,
    /// Not JSON, or a compressed body that does not inflate (400).
    Malformed,
}

/// Bodies inflate to at most this before their signature is checked (a gzip bomb stops here;
/// Stream's events are a few KiB).
const MAX_INFLATED: u64 = 1024 * 1024;

/// Checks a hex HMAC-SHA256 signature of `body` with `key`, in constant time.
pub fn signed(key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    signature.is_some_and(|s| crate::crypto::verify_hex(key, body, s))
}

/// The body Stream signed: gunzipped when it starts with the gzip magic bytes.
pub fn stream_body(raw: &[u8]) -> Result<Vec<u8>, Refusal> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|_| Refusal::Malformed)?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(Refusal::Malformed);
    }
    Ok(out)
}

/// A delivery id for a provider that sends none: the body's hash (retries send the same bytes).
pub fn body_id(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// When the event says it happened: `created_at` at the top (Stream: RFC 3339) or in `payload`
/// (Sendbird: milliseconds); `None` when the body carries neither.
pub fn event_time(event: &Value) -> Option<DateTime<Utc>> {
    let raw = event
        .get("created_at")
        .or_else(|| event.get("payload").and_then(|p| p.get("created_at")))?;
    match raw {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => {
            let n = n.as_i64()?;
            // Milliseconds since the epoch, or seconds for small values.
            if n > 100_000_000_000 {
                Utc.timestamp_millis_opt(n).single()
            } else {
                Utc.timestamp_opt(n, 0).single()
            }
        }
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn stream_channel(event: &Value) -> Option<ChannelRef> {
    let from_cid = || {
        let cid = event
            .get("cid")
            .or_else(|| event.get("channel").and_then(|c| c.get("cid")))?
            .as_str()?;
        let (t, id) = cid.split_once(':')?;
        Some(ChannelRef {
            channel_type: t.to_owned(),
            channel_id: id.to_owned(),
        })
    };
    from_cid().or_else(|| {
        Some(ChannelRef {
            channel_type: text(event, "channel_type")?,
            channel_id: text(event, "channel_id")?,
        })
    })
}

fn time(v: Option<&Value>) -> DateTime<Utc> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

fn millis(v: Option<&Value>) -> DateTime<Utc> {
    v.and_then(Value::as_i64)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Utc::now)
}

/// Reads a Stream webhook body.
pub fn parse_stream(event: &Value) -> Vec<ProviderEvent> {
    let Some(channel) = stream_channel(event) else {
        return Vec::new();
    };
    let user_of = |v: &Value| {
        v.get("member")
            .and_then(|m| text(m, "user_id"))
            .or_else(|| v.get("user").and_then(|u| text(u, "id")))
    };
    match event.get("type").and_then(Value::as_str).unwrap_or("") {
        "message.new" => {
            let Some(m) = event.get("message") else {
                return Vec::new();
            };
            vec![ProviderEvent::Message {
                channel,
                message: ChatMessage {
                    id: text(m, "id").unwrap_or_default(),
                    text: text(m, "text").unwrap_or_default(),
                    sent_at: time(m.get("created_at")),
                    author: m.get("user").and_then(|u| text(u, "id")),
                    system: m.get("type").and_then(Value::as_str) == Some("system"),
                },
            }]
        }
        "channel.frozen" => vec![ProviderEvent::Frozen {
            channel,
            frozen: true,
            at: time(event.get("created_at")),
        }],
        "channel.unfrozen" => vec![ProviderEvent::Frozen {
            channel,
            frozen: false,
            at: time(event.get("created_at")),
        }],
        "channel.updated" => event
            .get("channel")
            .and_then(|c| c.get("frozen"))
            .and_then(Value::as_bool)
            .map(|frozen| ProviderEvent::Frozen {
                channel,
                frozen,
                at: time(event.get("created_at")),
            })
            .into_iter()
            .collect(),
        "channel.deleted" => vec![ProviderEvent::Deleted {
            channel,
            at: time(event.get("created_at")),
        }],
        "member.added" => user_of(event)
            .map(|u| ProviderEvent::MembersAdded {
                channel,
                user_ids: vec![u],
            })
            .into_iter()
            .collect(),
        "member.removed" => user_of(event)
            .map(|u| ProviderEvent::MembersRemoved {
                channel,
                user_ids: vec![u],
                at: time(event.get("created_at")),
            })
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads a Sendbird webhook body (channels are `messaging` channels named by `channel_url`).
pub fn parse_sendbird(event: &Value) -> Vec<ProviderEvent> {
    let Some(url) = event.get("channel").and_then(|c| text(c, "channel_url")) else {
        return Vec::new();
    };
    let channel = ChannelRef {
        channel_type: crate::providers::chat::CHANNEL_TYPE.to_owned(),
        channel_id: url,
    };
    let users = |key: &str| -> Vec<String> {
        event
            .get(key)
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|u| text(u, "user_id")).collect())
            .unwrap_or_default()
    };
    match event.get("category").and_then(Value::as_str).unwrap_or("") {
        "group_channel:message_send" => {
            let payload = event.get("payload").cloned().unwrap_or(Value::Null);
            let sent_at = millis(payload.get("created_at"));
            vec![ProviderEvent::Message {
                channel,
                message: ChatMessage {
                    id: payload
                        .get("message_id")
                        .map(|v| v.to_string().trim_matches('"').to_owned())
                        .unwrap_or_default(),
                    text: text(&payload, "message").unwrap_or_default(),
                    sent_at,
                    author: event.get("sender").and_then(|s| text(s, "user_id")),
                    system: event.get("type").and_then(Value::as_str) == Some("ADMM"),
                },
            }]
        }
        "group_channel:freeze" => vec![ProviderEvent::Frozen {
            channel,
            frozen: true,
            at: millis(event.get("created_at")),
        }],
        "group_channel:unfreeze" => vec![ProviderEvent::Frozen {
            channel,
            frozen: false,
            at: millis(event.get("created_at")),
        }],
        "group_channel:changed" => event
            .get("channel")
            .and_then(|c| c.get("freeze"))
            .and_then(Value::as_bool)
            .map(|frozen| ProviderEvent::Frozen {
                channel,
                frozen,
                at: millis(event.get("created_at")),
            })
            .into_iter()
            .collect(),
        "group_channel:remove" => vec![ProviderEvent::Deleted {
            channel,
            at: millis(event.get("created_at")),
        }],
        "group_channel:join" | "group_channel:invite" => {
            let mut ids = users("users");
            if ids.is_empty() {
                ids = users("invitees");
            }
            if ids.is_empty() {
                return Vec::new();
            }
            vec![ProviderEvent::MembersAdded {
                channel,
                user_ids: ids,
            }]
        }
        "group_channel:leave" => {
            let ids = users("users");
            if ids.is_empty() {
                return Vec::new();
            }
            vec![ProviderEvent::MembersRemoved {
                channel,
                user_ids: ids,
                at: millis(event.get("created_at")),
            }]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::json;

    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_key_and_exact_body() {
        let body = br#"{"type":"message.new"}"#;
        let sig = crate::crypto::hmac_hex(b"secret", body);
        assert!(signed(b"secret", body, Some(&sig)));
        assert!(signed(b"secret", body, Some(&sig.to_uppercase())));
        assert!(!signed(b"other", body, Some(&sig)));
        assert!(!signed(
            b"secret",
            br#"{"type":"message.new" }"#,
            Some(&sig)
        ));
        assert!(!signed(b"secret", body, None));
        assert!(!signed(b"secret", body, Some("not hex")));
    }

    #[test]
    fn a_gzipped_stream_body_inflates_and_a_bomb_is_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{}").expect("write");
        assert_eq!(stream_body(&gz.finish().expect("gz")).expect("ok"), b"{}");
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; 2 * 1024 * 1024]).expect("write");
        assert_eq!(
            stream_body(&bomb.finish().expect("gz")),
            Err(Refusal::Malformed)
        );
        assert_eq!(stream_body(&[0x1f, 0x8b, 1, 2]), Err(Refusal::Malformed));
    }

    #[test]
    fn stream_events_read_into_provider_events() {
        let msg = json!({"type": "message.new", "cid": "messaging:abc",
            "message": {"id": "m1", "text": "hi", "user": {"id": "u1"}, "created_at": "2026-11-21T10:00:00Z"}});
        let [ProviderEvent::Message { channel, message }] = &parse_stream(&msg)[..] else {
            panic!("one message")
        };
        assert_eq!(channel.channel_id, "abc");
        assert_eq!(message.author.as_deref(), Some("u1"));
        assert!(!message.system);
        let frozen =
            json!({"type": "channel.updated", "cid": "messaging:abc", "channel": {"frozen": true}});
        assert!(matches!(
            &parse_stream(&frozen)[..],
            [ProviderEvent::Frozen { frozen: true, .. }]
        ));
        let renamed =
            json!({"type": "channel.updated", "cid": "messaging:abc", "channel": {"name": "x"}});
        assert!(parse_stream(&renamed).is_empty());
        let removed =
            json!({"type": "member.removed", "cid": "messaging:abc", "user": {"id": "u2"}});
        assert!(matches!(
            &parse_stream(&removed)[..],
            [ProviderEvent::MembersRemoved { user_ids, .. }] if user_ids == &["u2"]
        ));
    }

    #[test]
    fn sendbird_events_read_into_provider_events() {
        let msg = json!({"category": "group_channel:message_send", "type": "MESG",
            "channel": {"channel_url": "abc"}, "sender": {"user_id": "u1"},
            "payload": {"message_id": 42, "message": "hi", "created_at": 1_763_719_200_000_i64}});
        let [ProviderEvent::Message { message, .. }] = &parse_sendbird(&msg)[..] else {
            panic!("one message")
        };
        assert_eq!(message.id, "42");
        assert_eq!(message.text, "hi");
        assert_eq!(message.sent_at.timestamp_millis(), 1_763_719_200_000);
        let gone = json!({"category": "group_channel:remove", "channel": {"channel_url": "abc"}});
        assert!(matches!(
            &parse_sendbird(&gone)[..],
            [ProviderEvent::Deleted { .. }]
        ));
    }
}
