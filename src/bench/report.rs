//! The results: one row per scenario, as an aligned table or as JSON.

use super::stats::Summary;
use serde::Serialize;

/// One kind of failure and how often it happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorKind {
    pub kind: String,
    pub count: u64,
    /// The first occurrence's detail (status line, body excerpt or transport error).
    pub example: String,
}

/// The outcome of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub concurrency: usize,
    pub connections: String,
    /// Iterations finished, successful or not (see `http_requests_per_iteration`).
    pub requests: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Successful iterations per second of wall time.
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub http_requests_per_iteration: u32,
    pub error_kinds: Vec<ErrorKind>,
    /// Set when the scenario could not start (nothing was measured).
    pub setup_error: Option<String>,
}

impl ScenarioReport {
    /// A scenario that could not start.
    pub fn not_run(
        scenario: &str,
        concurrency: usize,
        connections: &str,
        http_requests_per_iteration: u32,
        reason: String,
    ) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.to_string(),
            concurrency,
            connections: connections.to_string(),
            requests: 0,
            errors: 0,
            elapsed_s: 0.0,
            requests_per_s: 0.0,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            max_ms: None,
            mean_ms: None,
            http_requests_per_iteration,
            error_kinds: Vec::new(),
            setup_error: Some(reason),
        }
    }

    pub fn set_latencies(&mut self, summary: Option<Summary>) {
        self.p50_ms = summary.map(|s| s.p50_ms);
        self.p90_ms = summary.map(|s| s.p90_ms);
        self.p99_ms = summary.map(|s| s.p99_ms);
        self.max_ms = summary.map(|s| s.max_ms);
        self.mean_ms = summary.map(|s| s.mean_ms);
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// The aligned table, followed by one line per kind of error and per scenario that
/// could not start.
pub fn table(reports: &[ScenarioReport]) -> String {
    let header = [
        "scenario", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
    ];
    let rows: Vec<[String; 8]> = reports
        .iter()
        .map(|r| {
            if r.setup_error.is_some() {
                return [
                    r.scenario.clone(),
                    "-".into(),
                    "-".into(),
                    "not run".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ];
            }
            [
                r.scenario.clone(),
                r.requests.to_string(),
                r.errors.to_string(),
                format!("{:.1}", r.requests_per_s),
                ms(r.p50_ms),
                ms(r.p90_ms),
                ms(r.p99_ms),
                ms(r.max_ms),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("  {cell:>w$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(str::to_string));
    for row in &rows {
        out.push_str(&line(row));
    }
    for r in reports {
        if let Some(reason) = &r.setup_error {
            out.push_str(&format!("{}: not run: {reason}\n", r.scenario));
        }
        for e in &r.error_kinds {
            out.push_str(&format!(
                "{}: {} x {} (first: {})\n",
                r.scenario, e.count, e.kind, e.example
            ));
            if e.kind.starts_with("HTTP 429") {
                out.push_str(&format!(
                    "{}: hint: the server's per-IP rate limit answered; raise [rate_limits] \
                     in the server's config to measure (see docs/performance.md)\n",
                    r.scenario
                ));
            }
        }
    }
    out
}

/// The reports as a JSON array of objects.
pub fn json(reports: &[ScenarioReport]) -> String {
    serde_json::to_string_pretty(reports).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ScenarioReport> {
        let mut ok = ScenarioReport::not_run("discovery", 16, "keep-alive", 1, String::new());
        ok.setup_error = None;
        ok.requests = 120_345;
        ok.errors = 2;
        ok.elapsed_s = 10.0;
        ok.requests_per_s = 12_034.3;
        ok.set_latencies(Some(Summary {
            p50_ms: 1.234,
            p90_ms: 2.5,
            p99_ms: 9.0,
            max_ms: 31.25,
            mean_ms: 1.5,
        }));
        ok.error_kinds.push(ErrorKind {
            kind: "HTTP 503".into(),
            count: 2,
            example: "busy".into(),
        });
        let missing =
            ScenarioReport::not_run("account-rewards", 16, "keep-alive", 1, "HTTP 404".into());
        vec![ok, missing]
    }

    #[test]
    fn table_is_aligned_and_lists_errors() {
        let t = table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("scenario"));
        // Every row ends at the same column as the header.
        assert_eq!(lines[0].len(), lines[1].len());
        assert_eq!(lines[0].len(), lines[2].len());
        assert!(lines[1].contains("120345") && lines[1].contains("12034.3"));
        assert!(lines[1].contains("1.23") && lines[1].ends_with("31.25"));
        assert!(lines[2].contains("not run"));
        assert!(t.contains("discovery: 2 x HTTP 503 (first: busy)"));
        assert!(t.contains("account-rewards: not run: HTTP 404"));
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).expect("json");
        let rows = v.as_array().expect("array");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["scenario"], "discovery");
        assert_eq!(rows[0]["p99_ms"], 9.0);
        assert_eq!(rows[1]["p99_ms"], serde_json::Value::Null);
        assert_eq!(rows[1]["setup_error"], "HTTP 404");
    }
}
