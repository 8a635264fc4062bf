//! The setup wizard (`pbxha install`, or `--answers FILE` without questions) will live here:
//! preflight checks, the answers model, a plan of every change, applying it, and verifying
//! the pair. Nothing is implemented yet: the crate holds the place ARCHITECTURE.md gives it,
//! and no other crate depends on it.
