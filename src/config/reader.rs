//! The error-collecting reader every part of the configuration reads its keys through, so that
//! one start-up reports every bad variable.

use std::collections::HashMap;

/// Reads variables from one map and collects a line for each bad one instead of stopping.
pub(super) struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(vars: &'a HashMap<String, String>) -> Self {
        Reader { vars, errors: Vec::new() }
    }

    /// Every error collected so far, in the order the keys were read.
    pub(super) fn into_errors(self) -> Vec<String> {
        self.errors
    }

    /// Records one bad variable (the message names it).
    pub(super) fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    /// The trimmed value; `None` when unset or blank.
    pub(super) fn raw(&self, key: &str) -> Option<&'a str> {
        self.vars.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// Whether the variable is set at all, even to a blank value.
    pub(super) fn is_set(&self, key: &str) -> bool {
        self.vars.contains_key(key)
    }

    pub(super) fn parse<T: std::str::FromStr>(&mut self, key: &str, default: T, what: &str) -> T {
        match self.raw(key) {
            None => default,
            Some(v) => match v.parse::<T>() {
                Ok(x) => x,
                Err(_) => {
                    self.errors.push(format!("{key}={v:?} is not {what}"));
                    default
                }
            },
        }
    }

    pub(super) fn ranged(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let v = self.parse::<u64>(key, default, "a non-negative integer");
        if v < min || v > max {
            self.errors.push(format!("{key}={v} is out of range ({min}..={max})"));
            return default;
        }
        v
    }

    /// A switch: `0`/`false` (or unset: `default`) and `1`/`true`; anything else is an error.
    pub(super) fn flag(&mut self, key: &str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                self.errors.push(format!("{key}={other:?} must be 0 or 1"));
                default
            }
        }
    }

    /// A comma list, items trimmed, empty items dropped.
    pub(super) fn list(&self, key: &str) -> Vec<String> {
        self.raw(key)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}
