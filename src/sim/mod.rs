//! Running rules without touching production: replay a history with a
//! simulated clock (`replay`), measure uplift against holdouts
//! (`backtest`), run rule test cases (`testcase`), say why a rule did or did
//! not fire for a member (`explain`).

pub mod backtest;
pub mod explain;
pub mod holdout;
pub mod replay;
pub mod testcase;
