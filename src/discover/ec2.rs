//! EC2's Query API, spoken directly.
//!
//! Why not `aws-sdk-ec2`: that crate is generated for ~700 operations and takes seven minutes
//! of a cold two-core build on its own (`cargo build --timings`, 2026-11-30: 420 s with no
//! other crate compiling; 622 s beside the other SDK crates), more than the rest of hopwatch
//! together, for the few `Describe*` calls discovery makes. The call still goes through the
//! SDK's own machinery, in [`crate::aws::call`] (shared with CloudWatch Logs): the HTTP
//! client, retry (standard mode), timeouts and credentials of the loaded `SdkConfig`, and
//! SigV4 from `aws-sigv4`. What is EC2's is here: the form body and reading the XML answer.
//!
//! The protocol: a `POST` of `Action=…&Version=2016-11-15&…` (form-encoded) to
//! `https://ec2.REGION.amazonaws.com/`; lists come back as `<xSet><item>…</item></xSet>`,
//! pages continue with `NextToken`, errors as `<Response><Errors><Error><Code>`.
//! Source: docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html,
//! …/query-api-troubleshooting.html, …/errors-overview.html.

use std::fmt;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::aws::call::{self, CallError, Client, Request, ServiceError};

/// The Query API version every call names.
const VERSION: &str = "2016-11-15";

/// An EC2 client made from the loaded SDK configuration.
#[derive(Clone)]
pub struct Ec2 {
    client: Client,
}

impl fmt::Debug for Ec2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2")
            .field("endpoint", &self.client.endpoint())
            .field("region", &self.client.region())
            .finish_non_exhaustive()
    }
}

impl Ec2 {
    /// The client for `sdk`'s region, at `endpoint_url` when one is given (a test server, a VPC
    /// interface endpoint), else the region's public endpoint
    /// (docs.aws.amazon.com/general/latest/gr/ec2-service.html).
    pub fn new(sdk: &SdkConfig, region: &str, endpoint_url: Option<&str>) -> Ec2 {
        let endpoint = call::endpoint("ec2", region, endpoint_url);
        // No throttling codes: what EC2 retries stays what it was before the call was shared
        // (connection errors, timeouts, 500/502/503/504).
        Ec2 {
            client: Client::new(sdk, "ec2", region, endpoint),
        }
    }

    /// One call: `action` with `params`, the answer's root element. EC2 answers
    /// `RequestLimitExceeded` with a 503 (docs.aws.amazon.com/AWSEC2/latest/APIReference/
    /// throttling.html); the caller's budget decides what to retry.
    pub async fn call(&self, action: &str, params: &[(String, String)]) -> Result<Node, CallError> {
        let request = Request {
            operation: action.to_string(),
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            )],
            body: form(action, params),
        };
        self.client.call(request, read_answer).await
    }

    /// One page of a listing: the `item`s of the answer's `list` element and the next
    /// page's `NextToken`, if any.
    pub async fn page(
        &self,
        action: &str,
        params: &[(String, String)],
        list: &str,
        token: Option<String>,
    ) -> Result<(Vec<Node>, Option<String>), CallError> {
        let mut params = params.to_vec();
        if let Some(t) = token {
            params.push(("NextToken".to_string(), t));
        }
        let mut root = self.call(action, &params).await?;
        let next = root
            .text("nextToken")
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let items = root
            .children
            .iter_mut()
            .find(|c| c.name == list)
            .map(|set| std::mem::take(&mut set.children))
            .unwrap_or_default();
        Ok((items, next))
    }
}

/// The form body of a call (built apart: the serializer is not `Send`, so it must not live
/// across an await).
fn form(action: &str, params: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action);
    form.append_pair("Version", VERSION);
    for (k, v) in params {
        form.append_pair(k, v);
    }
    form.finish()
}

/// The query parameters that name a list: `Name.1=a&Name.2=b`.
pub fn list_params(name: &str, values: &[String]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{name}.{}", i + 1), v.clone()))
        .collect()
}

/// A filter: `Filter.N.Name=name&Filter.N.Value.M=…`.
pub fn filter_params(n: usize, name: &str, values: &[String]) -> Vec<(String, String)> {
    let mut out = vec![(format!("Filter.{n}.Name"), name.to_string())];
    out.extend(list_params(&format!("Filter.{n}.Value"), values));
    out
}

/// The root element of a successful answer; for a failed one, the code and message of
/// `<Response><Errors><Error>`.
fn read_answer(response: &HttpResponse) -> Result<Node, ServiceError> {
    let status = response.status().as_u16();
    let bytes = response.body().bytes().unwrap_or_default();
    let text = String::from_utf8_lossy(bytes);
    let parsed = parse(&text);
    if response.status().is_success() {
        return parsed.map_err(|message| ServiceError {
            status,
            code: None,
            message: format!("unreadable answer: {message}"),
        });
    }
    let error = parsed.ok().and_then(|root| {
        let error = root.child("Errors")?.child("Error")?;
        Some(ServiceError {
            status,
            code: error.text("Code").map(str::to_string),
            message: error.text("Message").unwrap_or_default().to_string(),
        })
    });
    Err(error.unwrap_or_else(|| ServiceError {
        status,
        code: None,
        message: format!("HTTP {status}"),
    }))
}

/// One element of an answer: its name, its text and the elements inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// The element's local name.
    pub name: String,
    /// Its text, unescaped (empty for elements that hold elements).
    pub text: String,
    /// The elements inside it, in order.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The `item`s of the list child `name` (`<groupSet><item>…`); none when it is absent.
    pub fn items<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Node> + 'a {
        self.child(name)
            .into_iter()
            .flat_map(|set| set.children.iter().filter(|c| c.name == "item"))
    }
}

/// The element tree of an XML document (attributes, comments and declarations skipped: EC2's
/// answers carry their facts in elements).
pub fn parse(xml: &str) -> Result<Node, String> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    for token in Tokenizer::from(xml) {
        match token.map_err(|e| e.to_string())? {
            Token::ElementStart { local, .. } => stack.push(Node {
                name: local.as_str().to_string(),
                ..Node::default()
            }),
            Token::ElementEnd { end, .. } => {
                let node = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => stack.pop(),
                    ElementEnd::Close(_, local) => match stack.pop() {
                        Some(node) if node.name == local.as_str() => Some(node),
                        Some(node) => {
                            return Err(format!("</{}> closes <{}>", local.as_str(), node.name))
                        }
                        None => None,
                    },
                }
                .ok_or("a closing tag without its opening")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Token::Text { text } => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&unescape(text.as_str()));
                }
            }
            Token::Cdata { text, .. } => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(text.as_str());
                }
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!("<{}> is never closed", stack[stack.len() - 1].name));
    }
    let mut root = root.ok_or("no element")?;
    trim(&mut root);
    Ok(root)
}

/// Whitespace between elements is layout, not text.
fn trim(node: &mut Node) {
    if !node.children.is_empty() && node.text.trim().is_empty() {
        node.text.clear();
    }
    for c in &mut node.children {
        trim(c);
    }
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_text_and_entities() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <reservationSet>
    <item><instancesSet><item><instanceId>i-1</instanceId><privateIpAddress>10.0.1.5</privateIpAddress></item></instancesSet></item>
    <item><instancesSet><item><instanceId>i-2</instanceId><tagSet><item><value>a &amp; b&#x21;</value></item></tagSet></item></instancesSet></item>
  </reservationSet>
  <nextToken/>
</DescribeInstancesResponse>"#;
        let root = parse(xml).expect("parses");
        assert_eq!(root.name, "DescribeInstancesResponse");
        let instances: Vec<&Node> = root
            .items("reservationSet")
            .flat_map(|r| r.items("instancesSet"))
            .collect();
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].text("privateIpAddress"), Some("10.0.1.5"));
        assert_eq!(instances[1].text("privateIpAddress"), None);
        let tag = instances[1].items("tagSet").next().expect("a tag");
        assert_eq!(tag.text("value"), Some("a & b!"));
        assert_eq!(root.text("nextToken"), Some(""));
    }

    #[test]
    fn a_broken_document_says_where() {
        assert!(parse("<a><b></b>").unwrap_err().contains("<a>"));
        assert!(parse("").is_err());
        assert!(parse("<a></b>").is_err());
    }

    #[test]
    fn lists_and_filters_number_from_one() {
        let p = filter_params(2, "vpc-id", &["vpc-1".into(), "vpc-2".into()]);
        assert_eq!(
            p,
            vec![
                ("Filter.2.Name".to_string(), "vpc-id".to_string()),
                ("Filter.2.Value.1".to_string(), "vpc-1".to_string()),
                ("Filter.2.Value.2".to_string(), "vpc-2".to_string()),
            ]
        );
    }
}
