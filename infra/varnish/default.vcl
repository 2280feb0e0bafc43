# Edge cache for the Cliffhanger serving API (Varnish 7.1 + xkey from varnish-modules).
#
# Tagging: the backend sends `xkey: user-1 series-9 ...`; each word tags the cached object.
# Purging: `PURGE /` with header `xkey-purge: series-9 user-1` (from localhost only) drops every
# object carrying any of those tags; the count comes back in `X-Purged`. Same model as Fastly
# surrogate keys. TTLs come from the backend's Cache-Control (builtin VCL rules still apply).
#
# Local runs: cliffhanger.localstack.varnish rewrites the two marked backend lines below; keep the
# `# @backend-host` / `# @backend-port` markers. Check syntax alone: varnishd -C -f default.vcl
vcl 4.1;

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
    # Everything else: builtin vcl_recv (GET/HEAD cached; Authorization or Cookie requests pass).
}

sub vcl_backend_response {
    # No explicit freshness from the backend: do not guess a TTL (Varnish's default_ttl would cache
    # personalised API answers for 2 minutes). Remember "uncacheable" for a while instead.
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
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
}

sub vcl_synth {
    if (req.method == "PURGE" && req.http.X-Purged) {
        set resp.http.X-Purged = req.http.X-Purged;
    }
}
