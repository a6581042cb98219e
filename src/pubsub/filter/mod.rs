//! Subscription filters (docs/PROTOCOL.md "Filters"): a predicate on the fields of a published
//! message's `data`, given with a `subscribe`, that chooses which of the pattern's messages
//! the subscription gets. Pure: no runtime, no I/O.
//!
//! - `parse.rs`: the filter grammar, from the client's JSON to one canonical [`Filter`], every
//!   bound ([`FilterLimits`]) checked while parsing, every refusal a [`FilterError`] naming
//!   what is wrong.
//! - `eval.rs`: a filter against a message's `data`, parsed once into a simd-json tape.
//! - `table.rs`: a shard's filters, interned ([`FilterTable`]: one id per canonical filter,
//!   refcounted), and the per-publish memo ([`Judge`]) that evaluates each distinct filter at
//!   most once per message and parses the data only if some filter is evaluated.
//!
//! # Canonical form
//!
//! Two filters that mean the same by construction get the same canonical form, and so the same
//! id on a shard: the shorthand `{"f": v}` is `{"f": {"eq": v}}`; an operator object with several
//! operators, and an object with several fields, are the `and` of their tests; nested `and`s
//! (and nested `or`s) are flattened; the operands of `and`, `or` and `in` are sorted and
//! de-duplicated; an `in` of one value is an `eq`, an `and`/`or` of one operand is that
//! operand; a number is kept as an integer when it is one (`1.0` is `1`). Nothing else is
//! rewritten: `{"a":{"gt":1}}` and `{"a":{"gte":2}}` stay two filters.
//!
//! # Invariants
//!
//! - A [`Filter`] is always within the [`FilterLimits`] it was parsed with, and its canonical
//!   text parses again to itself (property-tested).
//! - Evaluation never panics and never allocates: a field that is missing, data that is not a
//!   JSON object (or does not parse), an operand of the wrong type, all make a test false,
//!   except `exists: false`, which is true exactly when the field is missing.

mod eval;
mod parse;
mod table;
#[cfg(test)]
mod tests;

pub use eval::evaluate;
pub use table::{FilterTable, Judge, TableFull};

/// A filter's number in a shard's [`FilterTable`].
pub type FilterId = u32;

/// The bounds a filter is held to at parse (`limits.filter_*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Bytes of the filter's JSON text, as the client sent it.
    pub bytes_max: usize,
    /// Nesting: the filter object is depth 1, each object inside an `and` or `or` one more.
    pub depth_max: usize,
    /// Tests (a field with one operator) in the whole filter.
    pub clauses_max: usize,
    /// Values of one `in` list.
    pub in_max: usize,
}

/// Why a filter was refused: the label of `tickcast_filter_rejects_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// Not the grammar (an unknown operator, an operand of the wrong type, a repeated key, …).
    Malformed,
    /// Over `limits.filter_bytes_max`.
    Bytes,
    /// Over `limits.filter_depth_max`.
    Depth,
    /// Over `limits.filter_clauses_max`.
    Clauses,
    /// An `in` list over `limits.filter_in_max`.
    InList,
    /// A new distinct filter while the shard holds `limits.filters_per_shard_max`.
    Table,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Malformed,
        Refusal::Bytes,
        Refusal::Depth,
        Refusal::Clauses,
        Refusal::InList,
        Refusal::Table,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Bytes => "bytes",
            Refusal::Depth => "depth",
            Refusal::Clauses => "clauses",
            Refusal::InList => "in_list",
            Refusal::Table => "shard_table",
        }
    }
}

/// A refused filter: why (for the metric) and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub refusal: Refusal,
    /// For the `bad_request` reply; starts with `"filter"`.
    pub message: String,
}

/// A filter in canonical form (see the module doc), with its canonical JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
    text: Box<str>,
}

impl Filter {
    /// Parses the raw JSON text of a subscribe's `filter` value, within `limits`. `null` is no
    /// filter (`Ok(None)`).
    pub fn parse(raw: &[u8], limits: &FilterLimits) -> Result<Option<Filter>, FilterError> {
        parse::parse(raw, limits)
    }

    /// The canonical JSON text: equal for filters that are equal by construction, and parsed
    /// again it gives this filter.
    pub fn canonical(&self) -> &str {
        &self.text
    }

    /// Whether published `data` (one JSON value, as published) passes. Parses `data` for this
    /// one call: the fan-out shares one parse among all filters ([`Judge`]).
    pub fn matches(&self, data: &[u8]) -> bool {
        let mut input = data.to_vec();
        let root = simd_json::to_tape(&mut input).ok();
        evaluate(self, root.as_ref().map(|t| &t.0[..]))
    }
}

/// A filter's expression tree, canonical.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Every operand holds (at least two, none an `All`).
    All(Box<[Expr]>),
    /// Some operand holds (at least two, none an `Any`).
    Any(Box<[Expr]>),
    /// One field, one operator.
    Test { path: Box<[Box<str>]>, test: Test },
}

/// One operator and its operand.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Scalar),
    Ne(Scalar),
    /// At least two values, sorted by [`cmp_scalar`], no two equal.
    In(Box<[Scalar]>),
    Cmp(CmpOp, Num),
    Exists(bool),
}

/// `gt`, `gte`, `lt`, `lte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Gt => "gt",
            CmpOp::Gte => "gte",
            CmpOp::Lt => "lt",
            CmpOp::Lte => "lte",
        }
    }

    /// Whether `value` compared to the bound (`value.cmp(bound)`) satisfies the operator.
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Gt => ord == Greater,
            CmpOp::Gte => ord != Less,
            CmpOp::Lt => ord == Less,
            CmpOp::Lte => ord != Greater,
        }
    }
}

/// A JSON scalar operand.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
}

impl Scalar {
    fn as_ref(&self) -> ScalarRef<'_> {
        match self {
            Scalar::Null => ScalarRef::Null,
            Scalar::Bool(b) => ScalarRef::Bool(*b),
            Scalar::Num(n) => ScalarRef::Num(*n),
            Scalar::Str(s) => ScalarRef::Str(s),
        }
    }
}

/// A scalar of the filter or of the data, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ScalarRef<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
}

/// A JSON number, normalised: an integral value is an `Int` (so `1.0` equals `1`), a `Float`
/// has a fractional part (or is beyond `i128`). Integers compare exactly, whatever their
/// magnitude (order ids beyond 2^53 included).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

/// 2^127 as an `f64`: the first value beyond `i128`.
const I128_EDGE: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

impl Num {
    fn from_f64(f: f64) -> Num {
        if f.fract() == 0.0 && (-I128_EDGE..I128_EDGE).contains(&f) {
            Num::Int(f as i128)
        } else {
            Num::Float(f)
        }
    }

    fn cmp(self, other: Num) -> std::cmp::Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Float(a), Num::Float(b)) => a.total_cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse(),
        }
    }
}

/// `i` compared with `f`, exactly (no rounding of `i` to a float).
fn cmp_int_float(i: i128, f: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    if f.is_nan() {
        return Less;
    }
    if f >= I128_EDGE {
        return Less;
    }
    if f < -I128_EDGE {
        return Greater;
    }
    let floor = f.floor();
    match i.cmp(&(floor as i128)) {
        Equal if f > floor => Less,
        ord => ord,
    }
}

/// The total order of scalars (`in` lists are sorted by it): null, then booleans, numbers
/// (by value), strings (by bytes). Two scalars are equal for `eq` exactly when this says so.
fn cmp_scalar(a: ScalarRef<'_>, b: ScalarRef<'_>) -> std::cmp::Ordering {
    use ScalarRef::*;
    let rank = |s: &ScalarRef<'_>| match s {
        Null => 0,
        Bool(_) => 1,
        Num(_) => 2,
        Str(_) => 3,
    };
    match (a, b) {
        (Bool(x), Bool(y)) => x.cmp(&y),
        (Num(x), Num(y)) => x.cmp(y),
        (Str(x), Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (a, b) => rank(&a).cmp(&rank(&b)),
    }
}
