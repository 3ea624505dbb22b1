//! The ethora chat provider.
