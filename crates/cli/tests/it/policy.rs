//! `cascade evaluate --policy`: off-policy evaluation on impressions imported into a project.

use crate::{cascade, ok};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A logger with k = 3 and epsilon-greedy exploration of one slot from a tail of 4: ranks 0
/// and 1 always shown, one of ranks 2..6 with probability 1/4. Each rank has a click rate, so the
/// greedy policy (ranks 0..3) truly earns 0.3 + 0.2 + 0.5 = 1 click per request, the logger
/// 0.5 + (0.5 + 0.1 + 0.05 + 0.4) / 4 = 0.7625.
#[test]
fn ips_of_the_logged_policy_is_the_served_mean_and_greedy_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    // Let clicks name the response they came from.
    let path = dir.path().join("cascade.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let click =
        "[events.click]\nentities = [\"user\", \"item\"]\nfields = { position = \"int?\", surface = \"string?\" }";
    assert!(config.contains(click));
    let with_request_id = click.replace("surface = \"string?\"", "surface = \"string?\", request_id = \"string?\"");
    std::fs::write(&path, config.replace(click, &with_request_id)).unwrap();

    let rates = [0.3, 0.2, 0.5, 0.1, 0.05, 0.4];
    let requests = 1_500;
    let start: i64 = 1_700_000_000_000;
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut impressions, mut clicks) = (Vec::new(), Vec::new());
    for r in 0..requests {
        let (request_id, ts) = (format!("req-{r}"), start + r * 60_000);
        // Users come back every 40 minutes, within the 1 h window: the latest impression wins.
        let user = format!("u{}", r % 40);
        let explored = 2 + rng.random_range(0..4usize);
        for (position, rank) in [0, 1, explored].into_iter().enumerate() {
            let item = format!("i{rank}");
            impressions.push(json!({
                "type": "impression", "ts": ts, "user": user, "item": item,
                "fields": {
                    "request_id": request_id, "position": position, "score": 1.0 / (1.0 + rank as f64),
                    "propensity": if rank < 2 { 1.0 } else { 0.25 }, "explored": rank >= 2,
                    "pipeline": "default", "ranked_by": "heavy", "greedy_rank": rank,
                    "slots": 1, "tail": 4, "k": 3,
                },
            }));
            if rng.random::<f64>() < rates[rank] {
                // Half the clients send the request id; the rest are joined by the window.
                let fields = if r % 2 == 0 { json!({"request_id": request_id}) } else { json!({}) };
                clicks.push(json!({"type": "click", "ts": ts + 5_000, "user": user, "item": item, "fields": fields}));
            }
        }
    }
    let planted = clicks.len();
    // Not attributable: a click before any impression of its pair, one long after the last.
    clicks.push(json!({"type": "click", "ts": start - 1_000, "user": "u0", "item": "i0"}));
    let last_user = format!("u{}", (requests - 1) % 40);
    clicks.push(json!({"type": "click", "ts": start + requests * 60_000 + 7_200_000, "user": last_user, "item": "i0"}));
    let lines = |events: &[Value]| events.iter().map(|e| format!("{e}\n")).collect::<String>();
    std::fs::write(dir.path().join("clicks.ndjson"), lines(&clicks)).unwrap();
    std::fs::write(dir.path().join("impressions.ndjson"), lines(&impressions)).unwrap();

    ok(dir.path(), &["import", "ndjson", "clicks.ndjson"]);
    let out = cascade(dir.path(), &["evaluate", "--policy", "greedy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no impressions in the log"), "{err}");
    ok(dir.path(), &["import", "ndjson", "impressions.ndjson"]);

    let evaluate = |target: &str| -> Value {
        serde_json::from_str(&ok(dir.path(), &["evaluate", "--policy", target, "--json"])).unwrap()
    };
    let logged = evaluate("logged");
    assert_eq!((logged["requests"].as_i64(), logged["impressions"].as_i64()), (Some(requests), Some(3 * requests)));
    let by_id = logged["attributed_by_request_id"].as_u64().unwrap() as usize;
    let by_window = logged["attributed_by_window"].as_u64().unwrap() as usize;
    assert_eq!((by_id + by_window, logged["unattributed"].as_u64()), (planted, Some(2)), "{logged}");
    assert!(by_id > planted / 3 && by_window > planted / 3, "{logged}");
    let observed = planted as f64 / requests as f64;
    let ips = logged["ips"]["value"].as_f64().unwrap();
    assert!((ips - observed).abs() < 1e-9, "logged IPS {ips} vs the observed mean {observed}");
    assert_eq!(logged["logged"]["value"].as_f64(), Some(ips));
    assert_eq!(logged["ips"]["effective_sample_size"].as_f64(), Some(3.0 * requests as f64));

    let greedy = evaluate("greedy");
    for estimator in ["ips", "snips"] {
        let (value, se) =
            (greedy[estimator]["value"].as_f64().unwrap(), greedy[estimator]["std_error"].as_f64().unwrap());
        assert!((value - 1.0).abs() <= 3.0 * se, "greedy {estimator}: {value} ± {se} vs the planted 1.0");
        assert!(se < 0.1, "{greedy}");
        let ci = &greedy[estimator]["ci95"];
        assert!(ci[0].as_f64().unwrap() < value && value < ci[1].as_f64().unwrap());
    }
    assert_eq!(greedy["unsupported_share"].as_f64(), Some(0.0));
    assert_eq!(greedy["policy"], "greedy");

    // The human table names the estimators; a pipeline the log never served is an error.
    let table = ok(dir.path(), &["evaluate", "--policy", "epsilon:0.67"]);
    assert!(
        table.contains("target IPS") && table.contains("target SNIPS") && table.contains("95% interval"),
        "{table}"
    );
    let out = cascade(dir.path(), &["evaluate", "--policy", "greedy", "--pipeline", "search"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no impressions of pipeline `search`"));
}
