//! The value in a member, event or attribute slot: what the compiled
//! program computes with, the store keeps and plugins receive.

use rust_decimal::Decimal;
use std::sync::Arc;

/// A value in a member, event or attribute slot.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    /// Decimals and money: exact.
    Dec(Decimal),
    Str(Arc<str>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Seconds.
    Duration(i64),
    /// Ordinal in the config's tier list.
    Tier(u8),
    /// Stands for the member being evaluated, as a plugin argument.
    Member,
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) | Value::Duration(i) => Some(i),
            Value::Date(d) => Some(d as i64),
            Value::Tier(t) => Some(t as i64),
            _ => None,
        }
    }
    pub fn dec(&self) -> Option<Decimal> {
        match *self {
            Value::Dec(d) => Some(d),
            Value::Int(i) => Some(Decimal::from(i)),
            _ => None,
        }
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}
