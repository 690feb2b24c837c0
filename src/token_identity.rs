//! Who a bearer token speaks for. A projected service-account token that verifies with
//! the cloud issuer's keys (jwt.rs) speaks for its service account, `sa:<ns>/<name>`: every
//! pod of one account has the same rights, so they share cache entries, and a pod whose
//! token kubelet rotated is still the same client to its cache. Any other token — not a
//! JWT, another issuer, a bad signature, or no keys known yet — keeps an identity of its
//! own (the hash of its bytes, plan.rs), so nothing is shared on an unverified claim.
//!
//! Verdicts are remembered by token hash (`VerdictCache`): the loop does not run an RSA
//! verification per request. A token naming a key we do not hold asks the key fetcher
//! for a refresh (itself rate-limited, issuer_keys.rs).

use crate::issuer_keys::{IssuerKeys, KeyFetcher};
use crate::jwt::{self, Policy, Reason, Verdict, VerdictCache};

/// What a bearer token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIdentity {
    /// Verified: the cache identity of its service account.
    ServiceAccount(String),
    /// Verified but expired: the cloud refuses it, so the cache does too.
    Expired,
    /// Proves nothing.
    Unverified,
}

pub struct TokenVerifier {
    keys: Option<(IssuerKeys, Policy)>,
    verdicts: VerdictCache,
    fetcher: Option<KeyFetcher>,
}

impl TokenVerifier {
    /// `keys`: as stored before a restart, if any; `fetcher`: the thread that refreshes them.
    pub fn new(keys: Option<IssuerKeys>, fetcher: Option<KeyFetcher>) -> TokenVerifier {
        let mut verifier = TokenVerifier { keys: None, verdicts: VerdictCache::default(), fetcher };
        if let Some(keys) = keys {
            verifier.use_keys(keys);
        }
        verifier
    }

    /// New keys from the fetcher. Audiences learned for the same issuer are kept.
    pub fn use_keys(&mut self, keys: IssuerKeys) {
        let policy = match self.keys.take() {
            Some((_, policy)) if policy.issuer() == keys.issuer() => policy,
            _ => Policy::new(keys.issuer()),
        };
        self.keys = Some((keys, policy));
    }

    /// What `token` proves now (`now`: unix seconds).
    pub fn identify(&mut self, token: &str, now: i64) -> TokenIdentity {
        let Some((keys, policy)) = &self.keys else {
            self.refresh_keys();
            return TokenIdentity::Unverified;
        };
        let verdict = self.verdicts.verify_cached(token, keys.keys(), policy, now);
        match &verdict {
            Verdict::ServiceAccount { .. } => jwt::cache_identity(&verdict)
                .map_or(TokenIdentity::Unverified, |identity| {
                    TokenIdentity::ServiceAccount(identity)
                }),
            Verdict::Expired { .. } => TokenIdentity::Expired,
            Verdict::UnknownKey { .. } | Verdict::Unverified(Reason::NoKeys) => {
                self.refresh_keys();
                TokenIdentity::Unverified
            }
            Verdict::Unverified(_) => TokenIdentity::Unverified,
        }
    }

    fn refresh_keys(&self) {
        if let Some(fetcher) = &self.fetcher {
            fetcher.refresh();
        }
    }
}
