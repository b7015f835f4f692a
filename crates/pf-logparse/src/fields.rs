//! The `fields` object of a record, built without allocating per field.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
}

/// Ordered field list; later inserts of the same key replace earlier ones.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    items: Vec<(&'static str, Val<'a>)>,
}

impl Default for Fields<'_> {
    /// Room for a typical message's fields, so the list is allocated once per line.
    fn default() -> Self {
        Fields {
            items: Vec::with_capacity(16),
        }
    }
}

impl<'a> Fields<'a> {
    pub fn clear(&mut self) {
        self.items.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Val<'a>)> {
        self.items.iter().map(|(k, v)| (*k, v))
    }

    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.items.retain(|(k, _)| *k != key);
    }

    fn put(&mut self, key: &'static str, v: Val<'a>) {
        if let Some(slot) = self.items.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = v;
        } else {
            self.items.push((key, v));
        }
    }

    /// A text value.
    pub fn s(&mut self, key: &'static str, v: &'a str) {
        self.put(key, Val::Str(Cow::Borrowed(v)));
    }

    pub fn owned(&mut self, key: &'static str, v: String) {
        self.put(key, Val::Str(Cow::Owned(v)));
    }

    pub fn int(&mut self, key: &'static str, v: i64) {
        self.put(key, Val::Int(v));
    }

    /// A number written in the log (`25`, `0.52`, `-1`); kept as text if it is not one.
    pub fn num(&mut self, key: &'static str, text: &'a str) {
        if let Ok(i) = text.parse::<i64>() {
            self.put(key, Val::Int(i));
        } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            self.put(key, Val::Float(f));
        } else {
            self.s(key, text);
        }
    }
}
