//! The points mall on the running daemon: rewards bought over HTTP take
//! points and stock, a refused order says why, and `/v1/status` shows
//! the stock left, also after a restart.

use crate::common::*;

const CONFIG: &str = "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\n  order_reward:\n    reward: string\nhttp:\n  listen: 127.0.0.1:0\nrewards:\n  lamp: { points: 10, stock: 2 }\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n";

const RULES: &str = "rule \"pts\" on purchase then award points floor(event.amount)\n\
                     rule \"mall\" on order_reward then redeem reward event.reward\n";

fn order(id: &str, member: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"order_reward","member":"{member}","at":"2026-01-02T12:00:00Z","reward":"lamp"}}"#
    )
}

fn stock_left(addr: &str) -> serde_json::Value {
    let (_, b) = http(addr, "GET", "/v1/status", "");
    let v: serde_json::Value = serde_json::from_str(&b).expect("status");
    v["rewards"].clone()
}

#[test]
fn stock_shows_in_status_and_holds_across_a_restart() {
    let dir = project_with(CONFIG, RULES);
    {
        let mut d = start(dir.path());
        let body = format!(
            "[{},{},{}]",
            purchase("p1", "a", 25.0),
            purchase("p2", "b", 25.0),
            order("o1", "a")
        );
        assert_eq!(http(&d.addr, "POST", "/v1/events", &body).0, 202);
        assert_eq!(
            stock_left(&d.addr),
            serde_json::json!([{"reward": "lamp", "stock": 2, "gone": 1, "left": 1}])
        );
        assert_eq!(points(&d.addr, "a"), 15);
        // A clean stop (SIGTERM), so the restart below is a restart.
        d.stop();
    }
    let d = start(dir.path());
    let body = format!("[{},{}]", order("o2", "b"), order("o3", "a"));
    assert_eq!(http(&d.addr, "POST", "/v1/events", &body).0, 202);
    assert_eq!(
        stock_left(&d.addr),
        serde_json::json!([{"reward": "lamp", "stock": 2, "gone": 2, "left": 0}])
    );
    // `a` has points for another lamp, but the stock is gone.
    assert_eq!(points(&d.addr, "a"), 15);
    let sink = dir.path().join("out/effects.ndjson");
    wait_until(
        std::time::Duration::from_secs(10),
        "the refusal is delivered",
        || std::fs::read_to_string(&sink).is_ok_and(|e| e.contains(r#""reason":"out_of_stock""#)),
    );
}
