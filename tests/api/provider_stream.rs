//! Wire-level tests of the stream adapter.
