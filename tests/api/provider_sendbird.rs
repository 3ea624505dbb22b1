//! Wire-level tests of the sendbird adapter.
