//! populate
