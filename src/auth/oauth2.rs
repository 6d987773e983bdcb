//! OAuth 2.0 access tokens from the client credentials grant (RFC 6749 §4.4), one cache per
//! setting: a Cognito app client with a secret, or any authorization server's client.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::HeaderValue;

use super::cache::{Cached, Fresh};
use super::http::{post, Answer, Transport};
use super::{AuthError, FetchCounts, Method};
use crate::config::{OAuth2, TokenClientAuth};

/// Bound on one token request, connection included: the answer is small, and probes waiting
/// on it give up at their own timeout anyway.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The lifetime assumed when the answer has no `expires_in` (RECOMMENDED by RFC 6749 §5.1, not
/// required): short enough that a token whose server has a short default is not sent long
/// after it expired. Cognito always says (3600 s by default).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The error codes of RFC 6749 §5.2: the only text of an error answer that is quoted (an
/// `error_description` is the server's free text, and could hold anything).
const ERROR_CODES: [&str; 6] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// The token cache of one setting: nothing is fetched until a probe needs a token.
pub(super) fn tokens(settings: &OAuth2, counts: Arc<FetchCounts>) -> Arc<Cached<HeaderValue>> {
    let settings = Arc::new(settings.clone());
    Cached::new(
        Method::OAuth2,
        DEFAULT_LIFETIME,
        FETCH_TIMEOUT,
        Box::new(move || {
            let settings = settings.clone();
            Box::pin(async move { fetch(&settings).await })
        }),
        counts,
    )
}

/// Asks the token endpoint for a token.
async fn fetch(settings: &OAuth2) -> Result<Fresh<HeaderValue>, AuthError> {
    let url = settings.token_url.text.clone();
    let (headers, body) = request(settings).map_err(|why| AuthError::Failed {
        url: url.clone(),
        why,
    })?;
    match post(&settings.token_url, headers, body, FETCH_TIMEOUT).await {
        Ok(answer) => read_answer(&url, &answer),
        Err(Transport::Timeout) => Err(AuthError::Timeout {
            method: Method::OAuth2,
            after: FETCH_TIMEOUT,
        }),
        Err(Transport::Failed(why)) => Err(AuthError::Failed { url, why }),
    }
}

/// The token request's headers and form body (RFC 6749 §4.4.2): `grant_type`, `scope`
/// (space-delimited, §3.3), `audience` when set; the client authenticated with HTTP Basic over
/// the form-urlencoded id and secret (§2.3.1: "encoded using the application/x-www-form-
/// urlencoded encoding algorithm", then Basic), or with both in the body.
pub fn request(
    settings: &OAuth2,
) -> Result<(Vec<(http::HeaderName, HeaderValue)>, String), String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !settings.scopes.is_empty() {
        form.append_pair("scope", &settings.scopes.join(" "));
    }
    if let Some(audience) = &settings.audience {
        form.append_pair("audience", audience);
    }
    let mut headers = vec![
        (
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        ),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    match settings.client_auth {
        TokenClientAuth::Basic => {
            let encode =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!(
                "{}:{}",
                encode(&settings.client_id),
                encode(settings.client_secret.expose())
            );
            let mut value = HeaderValue::from_str(&format!("Basic {}", base64(pair.as_bytes())))
                .map_err(|_| "the client id cannot be sent in a header".to_string())?;
            value.set_sensitive(true);
            headers.push((AUTHORIZATION, value));
        }
        TokenClientAuth::Body => {
            form.append_pair("client_id", &settings.client_id);
            form.append_pair("client_secret", settings.client_secret.expose());
        }
    }
    Ok((headers, form.finish()))
}

/// Reads a token endpoint's answer: a token and its lifetime (RFC 6749 §5.1), or why not
/// (§5.2). Only `Bearer` tokens are sent as they are (RFC 6750); a `token_type` left out is
/// taken as one.
pub(super) fn read_answer(url: &str, answer: &Answer) -> Result<Fresh<HeaderValue>, AuthError> {
    let doc: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&answer.body).ok();
    let malformed = |why: String| AuthError::Malformed {
        url: url.to_string(),
        why,
    };
    match answer.status {
        200 => {}
        status @ (400 | 401 | 403) => {
            let code = doc
                .as_ref()
                .and_then(|d| d.get("error"))
                .and_then(|e| e.as_str())
                .and_then(|e| ERROR_CODES.iter().find(|c| **c == e).copied());
            return Err(AuthError::Refused {
                url: url.to_string(),
                status,
                code,
            });
        }
        status => {
            return Err(AuthError::Failed {
                url: url.to_string(),
                why: format!("it answered {status}"),
            })
        }
    }
    let Some(doc) = doc else {
        return Err(malformed(format!(
            "not a JSON object ({})",
            answer.content_type.as_deref().unwrap_or("no content type")
        )));
    };
    let token = doc
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no access_token".to_string()))?;
    if let Some(kind) = doc.get("token_type") {
        let kind = kind.as_str().unwrap_or("");
        if !kind.eq_ignore_ascii_case("bearer") {
            let shown: String = kind.chars().take(32).collect();
            return Err(malformed(format!(
                "token_type {shown:?}: only Bearer tokens are sent"
            )));
        }
    }
    let lifetime = match doc.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        // Some servers send it as a string.
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => return Err(malformed("expires_in is not a number".to_string())),
    };
    let lifetime = match lifetime {
        None => None,
        Some(secs) if secs.is_finite() && (0.0..=31_536_000.0).contains(&secs) => {
            Some(Duration::from_secs_f64(secs))
        }
        Some(_) => return Err(malformed("expires_in is out of range".to_string())),
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| malformed("the access_token cannot be sent in a header".to_string()))?;
    value.set_sensitive(true);
    Ok(Fresh { value, lifetime })
}

/// Standard base64 with padding (RFC 4648 §4), for HTTP Basic.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HopUrl, Secret};

    #[test]
    fn base64_of_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    fn settings(auth: TokenClientAuth) -> OAuth2 {
        OAuth2 {
            token_url: HopUrl::parse("https://idp.example.com/oauth2/token").expect("url"),
            client_id: "probe client".to_string(),
            client_secret: Secret::new("s3:cr/t&=".to_string()),
            scopes: vec!["orders/read".to_string(), "orders/write".to_string()],
            audience: Some("https://api.example.com".to_string()),
            client_auth: auth,
        }
    }

    /// RFC 6749 §2.3.1: the id and the secret are form-urlencoded, joined by a colon, then
    /// base64: "probe client" and "s3:cr/t&=" are `probe+client:s3%3Acr%2Ft%26%3D`.
    #[test]
    fn basic_encodes_id_and_secret_before_base64() {
        let (headers, body) = request(&settings(TokenClientAuth::Basic)).expect("request");
        let auth = headers
            .iter()
            .find(|(n, _)| *n == AUTHORIZATION)
            .map(|(_, v)| v.clone())
            .expect("Authorization");
        assert!(auth.is_sensitive());
        assert_eq!(
            auth.to_str().expect("ascii"),
            format!("Basic {}", base64(b"probe+client:s3%3Acr%2Ft%26%3D"))
        );
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=orders%2Fread+orders%2Fwrite&audience=https%3A%2F%2Fapi.example.com"
        );
    }

    #[test]
    fn body_sends_the_client_in_the_form() {
        let (headers, body) = request(&settings(TokenClientAuth::Body)).expect("request");
        assert!(headers.iter().all(|(n, _)| *n != AUTHORIZATION));
        assert!(
            body.ends_with("&client_id=probe+client&client_secret=s3%3Acr%2Ft%26%3D"),
            "{body}"
        );
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some("application/json".to_string()),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn answers_are_read_as_rfc_6749_says() {
        let url = "https://idp/token";
        let ok = read_answer(
            url,
            &answer(
                200,
                r#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":3600}"#,
            ),
        )
        .expect("token");
        assert_eq!(ok.value.to_str().expect("ascii"), "Bearer eyJ.a.b");
        assert!(ok.value.is_sensitive());
        assert_eq!(ok.lifetime, Some(Duration::from_secs(3600)));
        let text = read_answer(
            url,
            &answer(200, r#"{"access_token":"t","expires_in":"5"}"#),
        )
        .expect("string expires_in, no token_type");
        assert_eq!(text.lifetime, Some(Duration::from_secs(5)));
        assert_eq!(
            read_answer(url, &answer(200, r#"{"access_token":"t"}"#))
                .expect("no expires_in")
                .lifetime,
            None
        );
        let refused = read_answer(
            url,
            &answer(
                401,
                r#"{"error":"invalid_client","error_description":"secret s3cret wrong"}"#,
            ),
        );
        assert_eq!(
            refused
                .as_ref()
                .map_err(ToString::to_string)
                .err()
                .as_deref(),
            Some("the token endpoint https://idp/token refused the client: 401 invalid_client")
        );
        let unknown = read_answer(url, &answer(400, r#"{"error":"my secret code"}"#));
        assert_eq!(
            unknown.map_err(|e| e.to_string()).err().as_deref(),
            Some("the token endpoint https://idp/token refused the client: 400"),
            "an unknown code is not quoted"
        );
        for (status, body, why) in [
            (500, "{}", "failed: it answered 500"),
            (200, "<html>", "not a JSON object"),
            (200, r#"{"token_type":"Bearer"}"#, "no access_token"),
            (
                200,
                r#"{"access_token":"t","token_type":"mac"}"#,
                "only Bearer",
            ),
            (
                200,
                r#"{"access_token":"t","expires_in":-1}"#,
                "out of range",
            ),
            (
                200,
                "{\"access_token\":\"t\\n\"}",
                "cannot be sent in a header",
            ),
        ] {
            let err = read_answer(url, &answer(status, body))
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{status} {body}: {err:?}"
            );
        }
    }
}
