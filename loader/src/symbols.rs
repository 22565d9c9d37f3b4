//! Resolving a module's undefined symbols: against the kernel image object's
//! exports and the runtime symbol table percpu-bed provides.

use std::collections::BTreeMap;

use serde::Serialize;

/// A resolved symbol: its final value and whether it names percpu data (so
/// overflow errors and `inspect` can apply the arch's percpu rules).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedSymbol {
    pub value: u64,
    pub percpu: bool,
}

/// Anything that can resolve a symbol name.
pub trait SymbolResolver {
    fn resolve(&self, name: &str) -> Option<ResolvedSymbol>;
}

/// A plain name-to-value table (the runtime symbol table, or a loaded
/// object's exports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SymbolTable {
    map: BTreeMap<String, ResolvedSymbol>,
}

impl SymbolTable {
    pub fn new() -> Self {
        Self::default()
    }
    /// Define an ordinary symbol.
    pub fn define(&mut self, name: impl Into<String>, value: u64) -> &mut Self {
        self.map.insert(name.into(), ResolvedSymbol { value, percpu: false });
        self
    }
    /// Define a percpu symbol (its value is a percpu pointer).
    pub fn define_percpu(&mut self, name: impl Into<String>, value: u64) -> &mut Self {
        self.map.insert(name.into(), ResolvedSymbol { value, percpu: true });
        self
    }
    pub fn insert(&mut self, name: impl Into<String>, sym: ResolvedSymbol) {
        self.map.insert(name.into(), sym);
    }
    pub fn get(&self, name: &str) -> Option<ResolvedSymbol> {
        self.map.get(name).copied()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, ResolvedSymbol)> {
        self.map.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl SymbolResolver for SymbolTable {
    fn resolve(&self, name: &str) -> Option<ResolvedSymbol> {
        self.get(name)
    }
}

impl<F: Fn(&str) -> Option<ResolvedSymbol>> SymbolResolver for F {
    fn resolve(&self, name: &str) -> Option<ResolvedSymbol> {
        self(name)
    }
}
