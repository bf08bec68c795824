//! What of a project needs every member in one partition of the data
//! folder (`storage.partitions`): what partitions do not share yet (One
//! ID; budgets, stock, relays and fits are shared). The engine refuses
//! such a project on a folder of partitions; the loader warns of it when
//! the config asks for partitions (W406).

use crate::config::Schema;

/// What of a project needs every member in one partition, in words: one
/// line each (empty: the project runs on any number of partitions).
pub fn crossing(schema: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    if !schema.id_kinds.is_empty() {
        out.push("the config's `ids` (One ID): an event named by an identifier is looked up in every member before it can be routed".to_string());
    }
    out
}
