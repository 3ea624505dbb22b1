//! The outside world behind traits: chat providers (local, Stream, Sendbird, Ethora), SMS
//! gateways (local, Twilio) and video meeting links (Jitsi). Failures are classified at each
//! adapter's edge ([`error`]); every HTTP adapter goes through one resilient client ([`http`]).

pub mod chat;
pub mod error;
pub mod http;
pub mod meetings;
pub mod sms;
pub mod webhooks;
