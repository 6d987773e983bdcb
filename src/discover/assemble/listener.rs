//! Which rule of an ALB listener a request meets, and what that rule does with it: pure, from
//! the rules `DescribeRules` gave (`model::rules`) and the request the gateway sends.
//!
//! How AWS evaluates rules (docs.aws.amazon.com/elasticloadbalancing/latest/application/
//! listener-update-rules.html, and the listener rules section of load-balancer-listeners.html):
//! in priority order, lowest number first, the default rule last; the first rule whose
//! conditions are all met is performed. Within one condition, several values are alternatives:
//! the condition is met if any of them matches. How each condition type matches
//! (docs.aws.amazon.com/elasticloadbalancing/latest/application/rule-condition-types.html,
//! and the API reference's `*ConditionConfig` types):
//!
//! - `path-pattern`: case-sensitive; `*` matches 0 or more characters, `?` exactly one; against
//!   the path of the URL only, never its query string.
//! - `host-header`: case-insensitive, same wildcards.
//! - `http-request-method`: exact and case-sensitive, no wildcard.
//! - `query-string`: key/value pairs, or values alone (any key set to that value); "the
//!   comparison is case insensitive" (keys and values), same wildcards, `\*` and `\?` for the
//!   literal characters (QueryStringConditionConfig); the condition is met if one pair is found.
//! - `http-header`: the header name and the values are case-insensitive, wildcards in the
//!   values only; a header sent several times is searched in order until one matches.
//! - `source-ip`: the address the connection comes from (the proxy's, not X-Forwarded-For's)
//!   in one of the CIDRs.
//!
//! What hopwatch cannot know for sure is said rather than guessed: see [`Matches`].

use std::net::IpAddr;

use super::super::model::rules::{Action, Condition, ListenerRule};
use crate::config::Cidr;

/// The request the gateway sends the listener, as far as rules look at it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, as sent (methods are compared case-sensitively).
    pub method: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// The path; anything from a `?` on is ignored (path patterns never see the query).
    pub path: &'a str,
    /// The query string's (key, value) pairs, as sent (not percent-decoded: AWS does not say
    /// it decodes before comparing).
    pub query: &'a [(String, String)],
    /// Every header, in the order sent, a repeated header once per value.
    pub headers: &'a [(String, String)],
    /// Where the gateway's traffic comes from, as networks: the VPC link's subnets, or the
    /// NLB's addresses (/32) when an NLB sits in front. Empty: not known.
    pub source: &'a [Cidr],
}

/// How a condition, or a whole rule, meets a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matches {
    Yes,
    No,
    /// `source-ip`: some of the gateway's source addresses are inside the condition's
    /// networks and some outside, so AWS's choice depends on the address each request leaves
    /// from. Judged as not matching (the rule is passed over), and said: `why`.
    Partly(String),
    /// hopwatch cannot judge it (a regular expression, a field it does not know, a source
    /// it was not given). Judged as not matching, and said: `why`.
    Unknown(String),
}

/// The rule a request meets, and the rules before it that might have caught it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'a> {
    /// The first rule, in AWS's order, whose conditions all surely match; `None` when no rule
    /// does (the rules given hold no default rule).
    pub rule: Option<&'a ListenerRule>,
    /// Rules evaluated before `rule` that were judged [`Matches::Partly`] or
    /// [`Matches::Unknown`], in order, with that judgement: each may take some or all of the
    /// gateway's requests in `rule`'s place.
    pub passed_over: Vec<(&'a ListenerRule, Matches)>,
}

/// What the rule a request meets does with it: its first terminal action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded to these target groups, with their weights (`None`: a single group named by
    /// `TargetGroupArn`; weight 0 receives no request).
    Forward {
        target_groups: Vec<(String, Option<i32>)>,
        /// An authentication action performed before the forward (`oidc`, `cognito`,
        /// `jwt-validation`): a request without a session or token is answered by the
        /// load balancer (a redirect to the IdP, or a 401) and never forwarded.
        authenticated_first: Option<String>,
    },
    /// The load balancer answers itself with this status code (`404`).
    FixedResponse { status: String },
    /// The load balancer redirects (`301` or `302`) to `target` (AWS's `#{…}` keywords kept).
    Redirect { status: String, target: String },
    /// No terminal action could be read (an action type hopwatch does not know comes first,
    /// or the rule has none): why.
    Unknown(String),
}

/// The rule `req` meets: rules in priority order (lowest number first, the default last), the
/// first whose conditions all match. A rule judged [`Matches::Partly`] or
/// [`Matches::Unknown`] is passed over; [`evaluate`] says which were.
pub fn route<'a>(rules: &'a [ListenerRule], req: &Request) -> Option<&'a ListenerRule> {
    evaluate(rules, req).rule
}

/// [`route`], with the rules passed over on a judgement that is not sure.
pub fn evaluate<'a>(rules: &'a [ListenerRule], req: &Request) -> Routed<'a> {
    let mut ordered: Vec<&ListenerRule> = rules.iter().collect();
    // Whatever order they were read in: AWS's order. Stable, for rules of equal priority
    // (AWS never has two).
    ordered.sort_by_key(|r| r.priority);
    let mut passed_over = Vec::new();
    for rule in ordered {
        match judge_rule(rule, req) {
            Matches::Yes => {
                return Routed {
                    rule: Some(rule),
                    passed_over,
                }
            }
            Matches::No => {}
            doubt => passed_over.push((rule, doubt)),
        }
    }
    Routed {
        rule: None,
        passed_over,
    }
}

/// How a whole rule meets `req`: `Yes` when every condition does (the default rule has none),
/// `No` when any condition does not; otherwise the doubts of its conditions.
pub fn judge_rule(rule: &ListenerRule, req: &Request) -> Matches {
    let mut partly = Vec::new();
    let mut unknown = Vec::new();
    for c in &rule.conditions {
        match judge(c, req) {
            Matches::Yes => {}
            // One condition not met is enough, whatever the others' doubts.
            Matches::No => return Matches::No,
            Matches::Partly(why) => partly.push(why),
            Matches::Unknown(why) => unknown.push(why),
        }
    }
    match (partly.is_empty(), unknown.is_empty()) {
        (true, true) => Matches::Yes,
        (false, true) => Matches::Partly(partly.join("; ")),
        _ => Matches::Unknown(
            unknown
                .into_iter()
                .chain(partly)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// How one condition meets `req`.
pub fn judge(c: &Condition, req: &Request) -> Matches {
    let yes = |b: bool| if b { Matches::Yes } else { Matches::No };
    match c {
        Condition::PathPattern(patterns) => {
            // The path only: a query string the caller left on is not the path's.
            let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
            yes(patterns
                .iter()
                .any(|p| wild(p, path, Case::Sensitive, false)))
        }
        Condition::HostHeader(patterns) => judge_host(patterns, req.host),
        Condition::HttpRequestMethod(methods) => yes(methods.iter().any(|m| m == req.method)),
        Condition::QueryString(pairs) => yes(pairs.iter().any(|(key, value)| {
            req.query.iter().any(|(k, v)| {
                key.as_ref()
                    .is_none_or(|key| wild(key, k, Case::Insensitive, true))
                    && wild(value, v, Case::Insensitive, true)
            })
        })),
        Condition::HttpHeader { name, values } => yes(req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| values.iter().any(|p| wild(p, v, Case::Insensitive, false)))),
        Condition::SourceIp(nets) => judge_source(nets, req.source, c),
        Condition::PathRegex(_) | Condition::HostRegex(_) | Condition::HttpHeaderRegex { .. } => {
            Matches::Unknown(format!(
                "{c}: a regular expression, which hopwatch does not evaluate (AWS does not \
                 document its dialect's anchoring)"
            ))
        }
        Condition::Other(field) => Matches::Unknown(format!(
            "a `{field}` condition, which this version of hopwatch does not know"
        )),
    }
}

/// `host-header`. The patterns cannot hold a `:` (AWS allows letters, digits, `-`, `.` and
/// the wildcards), and AWS does not say whether a port in `Host` is compared: when the answer
/// depends on it, it is not known.
fn judge_host(patterns: &[String], host: &str) -> Matches {
    let with = patterns
        .iter()
        .any(|p| wild(p, host, Case::Insensitive, false));
    let bare = without_port(host);
    if bare == host {
        return if with { Matches::Yes } else { Matches::No };
    }
    let without = patterns
        .iter()
        .any(|p| wild(p, bare, Case::Insensitive, false));
    match (with, without) {
        (true, true) => Matches::Yes,
        (false, false) => Matches::No,
        _ => Matches::Unknown(format!(
            "host-header {}: Host `{host}` matches {} its port, and AWS does not document \
             whether the port is compared",
            patterns.join(", "),
            if without { "only without" } else { "only with" }
        )),
    }
}

/// `example.com:8443` → `example.com`; `[fd00::1]:443` → `[fd00::1]`; anything else as is.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

/// `source-ip`, for a source given as networks. Each source network is inside the condition
/// (covered by its networks, together), outside (shares no address with them), or partly
/// inside. All inside: met; all outside: not met; anything else: [`Matches::Partly`], for a
/// request from one address of the gateway's would meet it and one from another would not.
fn judge_source(nets: &[Cidr], source: &[Cidr], c: &Condition) -> Matches {
    if source.is_empty() {
        return Matches::Unknown(format!(
            "{c}: the addresses the gateway's requests come from are not known"
        ));
    }
    let nets: Vec<Net> = nets.iter().map(Net::of).collect();
    let (mut inside, mut partly, mut outside) = (Vec::new(), Vec::new(), Vec::new());
    for s in source {
        let n = Net::of(s);
        if covered(n, &nets) {
            inside.push(s.to_string());
        } else if nets.iter().any(|m| m.contains(n) || n.contains(*m)) {
            partly.push(s.to_string());
        } else {
            outside.push(s.to_string());
        }
    }
    if partly.is_empty() && outside.is_empty() {
        return Matches::Yes;
    }
    if inside.is_empty() && partly.is_empty() {
        return Matches::No;
    }
    let mut said = Vec::new();
    for (list, how) in [
        (inside, "inside"),
        (partly, "partly inside"),
        (outside, "outside"),
    ] {
        if !list.is_empty() {
            said.push(format!("{} {how}", list.join(", ")));
        }
    }
    Matches::Partly(format!(
        "{c}: of the gateway's sources, {}; requests from some of its addresses meet the rule, \
         from others not",
        said.join(", ")
    ))
}

/// A network as numbers: its family, its first address and its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    v6: bool,
    base: u128,
    prefix: u8,
}

impl Net {
    fn of(c: &Cidr) -> Net {
        let (v6, addr) = match c.addr() {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let mut n = Net {
            v6,
            base: 0,
            prefix: c.prefix(),
        };
        n.base = n.masked(addr, n.prefix);
        n
    }

    fn bits(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// `addr` with the host bits past `prefix` cleared.
    fn masked(self, addr: u128, prefix: u8) -> u128 {
        let host = u32::from(self.bits().saturating_sub(prefix));
        // A shift by 128 is no shift in u128: a /0 keeps nothing.
        addr.checked_shr(host)
            .and_then(|a| a.checked_shl(host))
            .unwrap_or(0)
    }

    /// Whether every address of `other` is one of this network's.
    fn contains(self, other: Net) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && self.masked(other.base, self.prefix) == self.base
    }

    /// The two halves of this network; `None` for a single address.
    fn halves(self) -> Option<(Net, Net)> {
        if self.prefix >= self.bits() {
            return None;
        }
        let prefix = self.prefix + 1;
        let bit = 1u128.checked_shl(u32::from(self.bits() - prefix))?;
        Some((
            Net { prefix, ..self },
            Net {
                prefix,
                base: self.base | bit,
                ..self
            },
        ))
    }
}

/// Whether `nets` together cover every address of `s`. CIDRs are nested or apart, so `s` is
/// covered when one holds it, or when both its halves are covered; the recursion only goes
/// down where a smaller network lies inside, at most 128 levels.
fn covered(s: Net, nets: &[Net]) -> bool {
    if nets.iter().any(|n| n.contains(s)) {
        return true;
    }
    if !nets.iter().any(|n| s.contains(*n)) {
        return false;
    }
    match s.halves() {
        Some((low, high)) => covered(low, nets) && covered(high, nets),
        None => false,
    }
}

/// Whether a character of the text equals one of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Sensitive,
    Insensitive,
}

/// One piece of a wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `*`: 0 or more characters.
    Any,
    /// `?`: exactly one character.
    One,
    Char(char),
}

/// The pieces of `pattern`; with `escapes` (query strings), `\*` and `\?` are the characters.
fn pieces(pattern: &str, escapes: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' if escapes && matches!(chars.peek(), Some('*' | '?')) => {
                chars.next().map_or(Piece::Char(c), Piece::Char)
            }
            '*' => Piece::Any,
            '?' => Piece::One,
            c => Piece::Char(c),
        });
    }
    out
}

/// Whether `text` matches the whole of `pattern` (`*`, `?`). The usual greedy match that goes
/// back to the last `*` on a mismatch: linear in practice, never exponential.
fn wild(pattern: &str, text: &str, case: Case, escapes: bool) -> bool {
    let p = pieces(pattern, escapes);
    let t: Vec<char> = text.chars().collect();
    let same = |a: char, b: char| match case {
        Case::Sensitive => a == b,
        Case::Insensitive => a == b || a.to_lowercase().eq(b.to_lowercase()),
    };
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen, and where in the text it was tried up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Piece::One) => {
                pi += 1;
                ti += 1;
            }
            Some(Piece::Char(c)) if same(*c, t[ti]) => {
                pi += 1;
                ti += 1;
            }
            Some(Piece::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                // The `*` takes one more character.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|x| *x == Piece::Any)
}

/// What `rule` does with a request it meets: its first terminal action (`forward`,
/// `fixed-response`, `redirect`: AWS requires exactly one, last), with an authentication
/// performed before a forward said in `authenticated_first`.
pub fn outcome(rule: &ListenerRule) -> Outcome {
    let mut authenticated = None;
    for a in &rule.actions {
        match a {
            Action::Authenticate { kind } => {
                if authenticated.is_none() {
                    authenticated = Some(kind.clone());
                }
            }
            Action::Forward(groups) => {
                return Outcome::Forward {
                    target_groups: groups.clone(),
                    authenticated_first: authenticated,
                }
            }
            Action::FixedResponse { status, .. } => {
                return Outcome::FixedResponse {
                    status: status.clone(),
                }
            }
            Action::Redirect { status, target } => {
                return Outcome::Redirect {
                    status: status.clone(),
                    target: target.clone(),
                }
            }
            // It may end the rule or not: what follows cannot be vouched for.
            Action::Other(kind) => {
                let rule = rule.priority;
                return Outcome::Unknown(format!(
                    "rule {rule} performs a `{kind}` action, unknown to this version of hopwatch"
                ));
            }
        }
    }
    Outcome::Unknown(format!(
        "rule {} has no forward, fixed-response or redirect action",
        rule.priority
    ))
}

#[cfg(test)]
mod tests {
    use super::super::super::model::rules::Priority;
    use super::*;

    const TG_PROD: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/prod/1";
    const TG_API: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/api/2";

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A request owned by the test, lent as a [`Request`].
    #[derive(Clone)]
    struct Req {
        method: &'static str,
        host: &'static str,
        path: &'static str,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        source: Vec<Cidr>,
    }

    impl Req {
        fn new(path: &'static str) -> Req {
            Req {
                method: "GET",
                host: "orders.internal.example.com",
                path,
                query: Vec::new(),
                headers: Vec::new(),
                source: vec![cidr("10.0.1.0/24")],
            }
        }
        fn q(mut self, k: &str, v: &str) -> Req {
            self.query.push((k.into(), v.into()));
            self
        }
        fn h(mut self, k: &str, v: &str) -> Req {
            self.headers.push((k.into(), v.into()));
            self
        }
        fn from(mut self, nets: &[&str]) -> Req {
            self.source = nets.iter().map(|n| cidr(n)).collect();
            self
        }
        fn method(mut self, m: &'static str) -> Req {
            self.method = m;
            self
        }
        fn host(mut self, h: &'static str) -> Req {
            self.host = h;
            self
        }
        fn req(&self) -> Request<'_> {
            Request {
                method: self.method,
                host: self.host,
                path: self.path,
                query: &self.query,
                headers: &self.headers,
                source: &self.source,
            }
        }
    }

    fn numbered(n: u32, conditions: Vec<Condition>, actions: Vec<Action>) -> ListenerRule {
        ListenerRule {
            arn: format!("arn:rule/{n}"),
            priority: Priority::Number(n),
            conditions,
            actions,
        }
    }

    fn default_rule(actions: Vec<Action>) -> ListenerRule {
        ListenerRule {
            arn: "arn:rule/default".into(),
            priority: Priority::Default,
            conditions: vec![],
            actions,
        }
    }

    fn forward(tg: &str) -> Action {
        Action::Forward(vec![(tg.to_string(), None)])
    }

    fn not_found() -> Action {
        Action::FixedResponse {
            status: "404".into(),
            content_type: Some("text/plain".into()),
        }
    }

    fn is_partly(m: &Matches) -> bool {
        matches!(m, Matches::Partly(_))
    }

    fn is_unknown(m: &Matches) -> bool {
        matches!(m, Matches::Unknown(_))
    }

    #[test]
    fn conditions_match_as_aws_documents_them() {
        use Condition as C;
        let path = |v: &[&str]| C::PathPattern(strings(v));
        let host = |v: &[&str]| C::HostHeader(strings(v));
        let method = |v: &[&str]| C::HttpRequestMethod(strings(v));
        let query = |v: &[(Option<&str>, &str)]| {
            C::QueryString(
                v.iter()
                    .map(|(k, v)| (k.map(str::to_string), v.to_string()))
                    .collect(),
            )
        };
        let header = |name: &str, v: &[&str]| C::HttpHeader {
            name: name.into(),
            values: strings(v),
        };
        let source = |v: &[&str]| C::SourceIp(v.iter().map(|n| cidr(n)).collect());
        let yes = |b: bool| if b { Matches::Yes } else { Matches::No };
        // (what, condition, request, met)
        #[rustfmt::skip]
        let table: Vec<(&str, Condition, Req, bool)> = vec![
            // path-pattern: `*` 0+ characters, `?` exactly one, case-sensitive, path only.
            ("path *", path(&["/prod/*"]), Req::new("/prod/orders/7"), true),
            ("path * empty", path(&["/prod/*"]), Req::new("/prod/"), true),
            ("path * needs prefix", path(&["/prod/*"]), Req::new("/prod"), false),
            ("path ? one", path(&["/v?/items"]), Req::new("/v2/items"), true),
            ("path ? not two", path(&["/v?/items"]), Req::new("/v12/items"), false),
            ("path ? not zero", path(&["/v?/items"]), Req::new("/v/items"), false),
            ("path case", path(&["/Prod/*"]), Req::new("/prod/x"), false),
            ("path whole", path(&["/prod"]), Req::new("/prod/x"), false),
            ("path inner *", path(&["/*/orders"]), Req::new("/a/b/orders"), true),
            ("path no query", path(&["/prod/x"]), Req::new("/prod/x?a=b"), true),
            ("path query not seen", path(&["*a=b*"]), Req::new("/prod/x?a=b"), false),
            ("path any of several", path(&["/img/*", "/prod/*"]), Req::new("/prod/1"), true),
            ("path none of several", path(&["/img/*", "/js/*"]), Req::new("/prod/1"), false),
            // host-header: case-insensitive, wildcards.
            ("host exact", host(&["orders.internal.example.com"]), Req::new("/"), true),
            ("host case", host(&["ORDERS.internal.Example.COM"]), Req::new("/"), true),
            ("host *.", host(&["*.example.com"]), Req::new("/"), true),
            // AWS's own example: *.example.com does not match example.com.
            ("host *. not apex", host(&["*.example.com"]), Req::new("/").host("example.com"), false),
            ("host ?", host(&["order?.internal.example.com"]), Req::new("/"), true),
            ("host other", host(&["api.example.com"]), Req::new("/"), false),
            // http-request-method: exact, case-sensitive.
            ("method", method(&["GET", "HEAD"]), Req::new("/"), true),
            ("method other", method(&["POST"]), Req::new("/"), false),
            ("method case", method(&["get"]), Req::new("/"), false),
            ("method no wildcard", method(&["G*"]), Req::new("/"), false),
            ("method custom", method(&["CUSTOM-METHOD"]), Req::new("/").method("CUSTOM-METHOD"), true),
            // query-string: key optional, case-insensitive, wildcards, escapes.
            ("query k=v", query(&[(Some("version"), "v1")]), Req::new("/").q("version", "v1"), true),
            ("query case", query(&[(Some("Version"), "V1")]), Req::new("/").q("version", "v1"), true),
            ("query other value", query(&[(Some("version"), "v1")]), Req::new("/").q("version", "v2"), false),
            ("query value on other key", query(&[(Some("version"), "v1")]), Req::new("/").q("v", "v1"), false),
            ("query any key", query(&[(None, "example")]), Req::new("/").q("anything", "example"), true),
            ("query any key, no value", query(&[(None, "example")]), Req::new("/").q("example", "x"), false),
            ("query wildcard", query(&[(Some("ver*"), "v?")]), Req::new("/").q("version", "v2"), true),
            ("query one of pairs", query(&[(Some("a"), "1"), (None, "beta")]), Req::new("/").q("x", "1").q("y", "beta"), true),
            ("query absent", query(&[(Some("a"), "1")]), Req::new("/"), false),
            ("query escaped *", query(&[(Some("q"), "a\\*")]), Req::new("/").q("q", "a*"), true),
            ("query escaped * literal", query(&[(Some("q"), "a\\*")]), Req::new("/").q("q", "ab"), false),
            ("query escaped ?", query(&[(None, "\\?")]), Req::new("/").q("q", "?"), true),
            // http-header: name and values case-insensitive, wildcards in values.
            ("header", header("User-Agent", &["*Chrome*", "*Safari*"]), Req::new("/").h("user-agent", "Mozilla Safari/605"), true),
            ("header value case", header("X-Env", &["blue"]), Req::new("/").h("X-ENV", "BLUE"), true),
            ("header absent", header("X-Env", &["blue"]), Req::new("/"), false),
            ("header other value", header("X-Env", &["blue"]), Req::new("/").h("X-Env", "green"), false),
            ("header repeated", header("X-Env", &["blue"]), Req::new("/").h("X-Env", "green").h("x-env", "blue"), true),
            // source-ip: every source network inside the condition's.
            ("source inside", source(&["10.0.0.0/16"]), Req::new("/"), true),
            ("source exact", source(&["10.0.1.0/24"]), Req::new("/"), true),
            ("source outside", source(&["192.0.2.0/24"]), Req::new("/"), false),
            ("source other family", source(&["fd00::/8"]), Req::new("/"), false),
            ("source host inside", source(&["10.0.0.0/8"]), Req::new("/").from(&["10.0.1.17/32"]), true),
            ("source two covering", source(&["10.0.0.0/24", "10.0.1.0/24"]), Req::new("/").from(&["10.0.0.0/23"]), true),
            ("source v6", source(&["fd00::/8"]), Req::new("/").from(&["fd12::/64"]), true),
        ];
        for (what, condition, r, met) in table {
            assert_eq!(judge(&condition, &r.req()), yes(met), "{what}: {condition}");
        }
    }

    #[test]
    fn a_source_partly_inside_is_said_and_not_taken() {
        let c = Condition::SourceIp(vec![cidr("10.0.1.0/25")]);
        // One subnet straddling the condition's network.
        let straddling = judge(&c, &Req::new("/").from(&["10.0.1.0/24"]).req());
        assert!(is_partly(&straddling), "{straddling:?}");
        // Two subnets, one inside and one outside.
        let split = judge(
            &c,
            &Req::new("/").from(&["10.0.1.0/26", "10.0.9.0/24"]).req(),
        );
        match &split {
            Matches::Partly(why) => {
                assert!(why.contains("10.0.1.0/26 inside"), "{why}");
                assert!(why.contains("10.0.9.0/24 outside"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Two halves of the condition's network inside one source, a third part not.
        let gap = Condition::SourceIp(vec![cidr("10.0.0.0/25"), cidr("10.0.0.128/26")]);
        assert!(is_partly(&judge(
            &gap,
            &Req::new("/").from(&["10.0.0.0/24"]).req()
        )));
        // Not known where the gateway comes from.
        assert!(is_unknown(&judge(&c, &Req::new("/").from(&[]).req())));

        // A rule passed over on a partial match, said; the next rule taken.
        let rules = vec![
            numbered(1, vec![c.clone()], vec![forward(TG_API)]),
            default_rule(vec![forward(TG_PROD)]),
        ];
        let r = Req::new("/").from(&["10.0.1.0/24"]);
        let routed = evaluate(&rules, &r.req());
        assert_eq!(routed.rule.map(|r| r.priority), Some(Priority::Default));
        assert_eq!(routed.passed_over.len(), 1);
        assert_eq!(routed.passed_over[0].0.priority, Priority::Number(1));
        assert!(is_partly(&routed.passed_over[0].1));
    }

    #[test]
    fn rules_go_by_priority_and_the_default_last() {
        // Given out of order, as a reader might: AWS's order decides.
        let rules = vec![
            default_rule(vec![forward("default")]),
            numbered(
                20,
                vec![Condition::PathPattern(strings(&["/prod/*"]))],
                vec![forward("twenty")],
            ),
            numbered(
                5,
                vec![Condition::PathPattern(strings(&["/prod/orders*"]))],
                vec![forward("five")],
            ),
            numbered(
                10,
                vec![Condition::HostHeader(strings(&["*.example.com"]))],
                vec![forward("ten")],
            ),
        ];
        let pick = |r: Req| route(&rules, &r.req()).map(|r| r.arn.clone());
        assert_eq!(pick(Req::new("/prod/orders/1")), Some("arn:rule/5".into()));
        assert_eq!(pick(Req::new("/prod/items")), Some("arn:rule/10".into()));
        assert_eq!(
            pick(Req::new("/prod/items").host("internal.corp")),
            Some("arn:rule/20".into())
        );
        assert_eq!(
            pick(Req::new("/other").host("internal.corp")),
            Some("arn:rule/default".into())
        );
        // No default rule among those given, nothing met: no rule.
        assert_eq!(route(&rules[1..2], &Req::new("/x").req()), None);
    }

    #[test]
    fn every_condition_of_a_rule_must_match() {
        let rule = numbered(
            1,
            vec![
                Condition::PathPattern(strings(&["/prod/*"])),
                Condition::HttpRequestMethod(strings(&["POST"])),
                Condition::HttpHeader {
                    name: "X-Canary".into(),
                    values: strings(&["on"]),
                },
            ],
            vec![forward(TG_API)],
        );
        let r = Req::new("/prod/x").method("POST").h("x-canary", "ON");
        assert_eq!(judge_rule(&rule, &r.req()), Matches::Yes);
        let r = Req::new("/prod/x").method("GET").h("x-canary", "ON");
        assert_eq!(judge_rule(&rule, &r.req()), Matches::No);
        // A condition not met wins over another's doubt.
        let doubtful = numbered(
            2,
            vec![
                Condition::PathRegex(strings(&["^/prod/"])),
                Condition::HttpRequestMethod(strings(&["DELETE"])),
            ],
            vec![forward(TG_API)],
        );
        assert_eq!(
            judge_rule(&doubtful, &Req::new("/prod/x").req()),
            Matches::No
        );
    }

    #[test]
    fn a_fixed_404_default_with_a_forward_for_prod() {
        let rules = vec![
            numbered(
                1,
                vec![Condition::PathPattern(strings(&["/prod/*"]))],
                vec![forward(TG_PROD)],
            ),
            default_rule(vec![not_found()]),
        ];
        let r = Req::new("/prod/orders");
        let rule = route(&rules, &r.req()).expect("a rule");
        assert_eq!(
            outcome(rule),
            Outcome::Forward {
                target_groups: vec![(TG_PROD.into(), None)],
                authenticated_first: None,
            }
        );
        // The stage's name left out of the path: the default's 404.
        let r = Req::new("/orders");
        let rule = route(&rules, &r.req()).expect("the default");
        assert_eq!(rule.priority, Priority::Default);
        assert_eq!(
            outcome(rule),
            Outcome::FixedResponse {
                status: "404".into()
            }
        );
    }

    #[test]
    fn authentication_before_a_forward_is_said() {
        let rule = numbered(
            1,
            vec![],
            vec![
                Action::Authenticate {
                    kind: "oidc".into(),
                },
                Action::Forward(vec![(TG_API.into(), Some(80)), (TG_PROD.into(), Some(20))]),
            ],
        );
        assert_eq!(
            outcome(&rule),
            Outcome::Forward {
                target_groups: vec![(TG_API.into(), Some(80)), (TG_PROD.into(), Some(20))],
                authenticated_first: Some("oidc".into()),
            }
        );
        let redirect = default_rule(vec![
            Action::Redirect {
                status: "301".into(),
                target: "HTTPS://#{host}:443/#{path}?#{query}".into(),
            },
            forward(TG_API),
        ]);
        assert_eq!(
            outcome(&redirect),
            Outcome::Redirect {
                status: "301".into(),
                target: "HTTPS://#{host}:443/#{path}?#{query}".into(),
            }
        );
        assert!(matches!(
            outcome(&default_rule(vec![
                Action::Other("magic".into()),
                forward(TG_API)
            ])),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            outcome(&default_rule(vec![])),
            Outcome::Unknown(_)
        ));
    }

    #[test]
    fn what_hopwatch_cannot_judge_is_passed_over_and_said() {
        let rules = vec![
            numbered(
                1,
                vec![Condition::HostRegex(strings(&["^orders\\."]))],
                vec![forward(TG_API)],
            ),
            numbered(
                2,
                vec![Condition::Other("cookie".into())],
                vec![forward(TG_API)],
            ),
            numbered(
                3,
                vec![Condition::PathPattern(strings(&["/nope"]))],
                vec![forward(TG_API)],
            ),
            default_rule(vec![forward(TG_PROD)]),
        ];
        let routed = evaluate(&rules, &Req::new("/x").req());
        assert_eq!(routed.rule.map(|r| r.priority), Some(Priority::Default));
        let doubts: Vec<_> = routed
            .passed_over
            .iter()
            .map(|(r, m)| (r.priority, is_unknown(m)))
            .collect();
        assert_eq!(
            doubts,
            vec![(Priority::Number(1), true), (Priority::Number(2), true)]
        );
    }

    #[test]
    fn a_port_in_host_is_unknown_only_when_it_decides() {
        let exact = Condition::HostHeader(strings(&["orders.example.com"]));
        let r = Req::new("/").host("orders.example.com:8443");
        assert!(is_unknown(&judge(&exact, &r.req())));
        let star = Condition::HostHeader(strings(&["orders.example.*"]));
        assert_eq!(judge(&star, &r.req()), Matches::Yes);
        let other = Condition::HostHeader(strings(&["api.example.com"]));
        assert_eq!(judge(&other, &r.req()), Matches::No);
        assert_eq!(without_port("[fd00::1]:443"), "[fd00::1]");
        assert_eq!(without_port("fd00::1"), "fd00::1");
    }

    #[test]
    fn wildcards_never_blow_up() {
        let text = "a".repeat(5_000);
        assert!(!wild("*a*a*a*a*a*b", &text, Case::Sensitive, false));
        assert!(wild("*a*a*a*a*a*", &text, Case::Sensitive, false));
        assert!(wild("", "", Case::Sensitive, false));
        assert!(!wild("", "a", Case::Sensitive, false));
        assert!(wild("*", "", Case::Sensitive, false));
    }
}
