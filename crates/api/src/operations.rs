//! The operations of the AWS services this control plane answers for, as botocore models them
//! (`crates/api/operations/<signing name>.txt`, written by `generate.py` there), so a request
//! for an operation this server does not implement is answered with its name
//! (UnknownOperationException, 501) rather than a bare "no such path". REST-JSON operations
//! are found by method and path, Query actions (all `POST /`) by name.

use std::sync::LazyLock;

use axum::http::Method;

/// Each service's table: signing name and the generated `METHOD URI Operation` lines.
const TABLES: &[(&str, &str)] = &[
    ("iot", include_str!("../operations/iot.txt")),
    ("iotdata", include_str!("../operations/iotdata.txt")),
    (
        "iotanalytics",
        include_str!("../operations/iotanalytics.txt"),
    ),
    ("iotevents", include_str!("../operations/iotevents.txt")),
    ("lambda", include_str!("../operations/lambda.txt")),
    (
        "ioteventsdata",
        include_str!("../operations/ioteventsdata.txt"),
    ),
    ("sns", include_str!("../operations/sns.txt")),
];

/// One segment of a request URI template.
#[derive(Debug, PartialEq)]
enum Segment {
    Literal(&'static str),
    /// `{label}`: one segment.
    Label,
    /// `{label+}`: one or more segments, to the end.
    Greedy,
}

/// One operation's route.
#[derive(Debug)]
struct Route {
    service: &'static str,
    method: &'static str,
    segments: Vec<Segment>,
    operation: &'static str,
}

impl Route {
    /// How many literal segments match `path`'s segments, or `None` if it does not match.
    fn score(&self, path: &[&str]) -> Option<usize> {
        let mut literals = 0;
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Greedy => return (path.len() > i).then_some(literals),
                Segment::Label => {
                    if path.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                }
                Segment::Literal(text) => {
                    if path.get(i) != Some(text) {
                        return None;
                    }
                    literals += 1;
                }
            }
        }
        (path.len() == self.segments.len()).then_some(literals)
    }
}

fn segments(path: &str) -> Vec<&str> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let mut routes = Vec::new();
    for (service, table) in TABLES {
        for line in table.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split_whitespace();
            let (Some(method), Some(uri), Some(operation)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = uri.split_once('?').map_or(uri, |(p, _)| p);
            let segments = segments(path)
                .into_iter()
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(label) if label.ends_with('+') => Segment::Greedy,
                        Some(_) => Segment::Label,
                        None => Segment::Literal(s),
                    },
                )
                .collect();
            routes.push(Route {
                service,
                method,
                segments,
                operation,
            });
        }
    }
    routes
});

/// The AWS operation of `service` (signing name) that `method` and the raw `path` address, if
/// any: the most specific route (most literal segments) wins.
pub fn operation_name(service: &str, method: &Method, path: &str) -> Option<&'static str> {
    let path = segments(path);
    ROUTES
        .iter()
        .filter(|r| r.service == service && r.method == method.as_str())
        .filter_map(|r| r.score(&path).map(|score| (score, r.operation)))
        .max_by_key(|(score, _)| *score)
        .map(|(_, operation)| operation)
}

/// Whether `service` (signing name) has an operation named `name` in AWS's model.
pub fn is_operation(service: &str, name: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.service == service && r.operation == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_operations_from_method_and_path() {
        let name = |service, method: Method, path| operation_name(service, &method, path);
        assert_eq!(name("iot", Method::GET, "/jobs"), Some("ListJobs"));
        assert_eq!(name("iot", Method::PUT, "/jobs/j1"), Some("CreateJob"));
        assert_eq!(
            name("iot", Method::GET, "/things/t1"),
            Some("DescribeThing")
        );
        assert_eq!(
            name("iot", Method::POST, "/destinations"),
            Some("CreateTopicRuleDestination")
        );
        assert_eq!(
            name("iot", Method::GET, "/confirmdestination/a/b/c"),
            Some("ConfirmTopicRuleDestination"),
            "a greedy label takes the rest"
        );
        assert_eq!(
            name("iotanalytics", Method::GET, "/channels"),
            Some("ListChannels")
        );
        assert_eq!(
            name(
                "lambda",
                Method::POST,
                "/2015-03-31/functions/f1/invocations"
            ),
            Some("Invoke")
        );
        assert_eq!(
            name("lambda", Method::GET, "/2015-03-31/functions/f1/aliases"),
            Some("ListAliases")
        );
        assert_eq!(name("iot", Method::GET, "/no/such/operation"), None);
        assert_eq!(name("iot", Method::DELETE, "/jobs"), None);
        assert_eq!(name("nosuch", Method::GET, "/jobs"), None);
    }

    #[test]
    fn every_table_line_parses() {
        for (service, table) in TABLES {
            let lines = table.lines().filter(|l| !l.starts_with('#')).count();
            let parsed = ROUTES.iter().filter(|r| r.service == *service).count();
            assert_eq!(lines, parsed, "{service}");
        }
    }
}
