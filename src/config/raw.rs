//! The config file as written: serde structs with unknown keys rejected and spans kept, so that
//! validation can point at the line and column of every problem.
//!
//! Nothing here is checked beyond TOML types; `validate` turns these into the runtime types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Agent-wide settings; every key has a default.
    #[serde(default)]
    pub agent: Option<Spanned<RawAgent>>,
    /// One `[[chain]]` table per private integration.
    #[serde(default, rename = "chain")]
    pub chains: Vec<Spanned<RawChain>>,
    /// Publishing to CloudWatch; absent means off.
    pub cloudwatch: Option<Spanned<RawCloudWatch>>,
}

/// `[cloudwatch]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudWatch {
    pub mode: Option<Spanned<String>>,
    pub namespace: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub endpoint_url: Option<Spanned<String>>,
    pub storage_resolution: Option<Spanned<i64>>,
    pub flush_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, Spanned<String>>,
    pub emf_output: Option<Spanned<String>>,
    pub max_buffered_datums: Option<Spanned<i64>>,
}

/// `[agent]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Address of the `/metrics`, `/-/healthy` and `/-/ready` server.
    pub listen: Option<Spanned<String>>,
    /// Default round interval of every chain.
    pub interval: Option<Spanned<String>>,
    /// Default timeout of every probe.
    pub timeout: Option<Spanned<String>>,
    /// Global cap on probes in flight at once, across all chains.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Failed rounds in a row before a hop is considered down.
    pub down_after: Option<Spanned<i64>>,
    /// Passing rounds in a row before a down hop is considered up again.
    pub up_after: Option<Spanned<i64>>,
}

/// `[[chain]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChain {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub reuse_connections: Option<bool>,
    pub down_after: Option<Spanned<i64>>,
    pub up_after: Option<Spanned<i64>>,
    #[serde(default, rename = "hop")]
    pub hops: Vec<Spanned<RawHop>>,
}

/// `[[chain.hop]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHop {
    pub name: Spanned<String>,
    pub role: Option<Spanned<String>>,
    pub url: Spanned<String>,
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub expect_status: Option<Spanned<Vec<Spanned<StatusEntry>>>>,
    pub expect_body: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub max_body: Option<Spanned<String>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub health_url: Option<Spanned<String>>,
    pub expect_source: Option<Vec<Spanned<String>>>,
    pub expect_forwarded: Option<Vec<Spanned<String>>>,
    pub per_address: Option<bool>,
}

/// One entry of `expect_status`: `200` or `"2xx"`.
#[derive(Debug)]
pub enum StatusEntry {
    Code(i64),
    Class(String),
}

// Written by hand rather than `#[serde(untagged)]`, whose error ("data did not match any
// variant") would tell the user nothing.
impl<'de> Deserialize<'de> for StatusEntry {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StatusEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status code such as 200 or a class such as \"2xx\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusEntry, E> {
                Ok(StatusEntry::Code(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusEntry, E> {
                Ok(StatusEntry::Class(v.to_string()))
            }
        }
        de.deserialize_any(Visitor)
    }
}
