//! Routes (`--routes FILE`, cli.md "Routes"): a name that stands for an ordered list of
//! connectors, tried by `fallback` (in order) or `balance` (the connector with the fewest
//! executions in flight first, by the power of two choices, then the others in order).
//!
//! ```json
//! { "routes": { "chat": { "connectors": ["azure-east", "openai-prod"], "strategy": "fallback" } } }
//! ```

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// How a route picks its connectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Strategy {
    /// In the order written.
    Fallback,
    /// Fewest in flight first (power of two choices), then the others in order.
    Balance,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Connector ids, at least one, each once.
    pub(crate) connectors: Vec<String>,
    /// Default `fallback`.
    #[serde(default = "fallback")]
    pub(crate) strategy: Strategy,
}

fn fallback() -> Strategy {
    Strategy::Fallback
}

/// The routes of a gateway by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RouteTable {
    routes: BTreeMap<String, Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    routes: BTreeMap<String, Route>,
}

impl RouteTable {
    /// Reads and checks a routes file against the served connector ids; the error names the
    /// file and the route.
    pub(crate) fn load(path: &Path, connectors: &BTreeSet<String>) -> Result<RouteTable, String> {
        let file = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{file}: cannot read the routes file: {e}"))?;
        let parsed: File = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{file}: expected {{\"routes\": {{NAME: {{\"connectors\": [ID, ...], \"strategy\": \"fallback\" | \"balance\"}}}}}} ({e})"
            )
        })?;
        for (name, route) in &parsed.routes {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "{file}: [routes.{name}]: a route name must be non-empty and without '/'"
                ));
            }
            if connectors.contains(name) {
                return Err(format!(
                    "{file}: [routes.{name}]: a connector has this id; a client token's grant could not tell them apart"
                ));
            }
            if route.connectors.is_empty() {
                return Err(format!(
                    "{file}: [routes.{name}.connectors]: at least one connector"
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, id) in route.connectors.iter().enumerate() {
                if !connectors.contains(id) {
                    return Err(format!(
                        "{file}: [routes.{name}.connectors.{i}]: no served connector has the id \"{id}\""
                    ));
                }
                if !seen.insert(id) {
                    return Err(format!(
                        "{file}: [routes.{name}.connectors.{i}]: \"{id}\" is listed twice"
                    ));
                }
            }
        }
        Ok(RouteTable {
            routes: parsed.routes,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

impl Route {
    /// The connectors in the order they are tried; `in_flight` gives a connector's executions
    /// in flight (balance), `draw` a random index below its argument.
    pub(crate) fn order(
        &self,
        in_flight: impl Fn(&str) -> usize,
        mut draw: impl FnMut(usize) -> usize,
    ) -> Vec<&str> {
        let mut order: Vec<&str> = self.connectors.iter().map(String::as_str).collect();
        if self.strategy == Strategy::Balance && order.len() > 1 {
            // Power of two choices: two distinct connectors at random, the less busy first.
            let a = draw(order.len());
            let b = (a + 1 + draw(order.len() - 1)) % order.len();
            let first = if in_flight(order[b]) < in_flight(order[a]) {
                b
            } else {
                a
            };
            let chosen = order.remove(first);
            order.insert(0, chosen);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn load(text: &str) -> Result<RouteTable, String> {
        let dir = std::env::temp_dir().join(format!("routes-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.json",
            text.len() * 7919 + text.as_bytes()[0] as usize
        ));
        std::fs::write(&path, text).unwrap();
        RouteTable::load(&path, &ids(&["a", "b", "c"]))
    }

    #[test]
    fn routes_are_checked_against_the_served_connectors() {
        let table = load(
            r#"{"routes":{"chat":{"connectors":["a","b"]},"spread":{"connectors":["b","c"],"strategy":"balance"}}}"#,
        )
        .unwrap();
        assert_eq!(table.get("chat").unwrap().strategy, Strategy::Fallback);
        assert_eq!(table.get("spread").unwrap().strategy, Strategy::Balance);
        assert_eq!(table.names().collect::<Vec<_>>(), ["chat", "spread"]);
        for (text, expected) in [
            (
                r#"{"routes":{"x":{"connectors":["a","z"]}}}"#,
                "[routes.x.connectors.1]: no served connector has the id \"z\"",
            ),
            (
                r#"{"routes":{"x":{"connectors":[]}}}"#,
                "[routes.x.connectors]: at least one connector",
            ),
            (
                r#"{"routes":{"x":{"connectors":["a","a"]}}}"#,
                "[routes.x.connectors.1]: \"a\" is listed twice",
            ),
            (
                r#"{"routes":{"a":{"connectors":["b"]}}}"#,
                "[routes.a]: a connector has this id",
            ),
            (
                r#"{"routes":{"x":{"connectors":["a"],"strategy":"random"}}}"#,
                "expected {\"routes\"",
            ),
            (r#"{"routs":{}}"#, "expected {\"routes\""),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn fallback_keeps_the_order_and_balance_puts_the_less_busy_of_two_first() {
        let route = |strategy| Route {
            connectors: vec!["a".into(), "b".into(), "c".into()],
            strategy,
        };
        let busy = |id: &str| match id {
            "a" => 5,
            "b" => 1,
            _ => 3,
        };
        assert_eq!(
            route(Strategy::Fallback).order(busy, |_| 0),
            ["a", "b", "c"]
        );
        // Draws a (0) and b (0 + 1): b is less busy.
        assert_eq!(route(Strategy::Balance).order(busy, |_| 0), ["b", "a", "c"]);
        // Draws c (2) and a ((2 + 1 + 0) % 3): c is less busy than a.
        let mut draws = [2, 0].into_iter();
        assert_eq!(
            route(Strategy::Balance).order(busy, |_| draws.next().unwrap()),
            ["c", "a", "b"]
        );
    }
}
