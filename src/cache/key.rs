//! Request classification and cache keys: which GETs are cacheable reads, which are watches,
//! which writes' answers the cache learns from, and the keys that keep identities, selectors,
//! pages and representations apart.

use std::fmt::{self, Write};

use super::list::ObjectMeta;
use super::wire::Wire;

/// Query parameters that never change the answer's content (they change when or how fast).
const IGNORED_PARAMS: &[&str] = &[
    "resourceVersion",
    "resourceVersionMatch",
    "timeout",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "pretty",
];

/// Parameters a watch may carry and still be served/updated as its list scope.
const WATCH_PARAMS: &[&str] =
    &["watch", "labelSelector", "fieldSelector", "sendInitialEvents", "limit"];

/// Subresources that stream or tunnel rather than answer a document: never cached. All but
/// `log` are long-running (kube-apiserver's term); a log only when followed.
pub const STREAMING_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];

/// Subresources of a namespace object (`/api/v1/namespaces/<name>/<sub>`), after kube's resolver.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The answer's representation, as negotiated by the Accept header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Representation {
    Json,
    Table,
    PartialMetadata,
    Protobuf,
    ApiDiscoveryV2,
    /// Anything else, keyed by the exact Accept value so it is only replayed to the same ask.
    Other(String),
}

impl Representation {
    /// Normalizes an Accept value by its first media range (the one the apiserver honours first).
    pub fn from_accept(accept: Option<&str>) -> Representation {
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
            return Representation::Json;
        };
        let first = accept.split(',').next().unwrap_or_default();
        let mut parts = first.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
            .filter(|(k, _)| k != "charset" && k != "q")
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let json = matches!(media_type.as_str(), "application/json" | "*/*" | "application/*");
        let meta_v1 = param("g") == Some("meta.k8s.io") && param("v") == Some("v1");
        match (json, param("as")) {
            (true, None) if params.is_empty() => Representation::Json,
            (true, Some("Table")) if meta_v1 => Representation::Table,
            (true, Some("PartialObjectMetadata" | "PartialObjectMetadataList")) if meta_v1 => {
                Representation::PartialMetadata
            }
            (true, Some("APIGroupDiscoveryList"))
                if param("g") == Some("apidiscovery.k8s.io") && param("v") == Some("v2") =>
            {
                Representation::ApiDiscoveryV2
            }
            (false, None)
                if media_type == "application/vnd.kubernetes.protobuf" && params.is_empty() =>
            {
                Representation::Protobuf
            }
            _ => Representation::Other(accept.to_string()),
        }
    }

    pub fn is_json(&self) -> bool {
        *self == Representation::Json
    }

    /// Whether a request for this representation with `accept` would also take plain JSON
    /// (kubelet and kube-proxy ask `application/vnd.kubernetes.protobuf,application/json`):
    /// then a JSON answer cached earlier may serve it offline.
    fn falls_back_to_json(&self, accept: Option<&str>) -> bool {
        *self == Representation::Protobuf
            && accept
                .unwrap_or_default()
                .split(',')
                .skip(1)
                .any(|range| Representation::from_accept(Some(range)) == Representation::Json)
    }
}

impl fmt::Display for Representation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Representation::Json => f.write_str("json"),
            Representation::Table => f.write_str("table"),
            Representation::PartialMetadata => f.write_str("partial-metadata"),
            Representation::Protobuf => f.write_str("protobuf"),
            Representation::ApiDiscoveryV2 => f.write_str("apidiscovery-v2"),
            Representation::Other(accept) => write!(f, "other:{accept}"),
        }
    }
}

/// What a request's `Accept` asks for: the representation, and whether JSON would do too.
struct Asked {
    representation: Representation,
    json_fallback: bool,
}

impl Asked {
    fn from_accept(accept: Option<&str>) -> Asked {
        let representation = Representation::from_accept(accept);
        let json_fallback = representation.falls_back_to_json(accept);
        Asked { representation, json_fallback }
    }
}

/// What the reactor should do with a request, cache-wise.
#[derive(Clone, Debug)]
pub enum Classified {
    Read(ReadKey),
    Watch(WatchRequest),
    Uncacheable,
}

/// A cacheable GET: identity + path + normalized query + representation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadKey {
    identity: String,
    path: String,
    query: String,
    representation: Representation,
    /// For /debug/cache: "pods", "apps/deployments", "discovery".
    resource: String,
    /// Set for a JSON or protobuf collection read without `continue` and with no parameter beyond
    /// selectors and `limit`: such a read can be answered from the scope's complete list.
    scope: Option<ListScope>,
    /// The client accepts JSON too (`Representation::falls_back_to_json`).
    json_fallback: bool,
}

impl ReadKey {
    /// The key under which this exact answer is stored.
    pub(crate) fn store_key(&self) -> String {
        entry_key(&self.identity, &self.path, &self.query, &self.representation)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads one named object (or a subresource of it), not a collection or discovery.
    pub fn names_object(&self) -> bool {
        ResourcePath::parse(&self.path).is_some_and(|resource| resource.name.is_some())
    }

    pub fn query(&self) -> &str {
        &self.query
    }

    pub fn representation(&self) -> &Representation {
        &self.representation
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The complete-list scope this read belongs to, when it can be answered by one.
    pub fn scope(&self) -> Option<&ListScope> {
        self.scope.as_ref()
    }

    /// The same read in JSON, for a protobuf read whose client accepts JSON too: offline, a
    /// JSON answer cached before (by an older release, or with `--modify-request-accept`)
    /// serves it when no protobuf one is cached.
    pub fn json_fallback(&self) -> Option<ReadKey> {
        self.json_fallback.then(|| ReadKey {
            representation: Representation::Json,
            scope: self.scope.as_ref().map(ListScope::as_json),
            json_fallback: false,
            ..self.clone()
        })
    }

    /// The key a TokenRequest's `201` answer is stored under: the asking identity, the
    /// request's canonical text (`TokenRequestKey::canonical`) and the representation it
    /// accepts. Its path is no request path (`tokenrequest:` prefix), so no read, list or
    /// write of an object ever matches it; /debug/cache counts it under
    /// `serviceaccounts/token` and never shows the key.
    pub fn token_request(identity: &str, canonical: &str, accept: Option<&str>) -> ReadKey {
        ReadKey {
            identity: identity.to_string(),
            path: format!("tokenrequest:{canonical}"),
            query: String::new(),
            representation: Representation::from_accept(accept),
            resource: "serviceaccounts/token".to_string(),
            scope: None,
            json_fallback: false,
        }
    }
}

/// A GET with watch=true on a resource collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    pub scope: ListScope,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true`: ADDED for the current state, then a BOOKMARK marking its end.
    pub send_initial_events: bool,
    /// The client accepts JSON too (`Representation::falls_back_to_json`).
    json_fallback: bool,
}

impl WatchRequest {
    /// The same watch in JSON, for a protobuf watch whose client accepts JSON too (see
    /// `ReadKey::json_fallback`; client-go decodes a watch by its answer's Content-Type).
    pub fn json_fallback(&self) -> Option<WatchRequest> {
        self.json_fallback.then(|| WatchRequest {
            scope: self.scope.as_json(),
            json_fallback: false,
            ..self.clone()
        })
    }
}

/// The set of objects a list or watch covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListScope {
    identity: String,
    /// "/api/v1" or "/apis/<group>/<version>".
    api_prefix: String,
    namespace: Option<String>,
    resource: String,
    label_selector: String,
    field_selector: String,
    representation: Representation,
}

impl ListScope {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The collection path, e.g. `/api/v1/namespaces/default/pods`.
    pub fn path(&self) -> String {
        collection_path(&self.api_prefix, self.namespace.as_deref(), &self.resource)
    }

    pub fn label_selector(&self) -> &str {
        &self.label_selector
    }

    pub fn field_selector(&self) -> &str {
        &self.field_selector
    }

    pub fn representation(&self) -> &Representation {
        &self.representation
    }

    fn as_json(&self) -> ListScope {
        ListScope { representation: Representation::Json, ..self.clone() }
    }

    /// The encoding of the scope's decomposed lists, which watches keep current: JSON and
    /// protobuf scopes have one, other representations are stored as answered.
    pub fn wire(&self) -> Option<Wire> {
        Wire::of_representation(&self.representation)
    }

    /// A DELETED event in a filtered watch may only mean "no longer matches".
    pub fn has_selectors(&self) -> bool {
        !self.label_selector.is_empty() || !self.field_selector.is_empty()
    }

    /// "pods", "apps/deployments": the resource label used by /debug/cache.
    pub fn resource_label(&self) -> String {
        resource_label(&self.api_prefix, &self.resource, None)
    }

    pub(crate) fn store_key(&self) -> String {
        format!(
            "{}:{}\n{}\nl={}\nf={}\n{}",
            self.identity.len(),
            self.identity,
            self.path(),
            self.label_selector,
            self.field_selector,
            self.representation
        )
    }

    /// Store key of the plain GET of one object of this collection (no query, the scope's
    /// representation: its watch events are that GET's answer).
    pub(crate) fn object_key(&self, namespace: &str, name: &str) -> String {
        let namespace = Some(namespace).filter(|ns| !ns.is_empty());
        let path =
            format!("{}/{name}", collection_path(&self.api_prefix, namespace, &self.resource));
        entry_key(&self.identity, &path, "", &self.representation)
    }
}

/// What a write did to its object, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMethod {
    /// The answer says whether the object is gone or still terminating.
    Delete,
}

/// A write to one object: how, and which object (any identity's cached reads of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectWrite {
    method: WriteMethod,
    api_prefix: String,
    namespace: Option<String>,
    resource: String,
    name: String,
}

impl ObjectWrite {
    pub fn method(&self) -> WriteMethod {
        self.method
    }

    /// The object's path, e.g. `/api/v1/namespaces/default/pods/web-1`.
    pub fn path(&self) -> String {
        let collection =
            collection_path(&self.api_prefix, self.namespace.as_deref(), &self.resource);
        format!("{collection}/{}", self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// "" for a cluster-scoped object, as in its `metadata`.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// Whether an answer's object `meta` is the object written (and not, say, another one a
    /// mistaken cloud answered).
    pub fn is_about(&self, meta: &ObjectMeta) -> bool {
        meta.name == self.name() && meta.namespace == self.namespace()
    }

    /// The object's key in a decomposed list (`ObjectMeta::item_key`).
    pub(crate) fn item_key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name)
    }

    /// "pods", "apps/deployments": the resource label of the object's cached GET.
    pub(crate) fn resource_label(&self) -> String {
        resource_label(&self.api_prefix, &self.resource, None)
    }

    /// The collections whose lists hold the object: its namespace's and the all-namespaces one.
    fn collection_paths(&self) -> Vec<String> {
        let all = collection_path(&self.api_prefix, None, &self.resource);
        match &self.namespace {
            Some(ns) => vec![collection_path(&self.api_prefix, Some(ns), &self.resource), all],
            None => vec![all],
        }
    }

    /// Text that every stored key of a read of the object or of a list of its collections
    /// contains, whatever the identity: a store can pre-filter its keys with these, then
    /// `reads_object` and `lists_collection` decide.
    pub(crate) fn key_needles(&self) -> Vec<String> {
        self.collection_paths().iter().map(|path| format!("\n{path}")).collect()
    }

    /// Whether the exact entry `key` is a read of the object: any identity, query,
    /// representation or subresource.
    pub(crate) fn reads_object(&self, key: &str) -> bool {
        let resource = identity_and_path(key).and_then(|(_, path)| ResourcePath::parse(path));
        resource.is_some_and(|r| {
            !r.legacy_watch
                && r.api_prefix == self.api_prefix
                && r.namespace == self.namespace.as_deref()
                && r.resource == self.resource
                && r.name == Some(self.name.as_str())
        })
    }

    /// The identity whose plain JSON GET of the object `key` is (the answer a newer state of
    /// the object replaces), if it is one.
    pub(crate) fn plain_get_identity<'k>(&self, key: &'k str) -> Option<&'k str> {
        let (identity, _) = identity_and_path(key)?;
        (key == entry_key(identity, &self.path(), "", &Representation::Json)).then_some(identity)
    }

    /// Whether the list `scope` is one of the object's collections, any identity or selector.
    pub(crate) fn lists_collection(&self, scope: &str) -> bool {
        identity_and_path(scope)
            .is_some_and(|(_, path)| self.collection_paths().iter().any(|c| c == path))
    }
}

/// The identity and request path a stored key (`entry_key`, `ListScope::store_key`) starts with.
fn identity_and_path(key: &str) -> Option<(&str, &str)> {
    let (length, rest) = key.split_once(':')?;
    let identity = rest.get(..length.parse::<usize>().ok()?)?;
    let after_identity = rest.get(identity.len()..)?.strip_prefix('\n')?;
    let path = after_identity.split('\n').next()?;
    Some((identity, path))
}

fn entry_key(identity: &str, path: &str, query: &str, representation: &Representation) -> String {
    // The identity is length-prefixed so no identity can forge another's key prefix. Keys
    // are built per request: one allocation, sized for all but an `other:` representation.
    let mut key = String::with_capacity(identity.len() + path.len() + query.len() + 40);
    // Formatting into a String cannot fail.
    let _ = write!(key, "{}:{identity}\n{path}\n{query}\n{representation}", identity.len());
    key
}

fn collection_path(api_prefix: &str, namespace: Option<&str>, resource: &str) -> String {
    match namespace {
        Some(ns) => concat(&[api_prefix, "/namespaces/", ns, "/", resource]),
        None => concat(&[api_prefix, "/", resource]),
    }
}

/// `parts` joined, in one allocation of the right size (paths are built per request).
fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    parts.iter().for_each(|part| joined.push_str(part));
    joined
}

fn resource_label(api_prefix: &str, resource: &str, subresource: Option<&str>) -> String {
    let group = api_prefix
        .strip_prefix("/apis/")
        .and_then(|gv| gv.split('/').next())
        .map(|g| format!("{g}/"))
        .unwrap_or_default();
    match subresource {
        Some(sub) => format!("{group}{resource}/{sub}"),
        None => format!("{group}{resource}"),
    }
}

/// Decides what a request is for the cache. See the module header.
pub fn classify(identity: &str, method: &str, target: &str, accept: Option<&str>) -> Classified {
    if method != "GET" {
        return Classified::Uncacheable;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = Params::parse(query);
    let asked = Asked::from_accept(accept);
    if is_discovery(path) {
        if params.is_watch() {
            return Classified::Uncacheable;
        }
        return Classified::Read(ReadKey {
            identity: identity.to_string(),
            path: path.to_string(),
            query: params.normalized(),
            representation: asked.representation,
            resource: "discovery".to_string(),
            scope: None,
            json_fallback: asked.json_fallback,
        });
    }
    let Some(resource) = ResourcePath::parse(path) else {
        return Classified::Uncacheable;
    };
    if resource.legacy_watch || params.is_watch() {
        return classify_watch(identity, &resource, &params, asked);
    }
    Classified::Read(resource.read_key(identity, &params, asked))
}

/// Which writes' answers the cache learns from: a DELETE of one object. Not a dry run (it
/// changed nothing). Not a DELETE of a collection: its answer lists what it deleted, but some
/// of those may only be terminating and lists filtered by other selectors cannot be judged
/// from it; leaving the cache alone is the simplest correct choice (the next read online
/// refreshes it).
pub fn classify_write(method: &str, target: &str) -> Option<ObjectWrite> {
    if method != "DELETE" {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if Params::parse(query).get("dryRun").is_some() {
        return None;
    }
    let resource = ResourcePath::parse(path)?;
    if resource.legacy_watch || resource.subresource.is_some() {
        return None;
    }
    Some(ObjectWrite {
        method: WriteMethod::Delete,
        name: resource.name?.to_string(),
        api_prefix: resource.api_prefix.to_string(),
        namespace: resource.namespace.map(str::to_string),
        resource: resource.resource.to_string(),
    })
}

fn classify_watch(
    identity: &str,
    resource: &ResourcePath,
    params: &Params,
    Asked { representation, json_fallback }: Asked,
) -> Classified {
    let watchable = resource.name.is_none() && params.only_has(WATCH_PARAMS);
    if !watchable {
        return Classified::Uncacheable;
    }
    Classified::Watch(WatchRequest {
        scope: resource.scope(identity, params, representation),
        resource_version: params.get("resourceVersion").map(str::to_string),
        timeout_seconds: params.get("timeoutSeconds").and_then(|t| t.parse().ok()),
        allow_bookmarks: params.get("allowWatchBookmarks").is_some_and(parse_bool),
        send_initial_events: params.get("sendInitialEvents").is_some_and(parse_bool),
        json_fallback,
    })
}

/// Go's strconv.ParseBool truths, which the apiserver uses for query booleans.
fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn is_discovery(path: &str) -> bool {
    let Some(segments) = Segments::of(path) else { return false };
    matches!(
        segments.as_slice(),
        ["api"]
            | ["apis"]
            | ["version"]
            | ["api", _]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", "v2"]
            | ["openapi", "v3", ..]
    )
}

/// A resource URL split the way kube-apiserver's RequestInfo resolver splits it; the parts
/// borrow from the path.
struct ResourcePath<'a> {
    api_prefix: &'a str,
    legacy_watch: bool,
    namespace: Option<&'a str>,
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

/// The `/`-separated segments of a request path, without allocating (paths are split per
/// request). None for an empty segment or more than a resource URL can have.
struct Segments<'a> {
    parts: [&'a str; Segments::MAX],
    count: usize,
}

impl<'a> Segments<'a> {
    /// `/apis/g/v/watch/namespaces/ns/r/name/sub`: the most a resource URL has.
    const MAX: usize = 9;

    fn of(path: &'a str) -> Option<Segments<'a>> {
        let mut segments = Segments { parts: [""; Segments::MAX], count: 0 };
        for segment in path.strip_prefix('/')?.split('/') {
            if segment.is_empty() || segments.count == Segments::MAX {
                return None;
            }
            segments.parts[segments.count] = segment;
            segments.count += 1;
        }
        Some(segments)
    }

    fn as_slice(&self) -> &[&'a str] {
        &self.parts[..self.count]
    }
}

impl<'a> ResourcePath<'a> {
    fn parse(path: &'a str) -> Option<ResourcePath<'a>> {
        let segments = Segments::of(path)?;
        let segments = segments.as_slice();
        let (prefix_segments, mut rest) = match segments {
            ["api", _, rest @ ..] => (2, rest),
            ["apis", _, _, rest @ ..] => (3, rest),
            _ => return None,
        };
        let prefix_len = segments[..prefix_segments].iter().map(|s| s.len() + 1).sum();
        let api_prefix = path.get(..prefix_len)?;
        let legacy_watch = rest.first() == Some(&"watch");
        if legacy_watch {
            rest = &rest[1..];
        }
        let mut namespace = None;
        if let ["namespaces", ns, next, ..] = rest
            && !NAMESPACE_SUBRESOURCES.contains(next)
        {
            namespace = Some(*ns);
            rest = &rest[2..];
        }
        let (resource, name, subresource) = match rest {
            [resource] => (resource, None, None),
            [resource, name] => (resource, Some(name), None),
            [resource, name, sub] if !STREAMING_SUBRESOURCES.contains(sub) => {
                (resource, Some(name), Some(sub))
            }
            _ => return None,
        };
        if *resource == "proxy" || (legacy_watch && subresource.is_some()) {
            return None;
        }
        Some(ResourcePath {
            api_prefix,
            legacy_watch,
            namespace,
            resource,
            name: name.copied(),
            subresource: subresource.copied(),
        })
    }

    fn path(&self) -> String {
        let mut path = collection_path(self.api_prefix, self.namespace, self.resource);
        for segment in [self.name, self.subresource].into_iter().flatten() {
            path.push('/');
            path.push_str(segment);
        }
        path
    }

    fn scope(&self, identity: &str, params: &Params, representation: Representation) -> ListScope {
        ListScope {
            identity: identity.to_string(),
            api_prefix: self.api_prefix.to_string(),
            namespace: self.namespace.map(str::to_string),
            resource: self.resource.to_string(),
            label_selector: params.get("labelSelector").unwrap_or_default().to_string(),
            field_selector: params.get("fieldSelector").unwrap_or_default().to_string(),
            representation,
        }
    }

    fn read_key(
        &self,
        identity: &str,
        params: &Params,
        Asked { representation, json_fallback }: Asked,
    ) -> ReadKey {
        let whole_list = self.name.is_none()
            && Wire::of_representation(&representation).is_some()
            && params.only_has(&["labelSelector", "fieldSelector", "limit"]);
        ReadKey {
            identity: identity.to_string(),
            path: self.path(),
            query: params.normalized(),
            scope: whole_list.then(|| self.scope(identity, params, representation.clone())),
            representation,
            resource: resource_label(self.api_prefix, self.resource, self.subresource),
            json_fallback,
        }
    }
}

/// Raw `name=value` pairs of a query string (percent-encoding untouched).
struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(query: &'a str) -> Params<'a> {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        Params { pairs }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn is_watch(&self) -> bool {
        self.get("watch").is_some_and(parse_bool)
    }

    /// The pairs that change the answer: ignored ones (and `watch=false`) dropped, rest sorted.
    fn relevant(&self) -> Vec<(&'a str, &'a str)> {
        let mut pairs: Vec<_> = self
            .pairs
            .iter()
            .filter(|(n, _)| !IGNORED_PARAMS.contains(n) && *n != "watch")
            .copied()
            .collect();
        pairs.sort_unstable();
        pairs
    }

    fn normalized(&self) -> String {
        let pairs: Vec<String> = self.relevant().iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("&")
    }

    fn only_has(&self, allowed: &[&str]) -> bool {
        self.relevant().iter().all(|(n, _)| allowed.contains(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(target: &str, accept: Option<&str>) -> ReadKey {
        match classify("cn:kubelet", "GET", target, accept) {
            Classified::Read(key) => key,
            other => panic!("{target}: expected a read, got {other:?}"),
        }
    }

    fn watch(target: &str) -> WatchRequest {
        match classify("cn:kubelet", "GET", target, None) {
            Classified::Watch(request) => request,
            other => panic!("{target}: expected a watch, got {other:?}"),
        }
    }

    fn uncacheable(method: &str, target: &str) -> bool {
        matches!(classify("cn:kubelet", method, target, None), Classified::Uncacheable)
    }

    #[test]
    fn discovery_paths_are_reads() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/apis/apps/v1?hash=abc",
        ] {
            assert_eq!(read(path, None).resource(), "discovery", "{path}");
        }
    }

    #[test]
    fn writes_streams_and_unknown_paths_are_uncacheable() {
        assert!(uncacheable("POST", "/api/v1/namespaces/a/pods"));
        assert!(uncacheable("DELETE", "/api/v1/namespaces/a/pods/p"));
        for sub in ["log", "exec", "attach", "portforward", "proxy"] {
            assert!(uncacheable("GET", &format!("/api/v1/namespaces/a/pods/p/{sub}")), "{sub}");
        }
        assert!(uncacheable("GET", "/api/v1/namespaces/a/services/s/proxy/x/y"));
        assert!(uncacheable("GET", "/api/v1/proxy/namespaces/a/pods/p"));
        assert!(uncacheable("GET", "/healthz"));
        assert!(uncacheable("GET", "/api/v1/pods/"));
        assert!(uncacheable("GET", "/api/v1/namespaces/a/pods/p?watch=true"));
    }

    #[test]
    fn object_and_subresource_paths() {
        let key = read("/api/v1/namespaces/a/pods/p/status", None);
        assert_eq!(key.path(), "/api/v1/namespaces/a/pods/p/status");
        assert_eq!(key.resource(), "pods/status");
        assert!(key.scope().is_none());
        let ns = read("/api/v1/namespaces/a/status", None);
        assert_eq!(ns.resource(), "namespaces/status");
        let deploy = read("/apis/apps/v1/namespaces/a/deployments/d", None);
        assert_eq!(deploy.resource(), "apps/deployments");
        for object in [
            &key,
            &ns,
            &deploy,
            &read("/api/v1/namespaces/a", None),
            &read("/api/v1/nodes/n", None),
        ] {
            assert!(object.names_object(), "{}", object.path());
        }
        for other in [
            "/api/v1/namespaces/a/pods",
            "/api/v1/pods",
            "/api/v1/namespaces",
            "/api",
            "/apis/apps/v1",
            "/version",
        ] {
            assert!(!read(other, None).names_object(), "{other}");
        }
    }

    #[test]
    fn query_is_normalized() {
        let a =
            read("/api/v1/pods?resourceVersion=0&limit=500&labelSelector=app%3Dx&timeout=5s", None);
        let b = read("/api/v1/pods?labelSelector=app%3Dx&limit=500&pretty=true&watch=false", None);
        assert_eq!(a.query(), "labelSelector=app%3Dx&limit=500");
        assert_eq!(a.store_key(), b.store_key());
        let other = read("/api/v1/pods?labelSelector=app%3Dy&limit=500", None);
        assert_ne!(a.store_key(), other.store_key());
    }

    #[test]
    fn lists_have_scopes_pages_do_not() {
        let whole = read("/api/v1/namespaces/a/pods?limit=500&resourceVersion=0", None);
        let plain = read("/api/v1/namespaces/a/pods", None);
        let scope = whole.scope().expect("scope");
        assert_eq!(Some(scope), plain.scope());
        assert_eq!(scope.path(), "/api/v1/namespaces/a/pods");
        assert!(read("/api/v1/namespaces/a/pods?limit=5&continue=abc", None).scope().is_none());
        assert!(read("/api/v1/pods?includeUninitialized=1", None).scope().is_none());
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert!(read("/api/v1/pods", Some(table)).scope().is_none());
    }

    #[test]
    fn identities_and_representations_separate_keys() {
        let kubelet = read("/api/v1/secrets", None);
        let Classified::Read(pod) = classify("token:ab", "GET", "/api/v1/secrets", None) else {
            panic!("read expected");
        };
        assert_ne!(kubelet.store_key(), pod.store_key());
        assert_ne!(
            kubelet.scope().map(ListScope::store_key),
            pod.scope().map(ListScope::store_key)
        );
        let protobuf =
            read("/api/v1/pods", Some("application/vnd.kubernetes.protobuf,application/json"));
        assert_eq!(*protobuf.representation(), Representation::Protobuf);
        assert_ne!(protobuf.store_key(), read("/api/v1/pods", None).store_key());
    }

    #[test]
    fn accept_normalization() {
        let cases = [
            (None, Representation::Json),
            (Some("application/json"), Representation::Json),
            (Some("application/json, */*"), Representation::Json),
            (Some("*/*"), Representation::Json),
            (Some("application/json;charset=utf-8"), Representation::Json),
            (
                Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
                Representation::Table,
            ),
            (
                Some(
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
                ),
                Representation::PartialMetadata,
            ),
            (Some("application/vnd.kubernetes.protobuf"), Representation::Protobuf),
            (
                Some(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                ),
                Representation::ApiDiscoveryV2,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(Representation::from_accept(accept), expected, "{accept:?}");
        }
        let beta = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(Representation::from_accept(Some(beta)), Representation::Other(beta.into()));
    }

    #[test]
    fn watches_are_recognized() {
        let request = watch(
            "/api/v1/namespaces/a/pods?watch=1&resourceVersion=12&timeoutSeconds=300&allowWatchBookmarks=true&labelSelector=x%3Dy",
        );
        assert_eq!(request.scope.path(), "/api/v1/namespaces/a/pods");
        assert_eq!(request.scope.label_selector(), "x%3Dy");
        assert_eq!(request.resource_version.as_deref(), Some("12"));
        assert_eq!(request.timeout_seconds, Some(300));
        assert!(request.allow_bookmarks);
        assert!(!request.send_initial_events);
        let legacy = watch("/api/v1/watch/namespaces/a/pods");
        assert_eq!(legacy.scope.path(), "/api/v1/namespaces/a/pods");
        assert_eq!(legacy.resource_version, None);
        let list = read("/api/v1/namespaces/a/pods?labelSelector=x%3Dy", None);
        assert_eq!(list.scope(), Some(&request.scope));
    }

    fn delete(target: &str) -> ObjectWrite {
        classify_write("DELETE", target).unwrap_or_else(|| panic!("{target}: not an object write"))
    }

    #[test]
    fn only_deletes_of_one_object_are_writes() {
        let write =
            delete("/api/v1/namespaces/a/pods/p?gracePeriodSeconds=0&propagationPolicy=Foreground");
        assert_eq!(write.method(), WriteMethod::Delete);
        assert_eq!(write.path(), "/api/v1/namespaces/a/pods/p");
        assert_eq!((write.namespace(), write.name()), ("a", "p"));
        assert_eq!(write.item_key(), "a/p");
        let namespace = delete("/api/v1/namespaces/a");
        assert_eq!(namespace.path(), "/api/v1/namespaces/a");
        assert_eq!(namespace.item_key(), "/a");
        assert_eq!(
            delete("/apis/apps/v1/namespaces/a/deployments/d").resource_label(),
            "apps/deployments"
        );
        for (method, target) in [
            ("GET", "/api/v1/namespaces/a/pods/p"),
            ("PATCH", "/api/v1/namespaces/a/pods/p"),
            ("DELETE", "/api/v1/namespaces/a/pods"),
            ("DELETE", "/api/v1/namespaces/a/pods?labelSelector=x%3Dy"),
            ("DELETE", "/api/v1/namespaces/a/pods/p?dryRun=All"),
            ("DELETE", "/api/v1/namespaces/a/pods/p/status"),
            ("DELETE", "/api/v1/watch/namespaces/a/pods/p"),
            ("DELETE", "/api/v1"),
            ("DELETE", "/healthz"),
        ] {
            assert_eq!(classify_write(method, target), None, "{method} {target}");
        }
    }

    #[test]
    fn a_write_finds_every_identitys_reads_of_its_object() {
        let write = delete("/api/v1/namespaces/a/pods/p");
        let reads_object = |identity: &str, target: &str, accept: Option<&str>| {
            let Classified::Read(key) = classify(identity, "GET", target, accept) else {
                panic!("{target}: not a read");
            };
            let key = key.store_key();
            assert!(
                write.key_needles().iter().any(|needle| key.contains(needle.as_str())),
                "{target}: no needle matches {key:?}"
            );
            let plain_get_of = write.plain_get_identity(&key).map(str::to_string);
            (write.reads_object(&key), plain_get_of)
        };
        let table = Some("application/json;as=Table;v=v1;g=meta.k8s.io");
        let of = |identity: &str| Some(identity.to_string());
        assert_eq!(reads_object("cn:x", "/api/v1/namespaces/a/pods/p", None), (true, of("cn:x")));
        assert_eq!(
            reads_object("token:y", "/api/v1/namespaces/a/pods/p?resourceVersion=0", None),
            (true, of("token:y"))
        );
        assert_eq!(reads_object("cn:x", "/api/v1/namespaces/a/pods/p", table), (true, None));
        assert_eq!(reads_object("cn:x", "/api/v1/namespaces/a/pods/p/status", None), (true, None));
        assert_eq!(reads_object("cn:x", "/api/v1/namespaces/a/pods/p2", None), (false, None));
        assert_eq!(reads_object("cn:x", "/api/v1/namespaces/a/pods", None), (false, None));
        // An identity that looks like a path is still only an identity.
        let tricky = "cn:\n/api/v1/namespaces/a/pods/p\n";
        assert_eq!(reads_object(tricky, "/api/v1/namespaces/a/pods/q", None), (false, None));

        let lists = |identity: &str, target: &str| {
            let Classified::Watch(request) = classify(identity, "GET", target, None) else {
                panic!("{target}: not a watch");
            };
            write.lists_collection(&request.scope.store_key())
        };
        assert!(lists("cn:x", "/api/v1/namespaces/a/pods?watch=1"));
        assert!(lists("token:y", "/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dn"));
        assert!(lists("cn:x", "/api/v1/namespaces/a/pods?watch=1&labelSelector=app%3Dx"));
        assert!(!lists("cn:x", "/api/v1/namespaces/b/pods?watch=1"));
        assert!(!lists("cn:x", "/api/v1/namespaces/a/configmaps?watch=1"));
        let namespace = delete("/api/v1/namespaces/a");
        let Classified::Read(pods_in_it) =
            classify("cn:x", "GET", "/api/v1/namespaces/a/pods", None)
        else {
            panic!("not a read");
        };
        assert!(
            !namespace.reads_object(&pods_in_it.store_key()),
            "a namespace's pods are not the namespace"
        );
    }

    #[test]
    fn object_key_matches_a_plain_get() {
        let scope = watch("/api/v1/pods?watch=true").scope;
        assert_eq!(
            scope.object_key("a", "p"),
            read("/api/v1/namespaces/a/pods/p", None).store_key()
        );
        let nodes = watch("/api/v1/nodes?watch=true").scope;
        assert_eq!(
            nodes.object_key("", "n1"),
            read("/api/v1/nodes/n1?resourceVersion=0", None).store_key()
        );
    }
}
