//! Attribute values: what a field of an item can be, and how it is stored.
//!
//! Every attribute type implements [`Attribute`], which says what kind of
//! column holds it and converts to and from a backend-neutral [`Value`]. The
//! set is closed on purpose: integer, float, bool, text, bytes, [`Timestamp`],
//! exact [`Decimal`], JSON, references ([`Ref`]) and `Option` of each. A type
//! outside it does not compile as an attribute, so nothing reaches the
//! database that the store cannot compare, index and upgrade.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

pub use rust_decimal::Decimal;

use crate::item::Item;

/// One stored value, independent of the backend. Borrowed when it comes from
/// an item being written, owned when it comes from a row being read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL: an absent `Option`.
    Null,
    /// Integers, bools, timestamps and references.
    Integer(i64),
    /// Floats.
    Real(f64),
    /// Text, decimals and JSON.
    Text(Cow<'a, str>),
    /// Bytes.
    Blob(Cow<'a, [u8]>),
}

impl Value<'_> {
    /// An owned copy that outlives the item it was borrowed from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Integer(i) => Value::Integer(i),
            Value::Real(f) => Value::Real(f),
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Blob(b) => Value::Blob(Cow::Owned(b.into_owned())),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a float",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// The kind of an attribute, which decides its column type and how it
/// compares. Decimals are kept as text so that they stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// `i64` (and the smaller integer types).
    Integer,
    /// `f64`.
    Float,
    /// `bool`, stored as 0 or 1.
    Bool,
    /// `String`.
    Text,
    /// `Vec<u8>`.
    Bytes,
    /// [`Timestamp`], stored as microseconds since the Unix epoch.
    Timestamp,
    /// [`Decimal`], stored as its exact decimal text.
    Decimal,
    /// `serde_json::Value`, stored as JSON text.
    Json,
    /// [`Ref`], stored as the referenced item's id.
    Ref,
}

impl AttrKind {
    /// A stable name, kept in the store's schema table.
    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Integer => "integer",
            AttrKind::Float => "float",
            AttrKind::Bool => "bool",
            AttrKind::Text => "text",
            AttrKind::Bytes => "bytes",
            AttrKind::Timestamp => "timestamp",
            AttrKind::Decimal => "decimal",
            AttrKind::Json => "json",
            AttrKind::Ref => "ref",
        }
    }
}

/// A stored value did not have the shape its attribute declares. The message
/// names the item type and the attribute.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{item}.{attribute}: {problem}")]
pub struct ValueError {
    /// The item type's stable name (empty until known).
    pub item: &'static str,
    /// The attribute name (empty until known).
    pub attribute: &'static str,
    /// What was wrong.
    pub problem: String,
}

impl ValueError {
    /// A value error not yet tied to an attribute.
    pub fn new(problem: impl Into<String>) -> Self {
        ValueError {
            item: "",
            attribute: "",
            problem: problem.into(),
        }
    }

    fn expected(what: &str, got: &Value<'_>) -> Self {
        ValueError::new(format!("expected {what}, found {}", got.describe()))
    }

    /// Ties the error to an attribute; used by the generated code.
    pub fn in_attribute(mut self, item: &'static str, attribute: &'static str) -> Self {
        self.item = item;
        self.attribute = attribute;
        self
    }
}

/// A type that can be an attribute of an item.
///
/// Implemented for the closed set of attribute types listed in the module
/// documentation; `#[derive(Item)]` requires it of every field.
pub trait Attribute: Sized + Send + Sync + 'static {
    /// The non-optional type that comparisons take: `i64` for both `i64` and
    /// `Option<i64>`.
    type Scalar: Attribute;
    /// The column kind.
    const KIND: AttrKind;
    /// Whether the attribute may be absent (an `Option`).
    const NULLABLE: bool = false;
    /// For references, the stable name of the referenced item type.
    const REFERENCES: Option<&'static str> = None;

    /// This value as stored.
    fn to_value(&self) -> Value<'_>;
    /// Back from a stored value.
    fn from_value(value: Value<'static>) -> Result<Self, ValueError>;
}

impl Attribute for i64 {
    type Scalar = i64;
    const KIND: AttrKind = AttrKind::Integer;
    fn to_value(&self) -> Value<'_> {
        Value::Integer(*self)
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Integer(i) => Ok(i),
            other => Err(ValueError::expected("an integer", &other)),
        }
    }
}

macro_rules! small_int {
    ($($t:ty),*) => {$(
        impl Attribute for $t {
            type Scalar = $t;
            const KIND: AttrKind = AttrKind::Integer;
            fn to_value(&self) -> Value<'_> {
                Value::Integer(i64::from(*self))
            }
            fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
                let i = i64::from_value(value)?;
                <$t>::try_from(i).map_err(|_| {
                    ValueError::new(format!("{i} does not fit in {}", stringify!($t)))
                })
            }
        }
    )*};
}
small_int!(i32, u32, i16, u16, i8, u8);

impl Attribute for f64 {
    type Scalar = f64;
    const KIND: AttrKind = AttrKind::Float;
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(ValueError::expected("a float", &other)),
        }
    }
}

impl Attribute for bool {
    type Scalar = bool;
    const KIND: AttrKind = AttrKind::Bool;
    fn to_value(&self) -> Value<'_> {
        Value::Integer(i64::from(*self))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Integer(0) => Ok(false),
            Value::Integer(1) => Ok(true),
            other => Err(ValueError::expected("a bool (0 or 1)", &other)),
        }
    }
}

impl Attribute for String {
    type Scalar = String;
    const KIND: AttrKind = AttrKind::Text;
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Text(t) => Ok(t.into_owned()),
            other => Err(ValueError::expected("text", &other)),
        }
    }
}

impl Attribute for Vec<u8> {
    type Scalar = Vec<u8>;
    const KIND: AttrKind = AttrKind::Bytes;
    fn to_value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Blob(b) => Ok(b.into_owned()),
            other => Err(ValueError::expected("bytes", &other)),
        }
    }
}

impl Attribute for Decimal {
    type Scalar = Decimal;
    const KIND: AttrKind = AttrKind::Decimal;
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Owned(self.to_string()))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Text(t) => t
                .parse()
                .map_err(|e| ValueError::new(format!("bad decimal {t:?}: {e}"))),
            other => Err(ValueError::expected("a decimal", &other)),
        }
    }
}

impl Attribute for serde_json::Value {
    type Scalar = serde_json::Value;
    const KIND: AttrKind = AttrKind::Json;
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Owned(self.to_string()))
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Text(t) => {
                serde_json::from_str(&t).map_err(|e| ValueError::new(format!("bad JSON: {e}")))
            }
            other => Err(ValueError::expected("JSON text", &other)),
        }
    }
}

impl<T: Attribute> Attribute for Option<T> {
    type Scalar = T;
    const KIND: AttrKind = T::KIND;
    const NULLABLE: bool = true;
    const REFERENCES: Option<&'static str> = T::REFERENCES;
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A point in time, UTC, with microsecond precision.
///
/// ```
/// use mantissa_store::Timestamp;
/// let t = Timestamp::from_micros(1_700_000_000_000_000);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20Z");
/// assert!(Timestamp::now() > t);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time, truncated to microseconds.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as i64)
    }

    /// From microseconds since 1970-01-01T00:00:00Z.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since 1970-01-01T00:00:00Z.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// This time moved forward by `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_micros() as i64))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Parses RFC 3339 text, as written by `Display`.
    pub fn parse(text: &str) -> Result<Timestamp, ValueError> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| ValueError::new(format!("bad timestamp {text:?}: {e}")))?;
        Ok(Timestamp((t.unix_timestamp_nanos() / 1000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
            .map_err(|_| fmt::Error)?;
        let s = t
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl Attribute for Timestamp {
    type Scalar = Timestamp;
    const KIND: AttrKind = AttrKind::Timestamp;
    fn to_value(&self) -> Value<'_> {
        Value::Integer(self.0)
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        i64::from_value(value).map(Timestamp)
    }
}

/// A typed reference to another item in the same store: its id.
///
/// What happens to an item holding a `Ref` when the referenced item is
/// deleted is declared on the field: `#[item(on_delete = "cascade")]` deletes
/// it too, `"nullify"` clears the reference (the field must be an
/// `Option<Ref<_>>`), and `"refuse"`, the default, makes the delete fail.
pub struct Ref<T> {
    id: i64,
    _item: PhantomData<fn() -> T>,
}

impl<T> Ref<T> {
    /// A reference to the item with this id. Whether such an item exists is
    /// checked when the reference is stored or followed.
    pub const fn from_id(id: i64) -> Ref<T> {
        Ref {
            id,
            _item: PhantomData,
        }
    }

    /// The referenced item's id, unique within its type in this store and
    /// never reused.
    pub const fn id(self) -> i64 {
        self.id
    }
}

impl<T> Clone for Ref<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Ref<T> {}
impl<T> PartialEq for Ref<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl<T> Eq for Ref<T> {}
impl<T> PartialOrd for Ref<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ref<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}
impl<T> std::hash::Hash for Ref<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}
impl<T: Item> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", T::NAME, self.id)
    }
}
impl<T: Item> fmt::Display for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", T::NAME, self.id)
    }
}

impl<T: Item> Attribute for Ref<T> {
    type Scalar = Ref<T>;
    const KIND: AttrKind = AttrKind::Ref;
    const REFERENCES: Option<&'static str> = Some(T::NAME);
    fn to_value(&self) -> Value<'_> {
        Value::Integer(self.id)
    }
    fn from_value(value: Value<'static>) -> Result<Self, ValueError> {
        i64::from_value(value).map(Ref::from_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_text() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn decimals_stay_exact() {
        let d: Decimal = "0.1".parse().unwrap();
        let v = d.to_value().into_owned();
        assert_eq!(Decimal::from_value(v).unwrap().to_string(), "0.1");
    }

    #[test]
    fn wrong_shapes_are_named() {
        let e = bool::from_value(Value::Integer(7)).unwrap_err();
        assert_eq!(e.problem, "expected a bool (0 or 1), found an integer");
        let e = u8::from_value(Value::Integer(300)).unwrap_err();
        assert_eq!(e.problem, "300 does not fit in u8");
    }
}
