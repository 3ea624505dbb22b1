//! The fake sendbird server.
