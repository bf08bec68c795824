//! The rule language: diagnostics (data files with expected output),
//! evaluation cases, the formatter, and properties of the parser.

mod diagnostics;
mod eval;
mod fmt;
mod props;
