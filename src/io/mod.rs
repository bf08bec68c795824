//! Events coming in: JSON events validated against the schema (`event`),
//! NDJSON files ingested into the store (`ingest`), CSV exports turned into
//! events (`import`).

pub mod event;
pub mod import;
pub mod ingest;
