"""Test doubles of third-party services (a CDN purge API, an origin), as real loopback HTTP servers
shared by tests and benchmarks. Never used in production code paths."""
