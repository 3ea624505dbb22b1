//! The outside world behind traits: video meeting links (Jitsi); chat providers arrive with the
//! chat features.

pub mod meetings;
