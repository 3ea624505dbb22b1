//! Wire-level tests of the ethora adapter.
