# Edge cache for the Cliffhanger serving API (Varnish 7.1 + xkey from varnish-modules).
#
# Tagging: the backend sends `xkey: user-1 series-9 ...`; each word tags the cached object.
# Purging: `PURGE /` with header `xkey-purge: series-9 user-1` (from localhost only) drops every
# object carrying any of those tags; the count comes back in `X-Purged`. Same model as Fastly
# surrogate keys. TTLs come from the backend's Cache-Control (builtin VCL rules still apply).
#
# The recommendation API (serving/): answers to GET /v1/... are cached by URL alone (query string
# sorted; Host and cookies ignored), for the backend's max-age / s-maxage, and served stale for its
# stale-while-revalidate window (beresp.grace) while one background fetch revalidates. Errors (4xx /
# 5xx) are never stored; admin, metrics and probes always pass to the backend. The backend tags every
# answer with `xkey` (u-<keyed user hash> s-<series> e-<episode> c-<cohort> all) for purges.
#
# Playlists (GET /v1/users/<id>/next.m3u8) follow the API rules above: per-user URL, the backend's
# short max-age (2 s) and stale-while-revalidate (10 s) as grace, xkey tags like the JSON answer.
#
# Media chunks (GET /chunks/<episode>/<rendition>/v<version>/<init.mp4 | N.m4s>): shared by every viewer,
# so personalization never enters their cache key: Cookie and Authorization are removed and the query
# string is cut before the lookup (the hash is the path alone). A 200 is kept for a year whatever
# else the origin says (the URL carries the media version, so a chunk never changes; a re-encode is a
# new URL) and any Set-Cookie is dropped. Chunks carry no `all` or user/series tags: a new bundle or a
# feature change must not flush the media cache (their only tag is media-<episode>, for takedowns).
#
# Local runs: cliffhanger.localstack.varnish rewrites the two marked backend lines below; keep the
# `# @backend-host` / `# @backend-port` markers. For several serving replicas it copies the
# `backend default` block once per replica (health-probed) and adds a `directors` director that
# vcl_recv uses (by the user id in the URL: a viewer stays on one replica). Check syntax alone:
# varnishd -C -f default.vcl
vcl 4.1;

import std;
import xkey;

backend default {
    .host = "127.0.0.1";  # @backend-host
    .port = "8080";  # @backend-port
    .connect_timeout = 1s;
    .first_byte_timeout = 5s;
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    # Readiness probe for the local stack and load balancers: answered here, never reaches the backend.
    if (req.url == "/.varnish-health") {
        return (synth(200, "OK"));
    }
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "PURGE not allowed from " + client.ip));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "PURGE needs an xkey-purge header: space-separated keys"));
        }
        set req.http.X-Purged = xkey.purge(req.http.xkey-purge);
        return (synth(200, "Purged"));
    }
    if (req.url ~ "^/chunks/") {
        if (req.method != "GET" && req.method != "HEAD") {
            return (synth(405, "chunks are read-only"));
        }
        # Shared media: nothing about the viewer may split (or bypass) the cache.
        unset req.http.Cookie;
        unset req.http.Authorization;
        set req.url = regsub(req.url, "\?.*$", "");
        return (hash);
    }
    if (req.url ~ "^/(admin|metrics|healthz|readyz|docs|redoc|openapi)") {
        return (pass);
    }
    if (req.url ~ "^/v1/") {
        # The answer depends on the URL only: a cookie must neither split the cache nor force a pass.
        unset req.http.Cookie;
        set req.url = std.querysort(req.url);
    }
    # Everything else: builtin vcl_recv (GET/HEAD cached; Authorization or Cookie requests pass).
}

sub vcl_hash {
    # URL only (not Host): every hostname in front of the API shares one object per answer.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # Errors are not cached: a bad request or a restarting backend must not stick at the edge.
    if (beresp.status >= 400) {
        set beresp.ttl = 1s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Versioned, immutable chunks: a year at the edge, no cookie can make them uncacheable.
    if (bereq.url ~ "^/chunks/") {
        unset beresp.http.Set-Cookie;
        set beresp.ttl = 365d;
        set beresp.grace = 1d;
        return (deliver);
    }
    # No explicit freshness from the backend: do not guess a TTL (Varnish's default_ttl would cache
    # personalised API answers for 2 minutes). Remember "uncacheable" for a while instead.
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # stale-while-revalidate=N -> grace N s: after max-age, serve the stale copy while one background
    # fetch refreshes it (set explicitly rather than relying on the builtin parser of the version).
    if (beresp.http.Cache-Control ~ "stale-while-revalidate=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "^.*stale-while-revalidate=([0-9]+).*$", "\1") + "s", 0s);
    }
    # Otherwise builtin rules: max-age / s-maxage set the TTL; private, no-store, no-cache and
    # Set-Cookie make the object uncacheable.
}

sub vcl_deliver {
    # Cache status for clients and tests; the tags are internal.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
}

sub vcl_synth {
    if (req.method == "PURGE" && req.http.X-Purged) {
        set resp.http.X-Purged = req.http.X-Purged;
    }
}
