//! AWS Signature Version 4 for probes of `AWS_IAM` routes: credentials from the SDK's default
//! chain (or a role assumed with them), cached and renewed ahead of expiry, and every request
//! signed afresh with the signing crate (`aws-sigv4`).
//!
//! What is signed, per the algorithm (docs.aws.amazon.com/IAM/latest/UserGuide/
//! create-signed-request.html): the method, the path (URI-encoded once more, as every service
//! but S3 expects), the canonical query string, every header sent except the few proxies may
//! change (`User-Agent`, `X-Amzn-Trace-Id`, `Connection`, `Transfer-Encoding`) and the
//! configured secret ones, `Host` as sent (the hop's `headers.host`, else the URL's authority,
//! also when a `per_address` probe connects to one address), `X-Amz-Date` and
//! `X-Amz-Security-Token`, and the SHA-256 of the body as the canonical request's last line.
//! No `x-amz-content-sha256` header: AWS requires it of S3 only ("the x-amz-content-sha256
//! header is required for Amazon S3 AWS requests", same page); API Gateway checks the hash
//! inside the signature.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign as sign_request, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use tokio::sync::OnceCell;

use super::cache::{Cached, Fresh};
use super::{AuthError, FetchCounts, Method, Sent};
use crate::config::SigV4;

/// Bound on one resolution of credentials: the default chain may try IMDS (a second or two off
/// EC2), and AssumeRole retries.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// How long credentials that state no expiry (environment, profile) are kept before the chain
/// is asked again: the AWS SDK's own identity cache uses 15 minutes.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(900);

/// The role session name hopwatch's AssumeRole calls carry (CloudTrail shows it).
pub const SESSION_NAME: &str = "hopwatch";

/// The credentials cache of one (region, role, external id). The SDK is loaded on the first
/// fetch, not before: a config whose hops are never probed loads nothing.
pub(super) fn credentials(settings: &SigV4, counts: Arc<FetchCounts>) -> Arc<Cached<Credentials>> {
    let settings = Arc::new(settings.clone());
    let provider: Arc<OnceCell<SharedCredentialsProvider>> = Arc::new(OnceCell::new());
    Cached::new(
        Method::SigV4,
        DEFAULT_LIFETIME,
        FETCH_TIMEOUT,
        Box::new(move || {
            let (settings, provider) = (settings.clone(), provider.clone());
            Box::pin(async move {
                let provider = provider
                    .get_or_try_init(|| build_provider(&settings))
                    .await?;
                fetch(provider, &settings).await
            })
        }),
        counts,
    )
}

/// The SDK's default chain, or AssumeRole through it. The AWS SDK providers do not cache by
/// themselves (aws-config's `AssumeRoleProvider` calls STS on every `provide_credentials`;
/// caching is the SDK clients' identity cache, which hopwatch's own signing does not go
/// through): [`Cached`] does, and renews ahead of the expiry they state.
async fn build_provider(settings: &SigV4) -> Result<SharedCredentialsProvider, AuthError> {
    let sdk = crate::aws::loader(Some(&settings.region), None)
        .load()
        .await;
    let base = sdk
        .credentials_provider()
        .ok_or_else(|| AuthError::NoCredentials("the SDK has no credentials provider".into()))?;
    let Some(role) = &settings.role_arn else {
        return Ok(base);
    };
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name(SESSION_NAME)
        .region(aws_config::Region::new(settings.region.clone()))
        .configure(&sdk);
    if let Some(id) = &settings.external_id {
        builder = builder.external_id(id.clone());
    }
    Ok(SharedCredentialsProvider::new(builder.build().await))
}

async fn fetch(
    provider: &SharedCredentialsProvider,
    settings: &SigV4,
) -> Result<Fresh<Credentials>, AuthError> {
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| credentials_error(&e, settings))?;
    let lifetime = credentials.expiry().map(|at| {
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    });
    Ok(Fresh {
        value: credentials,
        lifetime,
    })
}

/// What went wrong, in words that hold no secret: the provider's error and its causes (the SDK
/// prints no key, token or signature in them), cut to 300 characters.
fn credentials_error(error: &CredentialsError, settings: &SigV4) -> AuthError {
    let text = aws_smithy_types::error::display::DisplayErrorContext(error).to_string();
    let why: String = text.chars().take(300).collect();
    match (&settings.role_arn, error) {
        (None, _) => AuthError::NoCredentials(why),
        (Some(role), CredentialsError::ProviderError(_)) => AuthError::AssumeRole {
            role: role.clone(),
            refused: why.contains("AccessDenied") || why.contains("not authorized"),
            why,
        },
        (Some(role), _) => AuthError::AssumeRole {
            role: role.clone(),
            why,
            refused: false,
        },
    }
}

/// Signs `request` (its body `body`) at `now` for `settings`' region and service. Returns what
/// it added that must stay secret: the `Authorization` value, the signature, the session token.
pub fn sign<B>(
    request: &mut http::Request<B>,
    body: &[u8],
    credentials: &Credentials,
    settings: &SigV4,
    now: SystemTime,
) -> Result<Sent, AuthError> {
    let failed = |e: &dyn std::fmt::Display| AuthError::Signing(e.to_string());
    let mut signing = SigningSettings::default();
    // Hop-by-hop (RFC 9110 §7.6.1): a proxy in front of the gateway may drop or rewrite it.
    if let Some(excluded) = signing.excluded_headers.as_mut() {
        excluded.push(http::header::CONNECTION.as_str().into());
    }
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&settings.region)
        .name(&settings.service)
        .time(now)
        .settings(signing)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    // Configured secret headers (an API key from the environment) are sent but not signed:
    // the signing crate logs the request it is given at trace level.
    let headers = request
        .headers()
        .iter()
        .filter(|(_, v)| !v.is_sensitive())
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers,
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let (instructions, signature) = sign_request(signable, &params)
        .map_err(|e| failed(&e))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    let mut sent = vec![signature];
    for name in [http::header::AUTHORIZATION.as_str(), "x-amz-security-token"] {
        if let Some(value) = request.headers_mut().get_mut(name) {
            value.set_sensitive(true);
            sent.push(value.to_str().unwrap_or_default().to_string());
        }
    }
    if let Some(token) = credentials.session_token() {
        sent.push(token.to_string());
    }
    Ok(Sent(sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn settings(region: &str, service: &str) -> SigV4 {
        SigV4 {
            region: region.to_string(),
            service: service.to_string(),
            role_arn: None,
            external_id: None,
        }
    }

    /// AWS's SigV4 test suite, `get-vanilla`: the settings hopwatch signs with give AWS's own
    /// published signature for its request (a `User-Agent` and a trace id are sent, unsigned).
    #[test]
    fn the_get_vanilla_vector_of_aws_test_suite() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let mut request = http::Request::get("/")
            .header("host", "example.amazonaws.com")
            .header("user-agent", "hopwatch/test")
            .header(
                "x-amzn-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .header("connection", "close")
            .body(())
            .expect("request");
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let sent = sign(
            &mut request,
            b"",
            &credentials,
            &settings("us-east-1", "service"),
            at,
        )
        .expect("signed");
        let authorization = request.headers()["authorization"].to_str().expect("ascii");
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
        assert!(request.headers()["authorization"].is_sensitive());
        assert!(sent.overlaps(authorization));
        assert!(sent.overlaps("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
    }

    /// What signing costs a probe (`cargo test --lib signing_cost -- --nocapture`): with the
    /// dependencies optimised as in every build here, 16 µs on the project's machine (2026-12-04),
    /// beside the ~95 µs of CPU a probe costs.
    #[test]
    fn signing_cost() {
        let credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let settings = settings("eu-west-1", "execute-api");
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let mut request = http::Request::get("/prod/orders?page=1&size=20")
                .header("host", "abc123.execute-api.eu-west-1.amazonaws.com")
                .header("user-agent", "hopwatch/test")
                .header(
                    "x-amzn-trace-id",
                    "Root=1-00000000-000000000000000000000000",
                )
                .body(())
                .expect("request");
            sign(
                &mut request,
                b"",
                &credentials,
                &settings,
                SystemTime::now(),
            )
            .expect("signed");
        }
        let per = start.elapsed() / n;
        println!("signing one probe: {per:?}");
        assert!(per < Duration::from_millis(2), "{per:?}");
    }
}
