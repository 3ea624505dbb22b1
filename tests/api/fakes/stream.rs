//! The fake stream server.
