//! End-to-end tests of lb live in `tests/tests/`; this library holds nothing but the crate root.
#![forbid(unsafe_code)]
