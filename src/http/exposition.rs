//! The metrics in the format the scraper asks for: OpenMetrics when its `Accept` names it
//! (Prometheus does), else the Prometheus text format 0.0.4 (`curl`, `promtool check
//! metrics`, older scrapers).

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.to_ascii_lowercase().contains("application/openmetrics-text"))
}

/// OpenMetrics text as the Prometheus text format: counters' `# HELP`/`# TYPE` name their
/// `_total` series, `info` is a gauge named `_info`, `unknown` is `untyped`, and there is no
/// `# UNIT` or `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let Some((kind, rest)) = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
        else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
        // The family's type: on this line, or the next for a HELP line.
        let family_type = if kind == "TYPE" {
            text
        } else {
            lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("# TYPE "))
                .and_then(|r| r.strip_prefix(name))
                .and_then(|r| r.strip_prefix(' '))
                .unwrap_or("")
        };
        let (name, prom_type) = match family_type {
            "counter" => (format!("{name}_total"), "counter"),
            "info" => (format!("{name}_info"), "gauge"),
            "unknown" => (name.to_string(), "untyped"),
            t => (name.to_string(), t),
        };
        let text = if kind == "TYPE" { prom_type } else { text };
        out.push_str(&format!("# {kind} {name} {text}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_name_their_total_series_and_eof_goes() {
        let om = "# HELP palisade_signing_requests Signing requests.\n\
                  # TYPE palisade_signing_requests counter\n\
                  palisade_signing_requests_total{type=\"ATTESTATION\"} 3\n\
                  # HELP palisade_ready 1 while ready.\n\
                  # TYPE palisade_ready gauge\n\
                  palisade_ready 1\n\
                  # HELP x_seconds Latency.\n\
                  # TYPE x_seconds histogram\n\
                  # UNIT x_seconds seconds\n\
                  x_seconds_bucket{le=\"+Inf\"} 1\n\
                  # EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP palisade_signing_requests_total Signing requests.\n\
             # TYPE palisade_signing_requests_total counter\n\
             palisade_signing_requests_total{type=\"ATTESTATION\"} 3\n\
             # HELP palisade_ready 1 while ready.\n\
             # TYPE palisade_ready gauge\n\
             palisade_ready 1\n\
             # HELP x_seconds Latency.\n\
             # TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }

    #[test]
    fn the_scraper_chooses() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
