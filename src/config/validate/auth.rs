//! `auth` of a hop: SigV4 or OAuth 2.0 client credentials, each key checked where AWS or the
//! RFC says what it may hold.

use toml::Spanned;

use super::super::raw::{RawAuth, RawHop, RawOAuth2, RawSigV4};
use super::super::*;
use super::{expand_env, Checker};

/// Headers each method sets on every probe: a configured one would be overwritten, or, for
/// SigV4, would contradict the signature.
const SIGV4_HEADERS: [&str; 3] = ["authorization", "x-amz-date", "x-amz-security-token"];
const OAUTH2_HEADERS: [&str; 1] = ["authorization"];

impl Checker<'_> {
    /// The hop's `auth`, checked; `None` when absent or wrong (reported).
    pub(super) fn auth(
        &mut self,
        raw: &RawHop,
        url: Option<&HopUrl>,
        scope: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Auth> {
        let spanned = raw.auth.as_ref()?;
        let RawAuth { sigv4, oauth2 } = spanned.get_ref();
        if url.is_some_and(|u| u.cloudmap.is_some()) {
            self.report(
                &spanned.span(),
                scope,
                "auth authenticates HTTP probes; a cloudmap:// hop asks Cloud Map (DiscoverInstances) with the agent's own AWS credentials".to_string(),
            );
            return None;
        }
        let (method, taken): (&str, &[&str]) = match (sigv4, oauth2) {
            (Some(_), None) => ("sigv4", &SIGV4_HEADERS),
            (None, Some(_)) => ("oauth2", &OAUTH2_HEADERS),
            (Some(_), Some(_)) | (None, None) => {
                self.report(
                    &spanned.span(),
                    scope,
                    "auth must hold exactly one of sigv4 = { ... } or oauth2 = { ... }".to_string(),
                );
                return None;
            }
        };
        let before = self.problems.len();
        for (name, value) in &raw.headers {
            if taken.iter().any(|t| name.eq_ignore_ascii_case(t)) {
                self.report(
                    &value.span(),
                    scope,
                    format!("headers.{name} is set by auth.{method} on every probe: remove it from headers"),
                );
            }
        }
        let auth = match (sigv4, oauth2) {
            (Some(s), _) => self.sigv4(s, scope).map(Auth::SigV4),
            (_, Some(o)) => self.oauth2(o, scope, env).map(Auth::OAuth2),
            (None, None) => None,
        };
        (self.problems.len() == before).then_some(auth).flatten()
    }

    fn sigv4(&mut self, raw: &Spanned<RawSigV4>, scope: &str) -> Option<SigV4> {
        let raw = raw.get_ref();
        let before = self.problems.len();
        let region = raw.region.get_ref();
        if !is_region(region) {
            self.report(
                &raw.region.span(),
                scope,
                format!(
                    "auth.sigv4.region ({region:?}) must be an AWS region such as \"eu-west-1\""
                ),
            );
        }
        let service = raw
            .service
            .as_ref()
            .map_or(DEFAULT_SIGV4_SERVICE, |s| s.get_ref().as_str());
        let service_ok = (1..=64).contains(&service.len())
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !service_ok {
            self.report(
                &raw.service.as_ref().map_or(0..0, Spanned::span),
                scope,
                format!("auth.sigv4.service ({service:?}) must be an AWS signing name such as \"execute-api\": lower-case letters, digits and hyphens"),
            );
        }
        if let Some(arn) = &raw.role_arn {
            if !is_role_arn(arn.get_ref()) {
                self.report(
                    &arn.span(),
                    scope,
                    format!(
                        "auth.sigv4.role_arn ({:?}) must be an IAM role ARN such as \"arn:aws:iam::123456789012:role/hopwatch-probe\"",
                        arn.get_ref()
                    ),
                );
            }
        }
        if let Some(id) = &raw.external_id {
            if raw.role_arn.is_none() {
                self.report(
                    &id.span(),
                    scope,
                    "auth.sigv4.external_id is sent with AssumeRole: set role_arn too".to_string(),
                );
            } else if !is_external_id(id.get_ref()) {
                // STS's own constraint on ExternalId (API_AssumeRole.html): 2 to 1224
                // characters matching [\w+=,.@:\/-]*.
                self.report(
                    &id.span(),
                    scope,
                    "auth.sigv4.external_id must be 2 to 1224 characters of letters, digits and _+=,.@:/- (STS AssumeRole's ExternalId)".to_string(),
                );
            }
        }
        (self.problems.len() == before).then(|| SigV4 {
            region: region.clone(),
            service: service.to_string(),
            role_arn: raw.role_arn.as_ref().map(|a| a.get_ref().clone()),
            external_id: raw.external_id.as_ref().map(|a| a.get_ref().clone()),
        })
    }

    fn oauth2(
        &mut self,
        raw: &Spanned<RawOAuth2>,
        scope: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<OAuth2> {
        let raw = raw.get_ref();
        let before = self.problems.len();
        let token_url = self
            .url("auth.oauth2.token_url", &raw.token_url, scope)
            .and_then(|u| {
                let loopback = u.ip().is_some_and(|ip| ip.is_loopback()) || u.host == "localhost";
                if u.cloudmap.is_some() || (!u.tls && !loopback) {
                    // RFC 6749 §2.3.1 and §3.2: the token endpoint must be reached over TLS,
                    // since the client's password travels in the request.
                    self.report(
                        &raw.token_url.span(),
                        scope,
                        format!(
                            "auth.oauth2.token_url ({:?}) must be an https:// URL: the client secret is sent to it (RFC 6749 §2.3.1); http:// only to a loopback address",
                            raw.token_url.get_ref()
                        ),
                    );
                    return None;
                }
                Some(u)
            });
        self.printable("auth.oauth2.client_id", &raw.client_id, 255, scope);
        if let Some(audience) = &raw.audience {
            self.printable("auth.oauth2.audience", audience, 2048, scope);
        }
        let secret = match expand_env(raw.client_secret.get_ref(), env) {
            Err(why) => {
                self.report(
                    &raw.client_secret.span(),
                    scope,
                    format!("auth.oauth2.client_secret: {why}"),
                );
                None
            }
            // Never quote the value: it is a secret, whether read from the environment or not.
            Ok((value, _)) if value.is_empty() || !value.bytes().all(is_vschar) => {
                self.report(
                    &raw.client_secret.span(),
                    scope,
                    "auth.oauth2.client_secret must be 1 or more printable ASCII characters (RFC 6749 A.2); its value is not shown".to_string(),
                );
                None
            }
            Ok((value, _)) => Some(Secret::new(value)),
        };
        let mut scopes = Vec::new();
        for entry in raw.scopes.iter().flatten() {
            let text = entry.get_ref();
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), RFC 6749 §3.3.
            let token = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if token {
                scopes.push(text.clone());
            } else {
                self.report(
                    &entry.span(),
                    scope,
                    format!("auth.oauth2.scopes entry ({text:?}) must be one scope, without spaces, quotes or backslashes (RFC 6749 §3.3): list each scope apart"),
                );
            }
        }
        scopes.sort();
        scopes.dedup();
        let client_auth = match &raw.client_auth {
            None => TokenClientAuth::Basic,
            Some(v) => TokenClientAuth::parse(v.get_ref()).unwrap_or_else(|| {
                self.report(
                    &v.span(),
                    scope,
                    format!(
                        "auth.oauth2.client_auth ({:?}) must be \"basic\" or \"body\"",
                        v.get_ref()
                    ),
                );
                TokenClientAuth::Basic
            }),
        };
        if self.problems.len() > before {
            return None;
        }
        Some(OAuth2 {
            token_url: token_url?,
            client_id: raw.client_id.get_ref().clone(),
            client_secret: secret?,
            scopes,
            audience: raw.audience.as_ref().map(|a| a.get_ref().clone()),
            client_auth,
        })
    }

    /// `key` must be 1 to `max` printable ASCII characters (RFC 6749's VSCHAR).
    fn printable(&mut self, key: &str, value: &Spanned<String>, max: usize, scope: &str) {
        let text = value.get_ref();
        if text.is_empty() || text.len() > max || !text.bytes().all(is_vschar) {
            self.report(
                &value.span(),
                scope,
                format!("{key} ({text:?}) must be 1 to {max} printable ASCII characters"),
            );
        }
    }
}

/// VSCHAR = %x20-7E (RFC 6749 Appendix A).
fn is_vschar(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// An AWS region name: `eu-west-1`, `us-gov-west-1`, `cn-north-1`: lower-case words joined by
/// hyphens, the last one a number.
fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts[0].len() >= 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, the account 12 digits.
fn is_role_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|n| {
                    !n.is_empty() && !n.ends_with('/') && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
                })
    )
}

/// STS's `ExternalId`: 2 to 1224 characters of `[\w+=,.@:\/-]`.
fn is_external_id(text: &str) -> bool {
    (2..=1224).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_role_arns_and_external_ids() {
        for ok in [
            "eu-west-1",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-3",
            "us-isob-east-1",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in [
            "",
            "eu",
            "eu-west",
            "EU-west-1",
            "eu-west-x",
            "eu--1",
            "eu west 1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
        assert!(is_role_arn("arn:aws:iam::123456789012:role/hopwatch-probe"));
        assert!(is_role_arn(
            "arn:aws-cn:iam::123456789012:role/path/to/probe"
        ));
        for bad in [
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:sts::123456789012:role/x",
            "role/x",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
        assert!(is_external_id("hopwatch-ext-1"));
        assert!(!is_external_id("x"));
        assert!(!is_external_id("has space"));
    }
}
