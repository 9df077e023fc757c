//! Support crate for the criterion benches.
