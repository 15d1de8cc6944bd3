//! JWT (OIDC, Kubernetes service accounts) and client-certificate identities
//! end to end.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rampart_client::{AdminClient, Client, ClientConfig, ClientError, Transport};
use rampart_identity::{JwksLocation, JwtIssuerConfig, Secret, KUBERNETES_ISSUER};
use rampart_server::MtlsIdentity;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::common::*;

const ISS: &str = "https://idp.example";

fn code<T>(r: Result<T, ClientError>) -> Option<u16> {
    r.err().and_then(|e| e.code()).map(|c| c.0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// === JWT signing keys ===

/// A signing key and its public JWK.
struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn ed25519(kid: &'static str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            kid,
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": kid, "x": b64(pair.public_key().as_ref()),
            }),
        }
    }

    fn es256(kid: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        assert_eq!((point.len(), point[0]), (65, 0x04));
        Self {
            kid,
            alg: Algorithm::ES256,
            enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(self.kid, claims)
    }

    fn sign_with_kid(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }

    /// Writes a key set holding this key's public JWK.
    fn write_jwks(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("jwks-{}.json", self.kid));
        let set = json!({ "keys": [self.jwk.clone()] });
        std::fs::write(&path, set.to_string()).unwrap();
        path
    }
}

/// A client config trusting the server's dev CA that logs in with `jwt`.
fn jwt_config(s: &TestServer, jwt: String) -> ClientConfig {
    let mut cfg = ClientConfig::default().with_ca(&s.ca);
    cfg.jwt = Some(Secret::new(jwt));
    cfg
}

/// The connect error code for a JWT, or a panic if it was accepted.
async fn refused(s: &TestServer, t: Transport, what: &str, jwt: String) -> Option<u16> {
    match Client::connect(&s.url(t), jwt_config(s, jwt)).await {
        Ok(c) => panic!(
            "{what}: token accepted as {}/{}",
            c.tenant().as_str(),
            c.principal()
        ),
        Err(e) => {
            assert!(
                matches!(e, ClientError::Nack { .. }),
                "{what}: refused in AUTH, not before: {e}"
            );
            e.code().map(|c| c.0)
        }
    }
}

async fn next_payload(sub: &mut rampart_client::Subscription) -> Vec<u8> {
    next_event(sub, 10).await.payload.to_vec()
}

fn oidc_claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "aud": ["rampart"],
        "sub": "alice",
        "tenant": "acme",
        "roles": ["user"],
        "iat": now,
        "exp": now + 300,
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

async fn jwt_login_over_the_wire(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::ed25519("idp-key-1");
    let jwks = key.write_jwks(dir.path());
    let s = start_with(move |c| {
        // Many refusals from one address on purpose: no lockout here (the
        // lockout has tests of its own, in limits.rs).
        c.auth_lockout_threshold = 1000;
        // The tenant claim is left at its default, `tenant`.
        let mut issuer = JwtIssuerConfig::new(ISS, ["rampart"], JwksLocation::File(jwks));
        issuer.roles_claim = "roles".into();
        c.jwt_issuers = vec![issuer];
    })
    .await;

    // A good token: tenant and principal come from its claims.
    let claims = oidc_claims();
    let good = key.sign(&claims);
    let alice = Client::connect(&s.url(t), jwt_config(&s, good.clone()))
        .await
        .expect("a good JWT logs in");
    assert_eq!(alice.tenant().as_str(), "acme");
    assert_eq!(alice.principal(), "alice");
    let exp_ms = claims["exp"].as_u64().unwrap() * 1000;
    assert_eq!(
        alice.expires_at_ms(),
        Some(exp_ms),
        "expiry is the JWT's exp"
    );
    let mut sub = alice.subscribe("acme", "prod", "orders").await.unwrap();
    alice
        .publish("acme", "prod", "orders", "from-alice")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"from-alice");
    assert_eq!(
        code(alice.publish("globex", "prod", "orders", "x").await),
        Some(403)
    );
    assert_eq!(
        code(
            alice
                .subscribe("globex", "prod", "orders")
                .await
                .map(|_| ())
        ),
        Some(403)
    );

    // Every bad token is refused in AUTH with 401.
    let now = now();
    let mut cases: Vec<(&str, String)> = vec![
        (
            "expired",
            key.sign(&with(
                with(oidc_claims(), "iat", json!(now - 600)),
                "exp",
                json!(now - 120),
            )),
        ),
        (
            "not yet valid",
            key.sign(&with(oidc_claims(), "nbf", json!(now + 120))),
        ),
        (
            "wrong issuer",
            key.sign(&with(oidc_claims(), "iss", json!("https://evil.example"))),
        ),
        (
            "wrong audience",
            key.sign(&with(oidc_claims(), "aud", json!(["other-service"]))),
        ),
        (
            "unknown kid",
            key.sign_with_kid("idp-key-2", &oidc_claims()),
        ),
        (
            "tenant that does not exist",
            key.sign(&with(oidc_claims(), "tenant", json!("nosuch"))),
        ),
    ];

    // Bad signature: one bit of the decoded signature flipped.
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let mut raw_sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    raw_sig[10] ^= 0x01;
    cases.push(("bad signature", format!("{signed}.{}", b64(&raw_sig))));

    // Unsigned: alg none, empty signature.
    let payload = b64(oidc_claims().to_string().as_bytes());
    cases.push(("alg none", format!("eyJhbGciOiJub25lIn0.{payload}.")));

    // HMAC with a secret of our choosing: HS256 is not configured.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.into());
    let hs256 = jsonwebtoken::encode(
        &header,
        &oidc_claims(),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    cases.push(("HS256", hs256));

    let url = format!("https://{}", s.server.http_addr().unwrap());
    let anonymous = AdminClient::new(&url, &ClientConfig::default().with_ca(&s.ca)).unwrap();
    for (what, token) in cases {
        assert_eq!(
            refused(&s, t, what, token.clone()).await,
            Some(401),
            "{what}"
        );
        // The HTTPS exchange refuses it the same way.
        let r = anonymous
            .call("POST", "/v1/auth", Some(&json!({ "jwt": token })))
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{what} over HTTPS: {}", r.text);
    }

    // Over HTTPS the good JWT becomes a Rampart token that ends no later
    // than the JWT, and that token logs in as the same principal.
    let r = anonymous
        .call("POST", "/v1/auth", Some(&json!({ "jwt": good })))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["auth"]["metadata"]["tenant"], "acme");
    assert_eq!(r.body["auth"]["metadata"]["principal"], "alice");
    assert!(r.body["auth"]["lease_duration"].as_u64().unwrap() <= 300);
    let token = r.body["auth"]["client_token"].as_str().unwrap();
    assert!(token.starts_with("rt1."));
    let via_token = Client::connect(
        &s.url(t),
        ClientConfig::default().with_ca(&s.ca).with_token(token),
    )
    .await
    .unwrap();
    assert_eq!(via_token.principal(), "alice");
    assert!(via_token.expires_at_ms().unwrap() <= exp_ms);

    // The good login is unaffected by all of that.
    alice.ping().await.unwrap();
    alice
        .publish("acme", "prod", "orders", "still-here")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"still-here");
}

fn service_account_claims(namespace: &str, name: &str) -> Value {
    let now = now();
    json!({
        "iss": KUBERNETES_ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": ["rampart"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": format!("{name}-5d4f8b7c9-xk2lq"), "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
            "serviceaccount": {"name": name, "uid": "6b1c3c1e-8f0a-4d0e-9a57-2f7a4c1d9e33"},
        },
        "roles": ["user"],
    })
}

async fn kubernetes_service_account_token(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("k8s-sa-key");
    let jwks = key.write_jwks(dir.path());
    let jwks_path = jwks.clone();
    let s = start_with(move |c| {
        let mut issuer = JwtIssuerConfig::kubernetes(["rampart"], JwksLocation::File(jwks));
        // So that the key rotation below is picked up within the test.
        issuer.jwks_min_refresh_secs = 1;
        c.jwt_issuers = vec![issuer];
    })
    .await;

    let token = key.sign(&service_account_claims("acme", "publisher"));
    let pod = Client::connect(&s.url(t), jwt_config(&s, token))
        .await
        .expect("a service-account token logs in");
    assert_eq!(pod.tenant().as_str(), "acme");
    assert_eq!(pod.principal(), "system:serviceaccount:acme:publisher");
    let mut sub = pod.subscribe("acme", "prod", "events").await.unwrap();
    pod.publish("acme", "prod", "events", "from-pod")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"from-pod");
    assert_eq!(
        code(pod.publish("globex", "prod", "events", "x").await),
        Some(403)
    );

    // The tenant is the namespace: a namespace that is no tenant is refused,
    // and a top-level `namespace` claim does not count.
    let token = key.sign(&service_account_claims("kube-system", "publisher"));
    assert_eq!(
        refused(&s, t, "namespace is no tenant", token).await,
        Some(401)
    );
    let mut flat = service_account_claims("acme", "publisher");
    flat.as_object_mut().unwrap().remove("kubernetes.io");
    flat["namespace"] = json!("acme");
    assert_eq!(
        refused(&s, t, "flat namespace claim", key.sign(&flat)).await,
        Some(401)
    );
    // The Kubernetes preset allows RS256 and ES256 only.
    let ed = SigningKey::ed25519("k8s-sa-key");
    let token = ed.sign(&service_account_claims("acme", "publisher"));
    assert_eq!(refused(&s, t, "EdDSA", token).await, Some(401));

    // The cluster rotates its key: the new key set is written over the file
    // and a token with the new key id is accepted without a restart.
    let rotated = SigningKey::es256("k8s-sa-key-2");
    let token = rotated.sign(&service_account_claims("acme", "publisher"));
    std::fs::write(
        &jwks_path,
        json!({ "keys": [key.jwk.clone(), rotated.jwk.clone()] }).to_string(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pod2 = Client::connect(&s.url(t), jwt_config(&s, token))
        .await
        .expect("a token signed with the rotated key logs in");
    assert_eq!(pod2.principal(), "system:serviceaccount:acme:publisher");
    pod2.publish("acme", "prod", "events", "after-rotation")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"after-rotation");
}

// === client certificates ===

/// A client CA and the certificates it signed, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    ca: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "workload client CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.path().join("client-ca.crt");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        Self {
            dir,
            ca_cert,
            ca_key,
            ca,
        }
    }

    /// A client certificate with subject `cn` and, optionally, one URI SAN;
    /// returns (cert, key) paths.
    fn client(&self, file: &str, cn: &str, uri: Option<&str>) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(uri) = uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(
                rcgen::Ia5String::try_from(uri.to_string()).unwrap(),
            )];
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.crt"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// Only a client certificate: no API key, token or JWT.
fn cert_config(s: &TestServer, cert: &(PathBuf, PathBuf)) -> ClientConfig {
    ClientConfig::default()
        .with_ca(&s.ca)
        .with_client_cert(&cert.0, &cert.1)
}

const WORKER_URI: &str = "spiffe://acme.example/ns/prod/sa/worker";

async fn client_certificate_identity(t: Transport) {
    let pki = Pki::new();
    let worker = pki.client("worker", "worker-1", Some(WORKER_URI));
    let legacy = pki.client("legacy", "legacy-worker", None);
    let stranger = pki.client("stranger", "stranger", None);
    let rules = vec![
        MtlsIdentity {
            tenant: "acme".into(),
            san_uri_prefix: Some("spiffe://acme.example/".into()),
            common_names: vec![],
            roles: vec!["user".into()],
        },
        MtlsIdentity {
            tenant: "acme".into(),
            san_uri_prefix: None,
            common_names: vec!["legacy-worker".into()],
            roles: vec!["viewer".into()],
        },
    ];
    let ca = pki.ca.clone();
    let mapped = rules.clone();
    let s = start_with(move |c| {
        c.tls_ca_cert_path = Some(ca);
        c.tls_client_auth = rampart_server::ClientAuth::Request;
        c.mtls_identities = mapped;
    })
    .await;

    // The URI SAN names the principal; the rule gives tenant and roles.
    let w = Client::connect(&s.url(t), cert_config(&s, &worker))
        .await
        .expect("the SPIFFE certificate logs in");
    assert_eq!(w.tenant().as_str(), "acme");
    assert_eq!(w.principal(), WORKER_URI);
    assert_eq!(
        w.expires_at_ms(),
        None,
        "a certificate login does not expire"
    );

    // The CN names the legacy worker, a viewer.
    let l = Client::connect(&s.url(t), cert_config(&s, &legacy))
        .await
        .expect("the legacy certificate logs in");
    assert_eq!(l.tenant().as_str(), "acme");
    assert_eq!(l.principal(), "legacy-worker");
    let mut sub = l.subscribe("acme", "prod", "jobs").await.unwrap();
    assert_eq!(
        code(l.publish("acme", "prod", "jobs", "x").await),
        Some(403)
    );
    w.publish("acme", "prod", "jobs", "from-worker")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"from-worker");
    assert_eq!(
        code(w.publish("globex", "prod", "jobs", "x").await),
        Some(403)
    );

    // A certificate the CA signed but no rule maps.
    assert_eq!(
        code(Client::connect(&s.url(t), cert_config(&s, &stranger)).await),
        Some(401)
    );

    // The HTTPS API turns the certificate into a Rampart token.
    let url = format!("https://{}", s.server.http_addr().unwrap());
    let admin = AdminClient::new(&url, &cert_config(&s, &worker)).unwrap();
    let r = admin
        .call("POST", "/v1/auth", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["auth"]["client_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rt1."), "{token:.8}");
    assert_eq!(r.body["auth"]["metadata"]["tenant"], "acme");
    assert_eq!(r.body["auth"]["metadata"]["principal"], WORKER_URI);
    // That token works on the wire, without the certificate.
    let via_token = Client::connect(
        &s.url(t),
        ClientConfig::default().with_ca(&s.ca).with_token(token),
    )
    .await
    .unwrap();
    assert_eq!(via_token.principal(), WORKER_URI);
    via_token
        .publish("acme", "prod", "jobs", "via-token")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut sub).await, b"via-token");
    // Without any credential, even an empty body is refused.
    let anonymous = AdminClient::new(&url, &ClientConfig::default().with_ca(&s.ca)).unwrap();
    let r = anonymous
        .call("POST", "/v1/auth", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text);
    let stranger_admin = AdminClient::new(&url, &cert_config(&s, &stranger)).unwrap();
    let r = stranger_admin
        .call("POST", "/v1/auth", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text);

    // With an allow-list of CNs, only those certificates may log in, even
    // when a rule would map them.
    let ca = pki.ca.clone();
    let s2 = start_with(move |c| {
        c.tls_ca_cert_path = Some(ca);
        c.tls_client_auth = rampart_server::ClientAuth::Request;
        c.mtls_identities = rules;
        c.mtls_allowed_common_names = vec!["legacy-worker".into()];
    })
    .await;
    assert_eq!(
        code(Client::connect(&s2.url(t), cert_config(&s2, &worker)).await),
        Some(401)
    );
    let l2 = Client::connect(&s2.url(t), cert_config(&s2, &legacy))
        .await
        .expect("an allowed CN logs in");
    assert_eq!(l2.principal(), "legacy-worker");
    l2.ping().await.unwrap();
}

both_transports!(
    jwt_login_over_the_wire,
    kubernetes_service_account_token,
    client_certificate_identity,
);
