//! The filter grammar (docs/PROTOCOL.md "Filters"):
//!
//! ```text
//! filter    = { member, … }                  at least one member; several: all must hold
//! member    = "and": [filter, …]             at least one; all must hold
//!           | "or":  [filter, …]             at least one; one must hold
//!           | "<path>": value                shorthand for {"eq": value}
//!           | "<path>": { operator, … }      at least one; all must hold
//! operator  = "eq": value | "ne": value | "in": [value, …]
//!           | "gt" | "gte" | "lt" | "lte": number
//!           | "exists": true | false
//! value     = string | number | true | false | null
//! path      = field names joined by ".", none empty ("book.side")
//! ```
//!
//! Anything else is refused with a message naming it. The bounds are checked on the way:
//! bytes first (before parsing), then depth, clauses and `in` lengths as they are reached, so
//! a hostile filter costs at most its bounded bytes. The JSON itself is read with serde_json,
//! whose recursion limit (128) holds however deep the text nests.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{
    CmpOp, Expr, Filter, FilterError, FilterLimits, Num, Refusal, Scalar, Test, cmp_scalar,
};

/// Parses the raw filter JSON within `limits` (see [`Filter::parse`]).
pub(super) fn parse(raw: &[u8], limits: &FilterLimits) -> Result<Option<Filter>, FilterError> {
    if raw.len() > limits.bytes_max {
        return Err(FilterError {
            refusal: Refusal::Bytes,
            message: format!(
                "\"filter\" is {} bytes; the limit is {} (limits.filter_bytes_max)",
                raw.len(),
                limits.bytes_max
            ),
        });
    }
    let json: Json = serde_json::from_slice(raw).map_err(|e| {
        malformed(format!(
            "\"filter\" is not valid JSON: {}",
            e.to_string().chars().take(120).collect::<String>()
        ))
    })?;
    if json == Json::Null {
        return Ok(None);
    }
    let mut p = Parser { limits, clauses: 0 };
    let (expr, text) = p.filter(&json, 1)?;
    Ok(Some(Filter {
        expr,
        text: text.into(),
    }))
}

fn malformed(message: String) -> FilterError {
    FilterError {
        refusal: Refusal::Malformed,
        message,
    }
}

/// A JSON value as the client wrote it: object members in order, repeated keys kept (so they
/// can be refused), numbers normalised.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Num(Num::Int(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Num(Num::Int(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Num(Num::from_f64(v)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            members.push((k, v));
        }
        Ok(Json::Obj(members))
    }
}

impl Json {
    fn scalar(&self) -> Option<Scalar> {
        Some(match self {
            Json::Null => Scalar::Null,
            Json::Bool(b) => Scalar::Bool(*b),
            Json::Num(n) => Scalar::Num(*n),
            Json::Str(s) => Scalar::Str(s.as_str().into()),
            Json::Arr(_) | Json::Obj(_) => return None,
        })
    }
}

const OPERATORS: &str = "eq, ne, in, gt, gte, lt, lte, exists";

/// Longest field path, or field name, quoted back in an error message.
const SHOWN_MAX: usize = 64;

/// `s` as a JSON string for a message, cut at [`SHOWN_MAX`] characters.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(SHOWN_MAX).collect();
    let mut out = serde_json::to_string(&cut).unwrap_or_default();
    if cut.len() < s.len() {
        out.insert(out.len() - 1, '…');
    }
    out
}

struct Parser<'l> {
    limits: &'l FilterLimits,
    clauses: usize,
}

impl Parser<'_> {
    /// A filter object at nesting `depth`: its canonical expression and text.
    fn filter(&mut self, json: &Json, depth: usize) -> Result<(Expr, String), FilterError> {
        if depth > self.limits.depth_max {
            return Err(FilterError {
                refusal: Refusal::Depth,
                message: format!(
                    "\"filter\" nests \"and\"/\"or\" deeper than {} levels \
                     (limits.filter_depth_max)",
                    self.limits.depth_max
                ),
            });
        }
        let Json::Obj(members) = json else {
            let what = if depth == 1 {
                "\"filter\" must be an object (or null)"
            } else {
                "\"filter\": each operand of \"and\"/\"or\" must be an object"
            };
            return Err(malformed(what.to_string()));
        };
        if members.is_empty() {
            return Err(malformed(
                "\"filter\": an empty object; give at least one field or \"and\"/\"or\""
                    .to_string(),
            ));
        }
        no_repeats(members, None)?;
        let mut all = Vec::with_capacity(members.len());
        for (key, value) in members {
            let part = match key.as_str() {
                "and" | "or" => self.combination(key, value, depth)?,
                _ => self.field(key, value)?,
            };
            all.push(part);
        }
        Ok(combine(all, true))
    }

    /// `"and": [...]` or `"or": [...]` inside a filter object at `depth`.
    fn combination(
        &mut self,
        key: &str,
        value: &Json,
        depth: usize,
    ) -> Result<(Expr, String), FilterError> {
        let items = match value {
            Json::Arr(items) if !items.is_empty() => items,
            _ => {
                return Err(malformed(format!(
                    "\"filter\": \"{key}\" takes a non-empty array of filter objects"
                )));
            }
        };
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            parts.push(self.filter(item, depth + 1)?);
        }
        Ok(combine(parts, key == "and"))
    }

    /// A member naming a field: its tests, joined with `and`.
    fn field(&mut self, path: &str, value: &Json) -> Result<(Expr, String), FilterError> {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(malformed(format!(
                "\"filter\": field path {} has an empty segment",
                shown(path)
            )));
        }
        let path: Box<[Box<str>]> = segments.iter().map(|s| (*s).into()).collect();
        let ops = match value {
            Json::Obj(ops) => ops,
            Json::Arr(_) => {
                return Err(malformed(format!(
                    "\"filter\": field {} takes a string, number, boolean or null, or an \
                     object of operators ({OPERATORS}); to match one of several values use \"in\"",
                    shown(&path.join("."))
                )));
            }
            scalar => {
                let value = scalar.scalar().expect("not an array or object");
                return self.test(&path, Test::Eq(value));
            }
        };
        let field = path.join(".");
        if ops.is_empty() {
            return Err(malformed(format!(
                "\"filter\": field {} has no operator ({OPERATORS})",
                shown(&field)
            )));
        }
        no_repeats(ops, Some(&field))?;
        let mut tests = Vec::with_capacity(ops.len());
        for (op, operand) in ops {
            let test = self.operator(&field, op, operand)?;
            tests.push(self.test(&path, test)?);
        }
        Ok(combine(tests, true))
    }

    /// One operator of a field, checked.
    fn operator(&self, field: &str, op: &str, operand: &Json) -> Result<Test, FilterError> {
        let wrong = |takes: &str| {
            malformed(format!(
                "\"filter\": \"{op}\" of field {} takes {takes}",
                shown(field)
            ))
        };
        const SCALAR: &str = "a string, number, boolean or null";
        Ok(match op {
            "eq" => Test::Eq(operand.scalar().ok_or_else(|| wrong(SCALAR))?),
            "ne" => Test::Ne(operand.scalar().ok_or_else(|| wrong(SCALAR))?),
            "gt" | "gte" | "lt" | "lte" => {
                let Json::Num(n) = operand else {
                    return Err(wrong("a number"));
                };
                let cmp = match op {
                    "gt" => CmpOp::Gt,
                    "gte" => CmpOp::Gte,
                    "lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Test::Cmp(cmp, *n)
            }
            "exists" => match operand {
                Json::Bool(b) => Test::Exists(*b),
                _ => return Err(wrong("true or false")),
            },
            "in" => {
                let list = "a non-empty array of strings, numbers, booleans or nulls";
                let items = match operand {
                    Json::Arr(items) if !items.is_empty() => items,
                    _ => return Err(wrong(list)),
                };
                if items.len() > self.limits.in_max {
                    return Err(FilterError {
                        refusal: Refusal::InList,
                        message: format!(
                            "\"filter\": \"in\" of field {} has {} values; the limit is {} \
                             (limits.filter_in_max)",
                            shown(field),
                            items.len(),
                            self.limits.in_max
                        ),
                    });
                }
                let mut values = items
                    .iter()
                    .map(Json::scalar)
                    .collect::<Option<Vec<Scalar>>>()
                    .ok_or_else(|| wrong(list))?;
                values.sort_by(|a, b| cmp_scalar(a.as_ref(), b.as_ref()));
                values.dedup_by(|a, b| cmp_scalar(a.as_ref(), b.as_ref()).is_eq());
                if values.len() == 1 {
                    Test::Eq(values.remove(0))
                } else {
                    Test::In(values.into())
                }
            }
            other => {
                return Err(malformed(format!(
                    "\"filter\": unknown operator {} for field {} (operators: {OPERATORS})",
                    shown(other),
                    shown(field)
                )));
            }
        })
    }

    /// One test, counted against `limits.filter_clauses_max`.
    fn test(&mut self, path: &[Box<str>], test: Test) -> Result<(Expr, String), FilterError> {
        self.clauses += 1;
        if self.clauses > self.limits.clauses_max {
            return Err(FilterError {
                refusal: Refusal::Clauses,
                message: format!(
                    "\"filter\" has more than {} tests (limits.filter_clauses_max)",
                    self.limits.clauses_max
                ),
            });
        }
        let expr = Expr::Test {
            path: path.into(),
            test,
        };
        let text = canonical_text(&expr);
        Ok((expr, text))
    }
}

/// Refuses an object that names a key twice (JSON leaves it undefined; a filter must not be
/// ambiguous). O(n log n): a hostile object of thousands of keys is checked before its
/// members count against any bound.
fn no_repeats(members: &[(String, Json)], field: Option<&str>) -> Result<(), FilterError> {
    let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let Some(k) = keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
        return Ok(());
    };
    Err(malformed(match field {
        Some(f) => format!(
            "\"filter\": field {} repeats operator {}",
            shown(f),
            shown(k)
        ),
        None => format!("\"filter\": key {} is repeated", shown(k)),
    }))
}

/// The `and` (`all`) or `or` of `parts`, canonical: nested ones of the same kind flattened,
/// operands sorted by their text and de-duplicated, a single operand standing alone.
fn combine(parts: Vec<(Expr, String)>, all: bool) -> (Expr, String) {
    let mut flat: Vec<(Expr, String)> = Vec::with_capacity(parts.len());
    for (expr, text) in parts {
        match expr {
            Expr::All(inner) if all => flat.extend(with_text(inner)),
            Expr::Any(inner) if !all => flat.extend(with_text(inner)),
            expr => flat.push((expr, text)),
        }
    }
    flat.sort_by(|a, b| a.1.cmp(&b.1));
    flat.dedup_by(|a, b| a.1 == b.1);
    if flat.len() == 1 {
        return flat.pop().expect("one operand");
    }
    let exprs: Box<[Expr]> = flat.into_iter().map(|(e, _)| e).collect();
    let expr = if all {
        Expr::All(exprs)
    } else {
        Expr::Any(exprs)
    };
    let text = canonical_text(&expr);
    (expr, text)
}

fn with_text(exprs: Box<[Expr]>) -> impl Iterator<Item = (Expr, String)> {
    exprs.into_vec().into_iter().map(|e| {
        let t = canonical_text(&e);
        (e, t)
    })
}

/// The canonical JSON text of `expr`: `{"<path>":{"<op>":<operand>}}` for a test,
/// `{"and":[…]}` / `{"or":[…]}` with operands in the order the expression keeps.
pub(super) fn canonical_text(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr);
    out
}

fn write_expr(out: &mut String, expr: &Expr) {
    match expr {
        Expr::All(xs) | Expr::Any(xs) => {
            out.push_str(if matches!(expr, Expr::All(_)) {
                "{\"and\":["
            } else {
                "{\"or\":["
            });
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_expr(out, x);
            }
            out.push_str("]}");
        }
        Expr::Test { path, test } => {
            out.push('{');
            write_str(out, &path.join("."));
            out.push_str(":{\"");
            match test {
                Test::Eq(v) => write_op(out, "eq", v),
                Test::Ne(v) => write_op(out, "ne", v),
                Test::In(vs) => {
                    out.push_str("in\":[");
                    for (i, v) in vs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write_scalar(out, v);
                    }
                    out.push(']');
                }
                Test::Cmp(op, n) => {
                    out.push_str(op.name());
                    out.push_str("\":");
                    write_num(out, *n);
                }
                Test::Exists(b) => out.push_str(if *b {
                    "exists\":true"
                } else {
                    "exists\":false"
                }),
            }
            out.push_str("}}");
        }
    }
}

fn write_op(out: &mut String, op: &str, v: &Scalar) {
    out.push_str(op);
    out.push_str("\":");
    write_scalar(out, v);
}

fn write_scalar(out: &mut String, v: &Scalar) {
    match v {
        Scalar::Null => out.push_str("null"),
        Scalar::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Scalar::Num(n) => write_num(out, *n),
        Scalar::Str(s) => write_str(out, s),
    }
}

fn write_num(out: &mut String, n: Num) {
    use std::fmt::Write;
    // `{:?}` of an f64 is its shortest round-trip form, in exponent notation when long
    // (`1e300`, `1.5e-7`): valid JSON, and it parses back to the same value.
    let _ = match n {
        Num::Int(i) => write!(out, "{i}"),
        Num::Float(f) => write!(out, "{f:?}"),
    };
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}
