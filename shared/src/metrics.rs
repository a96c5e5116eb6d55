//! CloudWatch Embedded Metric Format: metrics written to stdout as one JSON line per invocation, which CloudWatch
//! Logs turns into metrics. No API call, no added latency, in the way of Powertools for AWS Lambda.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// The variable every function reads for its metrics namespace (set once, in the template's globals).
pub const NAMESPACE_VARIABLE: &str = "POWERTOOLS_METRICS_NAMESPACE";

/// Metrics of one function, accumulated during an invocation and written by [`Metrics::flush`].
pub struct Metrics {
    namespace: String,
    service: String,
    values: Mutex<BTreeMap<&'static str, (Unit, f64)>>,
}

impl Metrics {
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Namespace from `POWERTOOLS_METRICS_NAMESPACE` (the Powertools convention), default `EventWorkers`.
    pub fn from_env(service: &str) -> Self {
        let namespace = std::env::var(NAMESPACE_VARIABLE).ok().filter(|n| !n.is_empty());
        Self::new(namespace.unwrap_or_else(|| "EventWorkers".into()), service)
    }

    pub fn add(&self, name: &'static str, unit: Unit, value: f64) {
        let mut values = self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        values.entry(name).or_insert((unit, 0.0)).1 += value;
    }

    pub fn count(&self, name: &'static str, n: usize) {
        self.add(name, Unit::Count, n as f64);
    }

    /// The EMF document of what was added since the last flush, and resets; `None` when nothing was added.
    pub fn take_document(&self) -> Option<Value> {
        let values = std::mem::take(&mut *self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        if values.is_empty() {
            return None;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let definitions: Vec<Value> = values
            .iter()
            .map(|(name, (unit, _))| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": [["service"]], "Metrics": definitions}]
            }),
        );
        document.insert("service".into(), json!(self.service));
        for (name, (_, value)) in values {
            document.insert(name.into(), json!(value));
        }
        Some(Value::Object(document))
    }

    /// Writes the EMF line to stdout.
    pub fn flush(&self) {
        if let Some(document) = self.take_document() {
            println!("{document}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_and_renders_embedded_metric_format() {
        let metrics = Metrics::new("EventWorkers", "cognito-attribute-sync");
        metrics.count("UsersUpdated", 2);
        metrics.count("UsersUpdated", 1);
        metrics.add("Latency", Unit::Milliseconds, 12.5);
        let doc = metrics.take_document().unwrap();
        assert_eq!(doc["service"], "cognito-attribute-sync");
        assert_eq!(doc["UsersUpdated"], 3.0);
        assert_eq!(doc["Latency"], 12.5);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "EventWorkers");
        assert_eq!(directive["Dimensions"], json!([["service"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name":"Latency","Unit":"Milliseconds"},{"Name":"UsersUpdated","Unit":"Count"}])
        );
        assert!(doc["_aws"]["Timestamp"].as_u64().unwrap() > 0);
        assert!(metrics.take_document().is_none(), "flushed metrics are reset");
    }
}
