//! CONTRACT STUB: implemented on the ws branch.
