//! The local chat provider.
