//! Amazon ECR: which hosts are ECR registries, and the token they take.
//!
//! An ECR registry (`<account>.dkr.ecr.<region>.amazonaws.com`, `.amazonaws.com.cn` in China,
//! `dkr.ecr-fips` for FIPS endpoints) accepts Basic authentication with the user `AWS` and a
//! password from `GetAuthorizationToken`: a POST of `{}` to `https://api.ecr.<region>.
//! amazonaws.com/` with `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.
//! GetAuthorizationToken`, signed with AWS Signature Version 4 (`sigv4` below). The token is
//! base64("AWS:<password>") and lasts 12 hours; skiff refreshes it when less than an hour is
//! left. A token obtained elsewhere can be supplied instead (`EcrSpec::preset`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
pub const JSON_1_1: &str = "application/x-amz-json-1.1";
/// A token is renewed once less than this is left (ECR tokens last 12 h).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(3600);

/// AWS access keys (from the environment or skiff's credentials file).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AwsKeys {
    /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), when both are set.
    pub fn from_env() -> Option<AwsKeys> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Some(AwsKeys {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

/// The parts of an ECR registry host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
    pub fips: bool,
    pub china: bool,
}

/// `123456789012.dkr.ecr.eu-west-1.amazonaws.com` → account, region; None for other hosts.
pub fn parse_host(host: &str) -> Option<EcrHost> {
    let host = host.to_ascii_lowercase();
    let (rest, china) = match host.strip_suffix(".amazonaws.com.cn") {
        Some(r) => (r.to_string(), true),
        None => (host.strip_suffix(".amazonaws.com")?.to_string(), false),
    };
    let mut parts = rest.split('.');
    let account = parts.next()?;
    if parts.next()? != "dkr" {
        return None;
    }
    let fips = match parts.next()? {
        "ecr" => false,
        "ecr-fips" => true,
        _ => return None,
    };
    let region = parts.next()?;
    if parts.next().is_some()
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    Some(EcrHost {
        account: account.to_string(),
        region: region.to_string(),
        fips,
        china,
    })
}

/// The GetAuthorizationToken endpoint of a region.
pub fn default_endpoint(region: &str, fips: bool, china: bool) -> String {
    let svc = if fips { "ecr-fips" } else { "api.ecr" };
    let dns = if china {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{svc}.{region}.{dns}/")
}

/// How to get a token for one registry.
#[derive(Debug, Clone)]
pub struct EcrSpec {
    pub region: String,
    /// The GetAuthorizationToken endpoint (normally `default_endpoint`; tests point it at a
    /// local fake).
    pub endpoint: String,
    /// Keys to sign GetAuthorizationToken with; None when only a pre-supplied token is known.
    pub keys: Option<AwsKeys>,
    /// A token supplied in the credentials file.
    pub preset: Option<EcrToken>,
}

/// A decoded ECR authorization token.
#[derive(Clone, PartialEq, Eq)]
pub struct EcrToken {
    pub username: String,
    pub password: String,
    pub expires_at: SystemTime,
    /// When skiff got it (to size the refresh margin of short-lived tokens).
    pub obtained_at: SystemTime,
}

impl fmt::Debug for EcrToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcrToken")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &format_rfc3339(self.expires_at))
            .finish()
    }
}

impl EcrToken {
    /// From `authorizationToken` = base64("AWS:<password>").
    pub fn decode(
        authorization_token: &str,
        expires_at: SystemTime,
        obtained_at: SystemTime,
    ) -> Result<EcrToken, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(authorization_token.trim())
            .map_err(|e| format!("authorization token is not base64: {e}"))?;
        let s = String::from_utf8(raw).map_err(|_| "authorization token is not UTF-8")?;
        let (user, pass) = s
            .split_once(':')
            .ok_or("authorization token is not of the form user:password")?;
        if user.is_empty() || pass.is_empty() {
            return Err("authorization token has an empty user or password".into());
        }
        Ok(EcrToken {
            username: user.to_string(),
            password: pass.to_string(),
            expires_at,
            obtained_at,
        })
    }

    /// Good to use without renewing: more than the refresh margin (an hour, or a quarter of a
    /// shorter lifetime) is left.
    pub fn fresh_at(&self, now: SystemTime) -> bool {
        let lifetime = self
            .expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default();
        let margin = REFRESH_BEFORE.min(lifetime / 4);
        now + margin < self.expires_at
    }

    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// Calls GetAuthorizationToken at `endpoint`. Errors are one-line messages.
pub async fn get_authorization_token(
    http: &reqwest::Client,
    endpoint: &str,
    region: &str,
    keys: &AwsKeys,
    now: SystemTime,
) -> Result<EcrToken, String> {
    let url =
        reqwest::Url::parse(endpoint).map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("endpoint {endpoint} has no host"))?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(format!(
            "refusing endpoint {endpoint}: https only (plain http for loopback test endpoints)"
        ));
    }
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let amz_date = amz_date(now);
    let body = b"{}";
    let mut headers = vec![
        ("content-type".to_string(), JSON_1_1.to_string()),
        ("host".to_string(), host_header),
        ("x-amz-date".to_string(), amz_date.clone()),
        ("x-amz-target".to_string(), TARGET.to_string()),
    ];
    if let Some(t) = &keys.session_token {
        headers.push(("x-amz-security-token".to_string(), t.clone()));
    }
    let signed = sigv4::sign(
        &sigv4::Request {
            method: "POST",
            path: url.path(),
            query: url.query().unwrap_or(""),
            headers: &headers,
            payload: body,
        },
        keys,
        region,
        "ecr",
        &amz_date,
    );
    let mut req = http
        .post(url.clone())
        .header(CONTENT_TYPE, JSON_1_1)
        .header("X-Amz-Date", &amz_date)
        .header("X-Amz-Target", TARGET)
        .header(AUTHORIZATION, &signed.authorization)
        .body(body.to_vec());
    if let Some(t) = &keys.session_token {
        req = req.header("X-Amz-Security-Token", t);
    }
    let resp = req.send().await.map_err(|e| {
        format!(
            "cannot reach {endpoint}: {}",
            super::registry::root_cause(&e)
        )
    })?;
    let status = resp.status();
    let body = super::registry::read_capped(resp, 1 << 20, "GetAuthorizationToken")
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(aws_error_message(&body, status.as_u16()));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        authorization_token: String,
        expires_at: Option<f64>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        authorization_data: Vec<Data>,
    }
    let out: Out = serde_json::from_slice(&body)
        .map_err(|e| format!("bad GetAuthorizationToken response: {e}"))?;
    let d = out
        .authorization_data
        .into_iter()
        .next()
        .ok_or("GetAuthorizationToken returned no authorization data")?;
    let expires_at = match d.expires_at {
        Some(s) if s.is_finite() && s > 0.0 => UNIX_EPOCH + Duration::from_secs_f64(s),
        // Documented lifetime.
        _ => now + Duration::from_secs(12 * 3600),
    };
    EcrToken::decode(&d.authorization_token, expires_at, now)
}

/// `{"__type":"com.amazon...#UnrecognizedClientException","message":"..."}` → "Unrecognized…: …".
fn aws_error_message(body: &[u8], status: u16) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let typ = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string());
    let msg = v["message"].as_str().or(v["Message"].as_str());
    match (typ, msg) {
        (Some(t), Some(m)) => format!("{t}: {m} (HTTP {status})"),
        (Some(t), None) => format!("{t} (HTTP {status})"),
        (None, Some(m)) => format!("{m} (HTTP {status})"),
        (None, None) => format!("HTTP {status}"),
    }
}

/// AWS Signature Version 4 (header form).
pub mod sigv4 {
    use hmac::{Hmac, Mac};
    use sha2::{Digest as _, Sha256};

    use super::AwsKeys;

    pub struct Request<'a> {
        pub method: &'a str,
        /// The URL path as sent (each segment is percent-encoded once more here only for bytes
        /// outside the unreserved set; ECR's is "/").
        pub path: &'a str,
        /// The raw query string, without '?'.
        pub query: &'a str,
        /// Every header to sign, including host and x-amz-date (and x-amz-security-token).
        pub headers: &'a [(String, String)],
        pub payload: &'a [u8],
    }

    /// Every step, so that tests can compare each with the published vectors (only
    /// `authorization` goes on the wire).
    #[allow(dead_code)]
    #[derive(Debug)]
    pub struct Signed {
        pub canonical_request: String,
        pub string_to_sign: String,
        pub signature: String,
        pub authorization: String,
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Percent-encodes all but the unreserved characters (and '/' when `keep_slash`).
    pub fn uri_encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit()
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn canonical_query(q: &str) -> String {
        let mut pairs: Vec<(String, String)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (
                    uri_encode(&percent_decode(k), false),
                    uri_encode(&percent_decode(v), false),
                )
            })
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The signing key: HMAC chain over date, region, service and "aws4_request".
    pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        hmac(&k, b"aws4_request")
    }

    /// Signs `req` at `amz_date` (`YYYYMMDDTHHMMSSZ`, which must also be the request's
    /// x-amz-date header).
    pub fn sign(
        req: &Request<'_>,
        keys: &AwsKeys,
        region: &str,
        service: &str,
        amz_date: &str,
    ) -> Signed {
        // Headers: lower-case names, trimmed values with inner runs of spaces collapsed,
        // sorted by name, repeated names joined with commas.
        let mut hs: Vec<(String, String)> = Vec::new();
        for (name, value) in req.headers {
            let name = name.to_ascii_lowercase();
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            match hs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(&value);
                }
                None => hs.push((name, value)),
            }
        }
        hs.sort_by(|a, b| a.0.cmp(&b.0));
        let signed_headers = hs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical_headers: String = hs.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let path = if req.path.is_empty() { "/" } else { req.path };
        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method,
            uri_encode(&percent_decode(path), true),
            canonical_query(req.query),
            canonical_headers,
            signed_headers,
            sha256_hex(req.payload)
        );
        let date = &amz_date[..8.min(amz_date.len())];
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = signing_key(&keys.secret_access_key, date, region, service);
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            keys.access_key_id
        );
        Signed {
            canonical_request,
            string_to_sign,
            signature,
            authorization,
        }
    }
}

// ---- UTC calendar arithmetic (no date crate) ----

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn utc_parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// `20150830T123600Z`.
pub fn amz_date(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2015-08-30T12:36:00Z`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// RFC 3339 (`2024-05-01T10:00:00Z`, `...T10:00:00.123+02:00`; a space for the T is accepted).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh = num(s.len() - 5..s.len() - 3)? as i64;
            let om = num(s.len() - 2..s.len())? as i64;
            if &rest[3..4] != ":" {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(y, mo, d) * 86400 + h as i64 * 3600 + mi as i64 * 60 + sec as i64 - offset;
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite_keys() -> AwsKeys {
        AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// aws-sig-v4-test-suite `get-vanilla`: `.creq`, `.sts` and `.authz`.
    #[test]
    fn sigv4_get_vanilla() {
        let headers = h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let s = sigv4::sign(
            &sigv4::Request {
                method: "GET",
                path: "/",
                query: "",
                headers: &headers,
                payload: b"",
            },
            &suite_keys(),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            s.canonical_request,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// `get-vanilla-query-order-key-case`: the query is sorted.
    #[test]
    fn sigv4_get_vanilla_query_order_key_case() {
        let headers = h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let s = sigv4::sign(
            &sigv4::Request {
                method: "GET",
                path: "/",
                query: "Param2=value2&Param1=value1",
                headers: &headers,
                payload: b"",
            },
            &suite_keys(),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert!(s
            .canonical_request
            .starts_with("GET\n/\nParam1=value1&Param2=value2\n"));
        assert!(s
            .string_to_sign
            .ends_with("\n816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"));
        assert_eq!(
            s.signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    /// `post-x-www-form-urlencoded`: a signed content type and a body.
    #[test]
    fn sigv4_post_x_www_form_urlencoded() {
        let headers = h(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let s = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                payload: b"Param1=value1",
            },
            &suite_keys(),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            s.canonical_request,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert!(s
            .string_to_sign
            .ends_with("\n42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"));
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn sigv4_header_values_are_trimmed_and_collapsed() {
        let a = h(&[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "  value1   with  spaces "),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let req = |hs| sigv4::Request {
            method: "GET",
            path: "/",
            query: "",
            headers: hs,
            payload: b"",
        };
        let s = sigv4::sign(&req(&a), &suite_keys(), "r", "s", "20150830T123600Z");
        assert!(s
            .canonical_request
            .contains("\nmy-header1:value1 with spaces\n"));
        assert!(s
            .authorization
            .contains("SignedHeaders=host;my-header1;x-amz-date,"));
    }

    #[test]
    fn ecr_hosts() {
        let e = parse_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(e.account, "123456789012");
        assert_eq!(e.region, "eu-west-1");
        assert!(!e.fips && !e.china);
        assert_eq!(
            default_endpoint(&e.region, e.fips, e.china),
            "https://api.ecr.eu-west-1.amazonaws.com/"
        );
        let cn = parse_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert!(cn.china);
        assert_eq!(
            default_endpoint(&cn.region, cn.fips, cn.china),
            "https://api.ecr.cn-north-1.amazonaws.com.cn/"
        );
        let f = parse_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").unwrap();
        assert!(f.fips);
        assert_eq!(
            default_endpoint(&f.region, f.fips, f.china),
            "https://ecr-fips.us-east-1.amazonaws.com/"
        );
        for not in [
            "docker.io",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.us-east-1.evil.amazonaws.com",
            "public.ecr.aws",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:5000",
        ] {
            assert!(parse_host(not).is_none(), "{not}");
        }
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1440938160); // 2015-08-30T12:36:00Z
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(format_rfc3339(t), "2015-08-30T12:36:00Z");
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00Z"), Some(t));
        assert_eq!(parse_rfc3339("2015-08-30T14:36:00.250+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2015-08-30 12:36:00z"), Some(t));
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(951782400)),
            "20000229T000000Z"
        );
        for bad in [
            "2015-08-30",
            "2015-13-30T12:36:00Z",
            "2015-08-30T12:36:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = EcrToken::decode(
            "QVdTOnMzY3JldA==",
            now + Duration::from_secs(12 * 3600),
            now,
        )
        .unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("AWS", "s3cret")
        );
        assert!(t.fresh_at(now + Duration::from_secs(10 * 3600)));
        assert!(!t.fresh_at(now + Duration::from_secs(11 * 3600 + 1)));
        assert!(!t.expired_at(now + Duration::from_secs(11 * 3600 + 1)));
        assert!(t.expired_at(now + Duration::from_secs(12 * 3600)));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(EcrToken::decode("bm9jb2xvbg==", now, now).is_err());
        assert!(EcrToken::decode("!!", now, now).is_err());
    }

    #[test]
    fn aws_errors() {
        assert_eq!(
            aws_error_message(
                br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
                400
            ),
            "UnrecognizedClientException: The security token included in the request is invalid. (HTTP 400)"
        );
        assert_eq!(aws_error_message(b"<html>", 503), "HTTP 503");
    }
}
