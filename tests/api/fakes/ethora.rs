//! The fake ethora server.
