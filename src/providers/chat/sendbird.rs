//! The sendbird chat provider.
