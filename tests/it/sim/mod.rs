//! Simulation: the CDNOW history replayed against an independent
//! computation, and `explain`.

mod cdnow;
mod explain;
mod prediction;
mod uplift;
