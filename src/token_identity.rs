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
//!
//! The audiences accepted are the issuer's, plus those the cloud is seen to accept: a
//! token that verifies but for its single audience is remembered, and when the cloud
//! answers a request made with it with anything but `401`, that audience is learned
//! (clusters whose `--api-audiences` differ from the issuer). A Vault or mesh token is
//! refused by the cloud, so its audience is never learned.

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

/// Tokens judged only by their audience, remembered until the cloud answers them.
const MAX_AUDIENCE_CANDIDATES: usize = 32;

pub struct TokenVerifier {
    keys: Option<(IssuerKeys, Policy)>,
    verdicts: VerdictCache,
    fetcher: Option<KeyFetcher>,
    /// (token hash, verdict) of tokens that failed only on their audience.
    audience_candidates: Vec<([u8; 32], Verdict)>,
}

impl TokenVerifier {
    /// `keys`: as stored before a restart, if any; `fetcher`: the thread that refreshes them.
    pub fn new(keys: Option<IssuerKeys>, fetcher: Option<KeyFetcher>) -> TokenVerifier {
        let mut verifier = TokenVerifier {
            keys: None,
            verdicts: VerdictCache::default(),
            fetcher,
            audience_candidates: Vec::new(),
        };
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
            Verdict::Unverified(Reason::WrongAudience { .. }) => {
                self.remember_audience_candidate(token, verdict);
                TokenIdentity::Unverified
            }
            Verdict::Unverified(_) => TokenIdentity::Unverified,
        }
    }

    /// The cloud answered a request made with `token` with something other than `401`.
    pub fn cloud_accepted(&mut self, token: &str) {
        if self.audience_candidates.is_empty() {
            return;
        }
        let hash = token_hash(token);
        let Some(at) = self.audience_candidates.iter().position(|(h, _)| *h == hash) else {
            return;
        };
        let (_, verdict) = self.audience_candidates.swap_remove(at);
        if let Some((keys, policy)) = &mut self.keys
            && policy.learn_from(&verdict)
        {
            log::info!(
                "the cloud accepts tokens of another audience; {} now verify",
                keys.issuer()
            );
        }
    }

    fn remember_audience_candidate(&mut self, token: &str, verdict: Verdict) {
        let hash = token_hash(token);
        if self.audience_candidates.iter().any(|(h, _)| *h == hash) {
            return;
        }
        if self.audience_candidates.len() >= MAX_AUDIENCE_CANDIDATES {
            self.audience_candidates.remove(0);
        }
        self.audience_candidates.push((hash, verdict));
    }

    fn refresh_keys(&self) {
        if let Some(fetcher) = &self.fetcher {
            fetcher.refresh();
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    hash
}
