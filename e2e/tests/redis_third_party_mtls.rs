//! The egress alone originates mutual TLS to a third-party server: a TLS-only redis that
//! demands client certificates. A plain redis-cli talks to the egress's plain port and
//! gets real answers; the same redis-cli straight at redis, without TLS, gets none.

use strait_e2e::redis::{redis_cli, Redis};
use strait_e2e::*;

const REDIS_HOST: &str = "redis.strait.test";

#[test]
fn plain_redis_cli_reaches_mtls_only_redis_through_the_egress() {
    let redis = Redis::start_tls_only(REDIS_HOST);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .listener(Listener::plain("redis-plain", "redis"))
        .route(Route::to("redis", redis.tls_port).mutual_origination(&redis.client_secret, REDIS_HOST));
    let egress = Gateway::start(Role::Egress, dir.path(), &config.toml());
    let plain_port = egress.port("redis-plain");

    let (ok, out) = redis_cli(plain_port, &["SET", "foo", "bar"]);
    assert!(ok && out.trim() == "OK", "SET through the egress: {out}\negress log:\n{}\nredis log:\n{}", egress.proc.output(), redis.proc.output());
    let (ok, out) = redis_cli(plain_port, &["GET", "foo"]);
    assert!(ok && out.trim() == "bar", "GET through the egress: {out}");

    // Read back directly over redis's own mTLS, bypassing the egress.
    let (ok, out) = redis.direct_tls_cli(&["GET", "foo"]);
    assert!(ok && out.trim() == "bar", "direct TLS GET: {out}\nredis log:\n{}", redis.proc.output());

    let line = egress.wait_for_access_line(&["listener=redis-plain", "route=redis", "outcome=closed"]);
    assert!(line.contains(&format!("upstream=127.0.0.1:{}", redis.tls_port)), "{line}");

    // Plaintext straight to the TLS port fails (redis resets it): it only speaks mTLS.
    for args in [&["GET", "foo"][..], &["SET", "foo", "plaintext"]] {
        let (ok, out) = redis_cli(redis.tls_port, args);
        assert!(!ok, "plaintext {args:?} straight to the TLS port succeeded: {out}");
        assert!(!out.contains("bar") && !out.contains("OK"), "plaintext {args:?} got an answer: {out}");
    }
    let (_, out) = redis.direct_tls_cli(&["GET", "foo"]);
    assert_eq!(out.trim(), "bar", "the plaintext SET must not have landed");
}
