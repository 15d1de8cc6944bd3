//! JWT verification end to end: locally generated keys, key sets from files
//! and from an HTTPS server on 127.0.0.1, and every refusal with its reason.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rampart_identity::{
    JwksError, JwksLocation, JwtError, JwtIssuerConfig, JwtVerifier, KUBERNETES_ISSUER,
};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};
use serde_json::{json, Value};

const ISS: &str = "https://idp.rampart.test";

/// A 2048-bit RSA key made once with `openssl genrsa 2048` for these tests
/// only (ring cannot generate RSA keys). It protects nothing.
const TEST_RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpQIBAAKCAQEA4FBwKt60yoCGwQooHSXxbgyKxf/8ZyaRnT33tt0eSZlbqmjU
WT4jxZi7QPN+RVjm69gPkK/TlXFkcxpMXUXeICpVbNYBHLopKPihM1lk4dxjkLqh
y00fJ6G+A1f8bc1984jg1jPN4EVBQGGae3yPqG3LvmVbaLW+myALz6YN0qWJ6rAG
dkec1Z/fcPcQMQKV1gSPM49vRUp2CTxdZePuKsK6MGzqBG+3zFILfu3kcetce5MH
0KoBUEP1PZeQN7P8sZmXH6wRwP8PmcY2I2Cylut8Jt5qzUuSruS2NmXb00AzQXPu
pqK/bt5sgLYiq0qHkKryZUmomP6J7WzxwB3AOQIDAQABAoIBABY74uJc8M6hrrmz
qAY7nJKr65V0qjAPQp+zZLpbcIUbDlr1yRaPcjxDx0vI1ttI1JrL778HrpFBjBNc
p/UW182YZJ9FFxch3LKS8meElNtOXRAbb64XFt92yL7MGdlIZROenaqdt+pi8vTO
t+FFl3e6aleU9FqMqTf3FTSf4P7f+iRyZ49kYdRyKPkw7HSQCIpHgNUwXCHYfzq/
d/fCdTpJQEx1YAEnZ5xoYLptT6u8xszHZeOIh7IBZP3YyiPso+3xKSfisLXiI+yY
qy8TR8yuTJf+zMQcwkoXifKDkqLYszpuS6w6mzGk9KEjQcq+PDSKexMjXG9BZlh8
neoHGYECgYEA9ySrEdQ+A4Jxxh5KTLhwmToI9qdieFg5etE1V2yV/kvokUrQNbeB
/sV1MPEJEDFIa4hX3sMOTA8mQJ0wJ/FiuMiKTlYI4rP/JahPD8XY1+0tQDSrbR71
tYaWcD1d8SITqoAFb6q1busjqS3HdnQI2+gbMspXVa2RNMKWLyqOOmsCgYEA6FpV
MRgb1iO7cSbHBhea7bNPpozCWdWNyUc2NPrJAupDCwlUVNTVarB6miDjK4qMxbJb
Nn6JnD9/Ke/wjPnBMTUnmIKMxqxqFsLwia+Px7+SXHx4KbRD9NkZx3feGRllrJK2
IyQIxA0uiRLv0X8jIXXazE9X26TkSMwkEIJyYOsCgYEApT1lC5Smqd4Lh/U0pDsl
Pa2p1JBxrBkAxXcffQZi+xVxt8MXlvLM/bSz+DcQYj0xOIR+i7hK1NvELatrSSmB
Yh7jKiEn67uBOoJf6iHUK/quKKGOhHUQv3/vEbhWGSU5lOPnvpOan0CkJTcwh6hp
S+7SUJEs92IHFgmMNJj1Y2UCgYEArXiru/CU78ZTrkHWO10qRScnY2AZxfojVk+9
T8aghnWhwj6f4InaIEJL9oBxOlPBj+P+J2xHjwj1BrllrcrVish1nG5zbezRc9bs
wM77GJWVT0l6aSB1z/q6PWrnvXNxrmsGYqwHg1+YC6zAsXcrIlMcHIdsP8cWzKbk
khLiFCsCgYEAseM7q/PfjJB8AgYLpImW9iJhneCgcvpOxcAtOhQogjMndaL8kG04
I7UM9fYqMmZz7WSjqr05ong/dBAWa/eL8BiJSDgNSOkpmG23SDLTDVZnTz3QU6cP
+b1d/bn7S/iANYjfTfNUBDwawkBNaLG3HkWP8BT0XH9KUcKtF1fweWo=
-----END RSA PRIVATE KEY-----
";

// === keys and tokens ===

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": kid, "x": b64(pair.public_key().as_ref()),
            }),
        }
    }

    fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 65);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
            // No `alg` on purpose: the key type alone must limit its use.
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    fn rs256(kid: &str) -> Self {
        let der = PrivatePkcs1KeyDer::from_pem_slice(TEST_RSA_KEY.as_bytes()).unwrap();
        let pair = RsaKeyPair::from_der(der.secret_pkcs1_der()).unwrap();
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            enc: EncodingKey::from_rsa_pem(TEST_RSA_KEY.as_bytes()).unwrap(),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(&public.n), "e": b64(&public.e),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg, Some(&self.kid), claims)
    }

    /// Signs with this key but writes `alg` and `kid` as given.
    fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        let token = encode(&header, claims, &self.enc).unwrap();
        if alg == self.alg {
            return token;
        }
        // Swap the header after signing: the signature no longer matches,
        // but the verifier must refuse before it gets that far.
        header.alg = alg;
        let head = b64(&serde_json::to_vec(&header).unwrap());
        let rest = token.split_once('.').unwrap().1;
        format!("{head}.{rest}")
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "aud": ["other-service", "rampart"],
        "sub": "alice@example.com",
        "tenant": "acme",
        "roles": ["publisher", "reader"],
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 600,
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn write_jwks(dir: &Path, name: &str, set: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, set.to_string()).unwrap();
    path
}

fn file_issuer(dir: &Path, keys: &[&TestKey]) -> JwtIssuerConfig {
    let path = write_jwks(dir, "jwks.json", &jwks(keys));
    JwtIssuerConfig::new(ISS, ["rampart"], JwksLocation::File(path))
}

async fn reason(v: &JwtVerifier, token: &str) -> &'static str {
    match v.verify(token).await {
        Ok(id) => panic!("token accepted as {id:?}"),
        Err(e) => e.reason(),
    }
}

// === key sets from files ===

#[tokio::test]
async fn good_tokens_are_accepted_for_each_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let (ed, ec, rsa) = (
        TestKey::ed25519("ed-1"),
        TestKey::es256("ec-1"),
        TestKey::rs256("rsa-1"),
    );
    let v = JwtVerifier::new(vec![file_issuer(dir.path(), &[&ed, &ec, &rsa])]).unwrap();
    for key in [&ed, &ec, &rsa] {
        let id = v.verify(&key.sign(&claims())).await.unwrap();
        assert_eq!(id.tenant.as_str(), "acme");
        assert_eq!(id.principal, "alice@example.com");
        assert_eq!(id.roles, ["publisher", "reader"]);
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.expires_at_ms, claims()["exp"].as_u64().unwrap() * 1000);
    }
    // A single audience as a string, and no roles claim at all.
    let mut c = with(claims(), "aud", json!("rampart"));
    c.as_object_mut().unwrap().remove("roles");
    let id = v.verify(&ed.sign(&c)).await.unwrap();
    assert!(id.roles.is_empty());
}

#[tokio::test]
async fn algorithms_are_checked_before_any_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ed, ec) = (TestKey::ed25519("ed-1"), TestKey::es256("ec-1"));
    let mut only_eddsa = file_issuer(dir.path(), &[&ed, &ec]);
    only_eddsa.algorithms = vec!["EdDSA".into()];
    let v = JwtVerifier::new(vec![only_eddsa]).unwrap();

    // Signed ES256 with a key the issuer publishes, but ES256 is not allowed.
    assert_eq!(reason(&v, &ec.sign(&claims())).await, "alg_not_allowed");

    // alg none, written by hand.
    let payload = b64(&serde_json::to_vec(&claims()).unwrap());
    assert_eq!(
        reason(&v, &format!("eyJhbGciOiJub25lIn0.{payload}.")).await,
        "alg_none"
    );

    // HS256 when the issuer has no HMAC secret, including the classic
    // confusion: the issuer's public key used as the HMAC secret.
    let public_x = ed.jwk["x"].as_str().unwrap().as_bytes().to_vec();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("ed-1".into());
    let forged = encode(&h, &claims(), &EncodingKey::from_secret(&public_x)).unwrap();
    assert_eq!(reason(&v, &forged).await, "alg_not_allowed");
}

#[tokio::test]
async fn keys_must_exist_fit_the_algorithm_and_sign() {
    let dir = tempfile::tempdir().unwrap();
    let (ed, ec) = (TestKey::ed25519("ed-1"), TestKey::es256("ec-1"));
    let v = JwtVerifier::new(vec![file_issuer(dir.path(), &[&ed, &ec])]).unwrap();

    // An EdDSA token naming the P-256 key.
    let t = ed.sign_as(Algorithm::EdDSA, Some("ec-1"), &claims());
    assert_eq!(reason(&v, &t).await, "key_alg_mismatch");

    // Flip one byte of the signature, and separately of the payload.
    let good = ed.sign(&claims());
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    raw[10] ^= 0x01;
    assert_eq!(
        reason(&v, &format!("{head}.{}", b64(&raw))).await,
        "bad_signature"
    );
    let evil = b64(&serde_json::to_vec(&with(claims(), "tenant", json!("globex"))).unwrap());
    let parts: Vec<&str> = good.split('.').collect();
    let t = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(reason(&v, &t).await, "bad_signature");

    // A key the issuer never published: the file is re-read once and still
    // does not have it.
    let stranger = TestKey::ed25519("ghost");
    assert_eq!(reason(&v, &stranger.sign(&claims())).await, "unknown_kid");
    // Same kid as a published key, wrong private key.
    let impostor = TestKey::ed25519("ed-1");
    assert_eq!(reason(&v, &impostor.sign(&claims())).await, "bad_signature");
    // No kid: the one key that fits the algorithm is used.
    let t = ed.sign_as(Algorithm::EdDSA, None, &claims());
    assert!(v.verify(&t).await.is_ok());
    assert_eq!(reason(&v, "not.a.jwt").await, "malformed");
}

#[tokio::test]
async fn claims_are_checked_and_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let ed = TestKey::ed25519("ed-1");
    let mut config = file_issuer(dir.path(), &[&ed]);
    config.max_token_lifetime_secs = Some(3600);
    let v = JwtVerifier::new(vec![config]).unwrap();
    let now = now();
    let cases = [
        (
            with(claims(), "iss", json!("https://evil.test")),
            "wrong_issuer",
        ),
        (
            with(claims(), "aud", json!(["somebody-else"])),
            "wrong_audience",
        ),
        (with(claims(), "exp", json!(now - 3600)), "expired"),
        (with(claims(), "nbf", json!(now + 3600)), "not_yet_valid"),
        (
            with(claims(), "exp", json!(now + 7200)),
            "lifetime_too_long",
        ),
        (
            with(claims(), "tenant", json!("Not/A Tenant")),
            "bad_tenant",
        ),
        (with(claims(), "sub", json!(["alice"])), "invalid_claim"),
    ];
    for (c, expected) in cases {
        assert_eq!(reason(&v, &ed.sign(&c)).await, expected, "{c}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tenant");
    assert_eq!(
        v.verify(&ed.sign(&c)).await.unwrap_err(),
        JwtError::MissingClaim {
            claim: "tenant".into()
        }
    );
    c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(reason(&v, &ed.sign(&c)).await, "missing_claim");
    // Within the 30 s leeway.
    let c = with(claims(), "exp", json!(now - 10));
    assert!(v.verify(&ed.sign(&c)).await.is_ok());
}

#[tokio::test]
async fn issuers_keep_their_own_keys() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (TestKey::ed25519("a-1"), TestKey::ed25519("b-1"));
    let a = file_issuer(dir_a.path(), &[&key_a]);
    let mut b = file_issuer(dir_b.path(), &[&key_b]);
    b.issuer = "https://other-idp.test".into();
    b.tenant = Some("globex".into());
    let v = JwtVerifier::new(vec![a, b]).unwrap();

    let c_b = with(claims(), "iss", json!("https://other-idp.test"));
    let id = v.verify(&key_b.sign(&c_b)).await.unwrap();
    assert_eq!(
        (id.tenant.as_str(), id.issuer.as_str()),
        ("globex", "https://other-idp.test")
    );
    // Issuer B's key cannot sign for issuer A.
    assert_eq!(reason(&v, &key_b.sign(&claims())).await, "unknown_kid");
}

#[tokio::test]
async fn hmac_needs_the_dangerous_secret() {
    let dir = tempfile::tempdir().unwrap();
    let ed = TestKey::ed25519("ed-1");
    let secret = dir.path().join("hmac-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut config = file_issuer(dir.path(), &[&ed]);
    config.algorithms = vec!["EdDSA".into(), "HS256".into()];
    config.dangerous_allow_hmac_secret_path = Some(secret);
    let v = JwtVerifier::new(vec![config]).unwrap();

    let hs = |key: &[u8]| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    assert!(v
        .verify(&hs(b"0123456789abcdef0123456789abcdef"))
        .await
        .is_ok());
    assert_eq!(
        reason(&v, &hs(b"0123456789abcdef0123456789abcdeX")).await,
        "bad_signature"
    );
    assert!(v.verify(&ed.sign(&claims())).await.is_ok());
}

#[tokio::test]
async fn file_key_sets_are_reread_on_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TestKey::ed25519("2024"), TestKey::ed25519("2025"));
    let mut config = file_issuer(dir.path(), &[&old]);
    config.jwks_min_refresh_secs = 1;
    let v = JwtVerifier::new(vec![config]).unwrap();
    assert_eq!(reason(&v, &new.sign(&claims())).await, "unknown_kid");

    // The cluster rotates: the new key is written over the file.
    write_jwks(dir.path(), "jwks.json", &jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(v.verify(&new.sign(&claims())).await.is_ok());
    assert!(v.verify(&old.sign(&claims())).await.is_ok());
}

// === Kubernetes service accounts ===

fn service_account_claims(namespace: &str, name: &str) -> Value {
    let now = now();
    json!({
        "aud": ["rampart"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": KUBERNETES_ISSUER,
        "jti": "9a7f2f8e-2d3c-4d2e-9a55-3f2f7c5e1b11",
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": "0b9e5c7e-8a48-4c1e-a3b5-7f4d6c2e9a10"},
            "pod": {"name": format!("{name}-7d9f8"), "uid": "4f1e6c2d-1c9b-4b8a-9e2f-5d3c7b1a0e99"},
            "serviceaccount": {"name": name, "uid": "e2b1c3d4-5f6a-4b7c-8d9e-0f1a2b3c4d5e"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    })
}

#[tokio::test]
async fn kubernetes_service_account_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::rs256("k8s-sa-key");
    let path = write_jwks(dir.path(), "k8s-jwks.json", &jwks(&[&key]));
    let v = JwtVerifier::new(vec![JwtIssuerConfig::kubernetes(
        ["rampart"],
        JwksLocation::File(path.clone()),
    )])
    .unwrap();

    let id = v
        .verify(&key.sign(&service_account_claims("payments", "publisher")))
        .await
        .unwrap();
    assert_eq!(id.tenant.as_str(), "payments");
    assert_eq!(id.principal, "system:serviceaccount:payments:publisher");
    assert!(id.roles.is_empty());
    assert_eq!(id.issuer, KUBERNETES_ISSUER);

    // A token for another audience (e.g. the API server's own) is refused.
    let c = with(
        service_account_claims("payments", "publisher"),
        "aud",
        json!(["https://kubernetes.default.svc.cluster.local"]),
    );
    assert_eq!(reason(&v, &key.sign(&c)).await, "wrong_audience");
    // A legacy secret-based token has no `kubernetes.io` object.
    let mut c = service_account_claims("payments", "publisher");
    c.as_object_mut().unwrap().remove("kubernetes.io");
    assert_eq!(reason(&v, &key.sign(&c)).await, "missing_claim");

    // One fixed tenant for the whole cluster instead of the namespace.
    let mut fixed = JwtIssuerConfig::kubernetes(["rampart"], JwksLocation::File(path));
    fixed.tenant_claim = None;
    fixed.tenant = Some("cluster-east".into());
    let v = JwtVerifier::new(vec![fixed]).unwrap();
    let id = v
        .verify(&key.sign(&service_account_claims("billing", "worker")))
        .await
        .unwrap();
    assert_eq!(id.tenant.as_str(), "cluster-east");
    assert_eq!(id.principal, "system:serviceaccount:billing:worker");
}

// === key sets over HTTPS ===

#[derive(Clone)]
struct Served {
    status: u16,
    body: Bytes,
    /// Send the body chunked, without a content-length.
    chunked: bool,
    delay: Duration,
}

/// An HTTPS server on 127.0.0.1 that serves one key set and counts requests.
struct JwksServer {
    url: String,
    ca_path: PathBuf,
    hits: Arc<AtomicUsize>,
    served: Arc<Mutex<Served>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body of unknown length, so hyper sends it chunked.
struct Chunked(VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

impl JwksServer {
    async fn start(set: &Value) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "rampart test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "jwks test server");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let hits = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Mutex::new(Served {
            status: 200,
            body: Bytes::from(set.to_string()),
            chunked: false,
            delay: Duration::ZERO,
        }));
        let (h, s) = (Arc::clone(&hits), Arc::clone(&served));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, hits, served) = (acceptor.clone(), Arc::clone(&h), Arc::clone(&s));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let reply = served.lock().unwrap().clone();
                        async move {
                            tokio::time::sleep(reply.delay).await;
                            let body: BoxBody<Bytes, Infallible> = if reply.chunked {
                                let chunks =
                                    reply.body.chunks(64 * 1024).map(Bytes::copy_from_slice);
                                Chunked(chunks.collect()).boxed()
                            } else {
                                Full::new(reply.body).boxed()
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(reply.status)
                                    .header("content-type", "application/json")
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("https://127.0.0.1:{}/openid/v1/jwks", addr.port()),
            ca_path,
            hits,
            served,
            _dir: dir,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, change: impl FnOnce(&mut Served)) {
        change(&mut self.served.lock().unwrap());
    }

    fn issuer(&self, min_refresh_secs: u64) -> JwtIssuerConfig {
        let mut c = JwtIssuerConfig::new(ISS, ["rampart"], JwksLocation::Url(self.url.clone()));
        c.jwks_ca_cert_path = Some(self.ca_path.clone());
        c.jwks_min_refresh_secs = min_refresh_secs;
        c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_key_sets_load_once_and_refresh_single_flight() {
    let current = TestKey::ed25519("current");
    let server = JwksServer::start(&jwks(&[&current])).await;
    // The interval must outlast steps (b) to (c); 2 s leaves ample margin.
    let v = Arc::new(JwtVerifier::new(vec![server.issuer(2)]).unwrap());
    assert_eq!(server.hits(), 0, "URL key sets are fetched on first use");

    // (a) Keys load: 20 concurrent first verifications share one fetch.
    server.serve(|s| s.delay = Duration::from_millis(200));
    let token = current.sign(&claims());
    let results = verify_concurrently(&v, &token, 20).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.hits(), 1);

    // (b) Once the interval has passed, an unknown kid refreshes exactly
    // once, however many verifications want it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let ghost = TestKey::ed25519("ghost");
    let results = verify_concurrently(&v, &ghost.sign(&claims()), 20).await;
    assert!(
        results.iter().all(|r| r == &Err(JwtError::UnknownKid)),
        "{results:?}"
    );
    assert_eq!(server.hits(), 2);

    // (c) Another unknown kid within the interval: no fetch at all.
    let ghost2 = TestKey::ed25519("ghost-2");
    assert_eq!(reason(&v, &ghost2.sign(&claims())).await, "unknown_kid");
    assert_eq!(server.hits(), 2);
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.hits(), 2, "known keys never fetch");

    // (d) The issuer rotates in a new key; after the interval the first
    // token signed with it brings it in.
    let next = TestKey::es256("next");
    server.serve(|s| {
        s.delay = Duration::ZERO;
        s.body = Bytes::from(jwks(&[&current, &next]).to_string());
    });
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let id = v.verify(&next.sign(&claims())).await.unwrap();
    assert_eq!(id.tenant.as_str(), "acme");
    assert_eq!(server.hits(), 3);
    assert!(v.verify(&token).await.is_ok());
}

async fn verify_concurrently(
    v: &Arc<JwtVerifier>,
    token: &str,
    n: usize,
) -> Vec<Result<(), JwtError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (v, token, barrier) = (Arc::clone(v), token.to_owned(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                v.verify(&token).await.map(|_| ())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn url_fetch_failures_are_clean_and_keep_old_keys() {
    let key = TestKey::ed25519("k1");
    let server = JwksServer::start(&jwks(&[&key])).await;
    let v = JwtVerifier::new(vec![server.issuer(60)]).unwrap();
    assert!(v.refresh_all().await.is_empty());
    assert_eq!(server.hits(), 1);
    let token = key.sign(&claims());
    assert!(v.verify(&token).await.is_ok());

    // (e) A 500: a clean error, and the cached keys still work.
    server.serve(|s| s.status = 500);
    let failures = v.refresh_all().await;
    assert!(
        matches!(failures.as_slice(), [(iss, JwksError::Status(500))] if iss == ISS),
        "{failures:?}"
    );
    assert!(v.verify(&token).await.is_ok());

    // An oversized body, declared by content-length and sent chunked.
    let huge = Bytes::from(vec![b' '; (1 << 20) + 1]);
    server.serve(|s| {
        s.status = 200;
        s.body = huge;
    });
    let failures = v.refresh_all().await;
    assert!(
        matches!(failures.as_slice(), [(_, JwksError::TooLarge { .. })]),
        "{failures:?}"
    );
    server.serve(|s| s.chunked = true);
    let failures = v.refresh_all().await;
    assert!(
        matches!(failures.as_slice(), [(_, JwksError::TooLarge { .. })]),
        "{failures:?}"
    );
    // Not a key set at all.
    server.serve(|s| {
        s.chunked = false;
        s.body = Bytes::from_static(b"<html>login</html>");
    });
    let failures = v.refresh_all().await;
    assert!(
        matches!(failures.as_slice(), [(_, JwksError::Json(_))]),
        "{failures:?}"
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn url_key_sets_unavailable_on_first_use() {
    let key = TestKey::ed25519("k1");
    let server = JwksServer::start(&jwks(&[&key])).await;
    server.serve(|s| s.status = 500);
    let v = JwtVerifier::new(vec![server.issuer(60)]).unwrap();
    assert_eq!(reason(&v, &key.sign(&claims())).await, "jwks_unavailable");
    // Within the interval: no new fetch, same answer.
    assert_eq!(reason(&v, &key.sign(&claims())).await, "jwks_unavailable");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn url_key_sets_need_a_trusted_certificate() {
    let key = TestKey::ed25519("k1");
    let server = JwksServer::start(&jwks(&[&key])).await;
    let other = JwksServer::start(&jwks(&[&key])).await;
    let mut config = server.issuer(60);
    // Trust another server's CA only.
    config.jwks_ca_cert_path = Some(other.ca_path.clone());
    let v = JwtVerifier::new(vec![config]).unwrap();
    let failures = v.refresh_all().await;
    assert!(
        matches!(failures.as_slice(), [(_, JwksError::Tls(_))]),
        "{failures:?}"
    );
    assert_eq!(server.hits(), 0);
    assert_eq!(reason(&v, &key.sign(&claims())).await, "jwks_unavailable");
}

#[tokio::test]
async fn periodic_refresh_warms_the_cache_and_stops_with_the_verifier() {
    let key = TestKey::ed25519("k1");
    let server = JwksServer::start(&jwks(&[&key])).await;
    let v = Arc::new(JwtVerifier::new(vec![server.issuer(60)]).unwrap());
    let task = v.spawn_refresh_task(Duration::from_secs(1));
    for _ in 0..100 {
        if server.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.hits(), 1, "the first refresh runs at once");
    assert!(v.verify(&key.sign(&claims())).await.is_ok());
    assert_eq!(server.hits(), 1);
    drop(v);
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the task ends once the verifier is gone")
        .unwrap();
}

// === logs ===

/// Collects every event's fields as text, for this thread only.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn log_lines_never_carry_tokens() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&lines)));

    let dir = tempfile::tempdir().unwrap();
    let (ed, ghost) = (TestKey::ed25519("ed-1"), TestKey::ed25519("ghost"));
    let mut set = jwks(&[&ed]);
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}));
    let path = write_jwks(dir.path(), "jwks.json", &set);
    let server = JwksServer::start(&jwks(&[&ed])).await;
    server.serve(|s| s.status = 503);
    let mut url_issuer = server.issuer(60);
    url_issuer.issuer = "https://down.test".into();
    let v = JwtVerifier::new(vec![
        JwtIssuerConfig::new(ISS, ["rampart"], JwksLocation::File(path)),
        url_issuer,
    ])
    .unwrap();

    let good = ed.sign(&claims());
    let (head, _) = good.rsplit_once('.').unwrap();
    let tokens = [
        good.clone(),
        format!("{head}.AAAA"),
        ghost.sign(&claims()),
        ed.sign(&with(claims(), "iss", json!("https://down.test"))),
        format!("eyJhbGciOiJub25lIn0.{}.", good.split('.').nth(1).unwrap()),
    ];
    for t in &tokens {
        let _ = v.verify(t).await;
    }

    let lines = lines.lock().unwrap();
    let all = lines.join("\n");
    // The skipped key, the file re-read and the failed fetch were logged...
    assert!(all.contains("skipping JWKS key"), "{all}");
    assert!(all.contains("JWKS refreshed"), "{all}");
    assert!(all.contains("JWKS refresh failed"), "{all}");
    // ...and no part of any token was.
    for t in &tokens {
        for part in t.split('.').filter(|p| p.len() > 8) {
            assert!(!all.contains(part), "a log line carries a token part");
        }
    }
}
