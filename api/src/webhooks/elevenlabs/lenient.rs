//! JSON read leniently, for payloads whose checks name the field that is wrong: a value of
//! another type than expected does not fail the whole body (as a derived `Deserialize` would),
//! it reads as absent or as [`Scalar::Other`], and the check that needs it refuses with a 422
//! naming its field.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// A leaf value: text, a number, nothing (missing or `null`), or something else.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Scalar<'a> {
    #[default]
    Null,
    Text(Cow<'a, str>),
    Number(Number),
    /// A boolean, a list or an object.
    Other,
}

impl Scalar<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Number(number) => number.as_f64(),
            _ => None,
        }
    }
}

/// An object's fields (`Some`), or `None` for any value that is not an object (missing, `null`,
/// a list, text, …): the checks treat all of those alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub Option<T>);

impl<T: Default> Object<T> {
    /// The fields, all absent when the value is not an object.
    pub fn fields(self) -> T {
        self.0.unwrap_or_default()
    }
}

/// A list's items (`Some`), or `None` for any value that is not a list.
#[derive(Debug, Clone, PartialEq)]
pub struct List<T>(pub Option<Vec<T>>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Object(None)
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List(None)
    }
}

/// How a lenient type takes each kind of JSON value: `null` reads as its `Default`, and a
/// kind it does not take as [`Lenient::other`], its contents skipped.
trait Lenient<'de>: Default {
    /// A value of a kind this type does not take.
    fn other() -> Self {
        Self::default()
    }
    fn from_text(_text: Cow<'de, str>) -> Self {
        Self::other()
    }
    fn from_number(_number: Number) -> Self {
        Self::other()
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::other())
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::other())
    }
}

impl<'de: 'a, 'a> Lenient<'de> for Scalar<'a> {
    fn other() -> Self {
        Scalar::Other
    }
    fn from_text(text: Cow<'de, str>) -> Self {
        Scalar::Text(text)
    }
    fn from_number(number: Number) -> Self {
        Scalar::Number(number)
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for Object<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|fields| Object(Some(fields)))
    }
}

impl<'de, T: Deserialize<'de>> Lenient<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List(Some(items)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

/// Reads any JSON value into a [`Lenient`] type.
struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: Error>(self, _: bool) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        Ok(T::from_number(v.into()))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_number(v.into()))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        // JSON has no NaN or infinity, so a parsed float always makes a number.
        Ok(Number::from_f64(v).map_or_else(T::other, T::from_number))
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from_text(Cow::Owned(v.to_string())))
    }
    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<T, E> {
        Ok(T::from_text(Cow::Borrowed(v)))
    }
    fn visit_string<E: Error>(self, v: String) -> Result<T, E> {
        Ok(T::from_text(Cow::Owned(v)))
    }
    fn visit_unit<E: Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_none<E: Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}
