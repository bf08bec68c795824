//! Repurchase prediction on the running daemon: `POST /v1/fit` fits now
//! (422 with the reason when it cannot), `/v1/status` shows the fit, and
//! members show their predictions.

use crate::common::*;

#[test]
fn the_daemon_fits_on_request_and_shows_predictions() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    let (code, body) = http(&d.addr, "POST", "/v1/fit", "");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("no member has a purchase"), "{body}");
    // Forty members, buying every 3 to 12 days for a while, some stopping;
    // posted in time order (the dedup window refuses what is far older
    // than the newest event).
    // The daemon counts histories to today: the history ends near it.
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 86_400;
    let start = today as i32 - 260;
    let mut dated = Vec::new();
    for m in 0..40 {
        let (gap, stop) = (3 + m % 10, 40 + (m * 7) % 200);
        let mut day = m % 5;
        while day < stop {
            let at = nudge::base::time::day_string(start + day);
            dated.push((day, format!(
                r#"{{"id":"e{m}-{day}","type":"purchase","member":"m{m:02}","at":"{at}T12:00:00Z","amount":{}}}"#,
                10 + m
            )));
            day += gap;
        }
    }
    dated.sort();
    let events: Vec<String> = dated.into_iter().map(|(_, e)| e).collect();
    for chunk in events.chunks(500) {
        let (code, body) = http(
            &d.addr,
            "POST",
            "/v1/events",
            &format!("[{}]", chunk.join(",")),
        );
        assert_eq!(code, 202, "{body}");
    }
    let (code, body) = http(&d.addr, "POST", "/v1/fit", "");
    assert_eq!(code, 200, "{body}");
    let fit: serde_json::Value = serde_json::from_str(&body).expect("fit");
    assert_eq!(fit["members"], 40);
    assert!(fit["bgnbd"]["r"].as_f64().is_some_and(|r| r > 0.0), "{fit}");
    let (_, status) = http(&d.addr, "GET", "/v1/status", "");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status");
    // As kept (JSON numbers read back may differ in the last digit).
    assert_eq!(status["model"]["members"], 40);
    let (kept, fitted) = (
        status["model"]["bgnbd"]["r"].as_f64().expect("r"),
        fit["bgnbd"]["r"].as_f64().expect("r"),
    );
    assert!((kept - fitted).abs() <= 1e-12 * fitted, "{kept} {fitted}");
    let m = member_json(&d.addr, "m03");
    let p = m["predictions"]["p_alive"].as_f64().expect("p_alive");
    assert!((0.0..=1.0).contains(&p), "{m}");
    assert!(
        (m["predictions"]["churn_risk"].as_f64().expect("risk") - (1.0 - p)).abs() < 1e-5,
        "{m}"
    );
}
