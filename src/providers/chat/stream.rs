//! The stream chat provider.
