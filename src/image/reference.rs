//! Image references: `[registry[:port]/]repo[:tag][@sha256:...]`, normalised as Docker does.

use std::fmt;

use super::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host[:port] as written (docker.io when absent).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.is_empty() || s.len() > 4096 {
            return Err("empty or overlong image reference".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let valid = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(format!("invalid tag {t:?}"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                    && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                    && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            });
        if !repo_ok {
            return Err(format!("invalid repository name {repository:?}"));
        }
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("invalid registry {registry:?}"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host[:port] that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The reference used in a manifest URL: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// True for registries on the loopback interface, which are spoken to in plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = host_part(&self.registry);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

/// The host without its port; `[::1]:5000` → `::1`.
fn host_part(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());
        let r = Reference::parse("amazon/amazon-ecs-stress:make").unwrap();
        assert_eq!(r.repository, "amazon/amazon-ecs-stress");
        assert_eq!(r.tag.as_deref(), Some("make"));
    }

    #[test]
    fn registry_with_port_and_digest() {
        let d = format!("sha256:{}", "0".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:51670/busybox:latest@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:51670");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.manifest_ref(), d);
        assert!(r.is_loopback());
        assert!(Reference::parse("localhost:5000/a/b")
            .unwrap()
            .is_loopback());
        assert!(Reference::parse("[::1]:5000/a").unwrap().is_loopback());
        assert!(!Reference::parse("10.0.0.1:5000/a").unwrap().is_loopback());
        assert_eq!(
            Reference::parse("localhost:5000/a/b").unwrap().to_string(),
            "localhost:5000/a/b:latest"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse("a:b:c").is_err());
        assert!(Reference::parse("busybox@sha256:short").is_err());
        assert!(Reference::parse("reg.io/../x").is_err());
    }
}
