//! CONTRACT STUB: implemented on the ws branch.

/// Close codes tickcast sends (docs/PROTOCOL.md).
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_LARGE: u16 = 1009;
pub const INTERNAL: u16 = 1011;
pub const OVERLOADED: u16 = 1013;
pub const SLOW_CONSUMER: u16 = 4008;
