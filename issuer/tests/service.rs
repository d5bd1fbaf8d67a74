//! The issuer service over real HTTP on loopback, on SQLite and (when `CIVIS_TEST_POSTGRES_URL`
//! is set, as `scripts/test.sh` does) PostgreSQL, with an in-process citizen card (the real
//! applet) behind the counter relay. The registry is not needed here: the anchoring worker is
//! not started (tests/issuer_e2e.rs runs the whole chain).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use civis_core::card::TransportKey;
use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::{DidDocument, KeyCommitment};
use civis_core::issuer_api::{
    CardFacts, EnrollRequest, MintRequest, PersonalizeRequest, RenewReceipt, RenewRequest,
    RenewStep, StatusRequest,
};
use civis_firmware_bridge::CardTransport as _;
use civis_firmware_bridge::reader::CardClient;
use civis_firmware_bridge::transport::InProcess;
use civis_issuer::client::{Counter, IssuerClient};
use civis_issuer::{Config, Error, Service};
use civis_registry_client::keyfile;
use civis_wallet_core::applet::CardState;
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};

const TK: [u8; 32] = [0x42; 32];
static N: AtomicU32 = AtomicU32::new(0);

struct Env {
    dir: PathBuf,
    svc: Arc<Service>,
    base: String,
    /// Agency alpha, every scope.
    alpha: String,
    /// Agency alpha, enroll only.
    alpha_enroll: String,
    /// Agency beta, every scope.
    beta: String,
    http: reqwest::Client,
    /// Seconds added to the service's clock.
    skew: Arc<AtomicI64>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_agency_keys(dir: &Path, name: &str) {
    let key = SoftwareKey::generate(&mut OsRng);
    let next = SoftwareKey::generate(&mut OsRng);
    let doc = DidDocument::inception(key.public_key(), &KeyCommitment::to(next.public_key()));
    keyfile::write_key(
        &dir.join(format!("{name}.jwk")),
        &key,
        Some(doc.id.key_url(1).to_string()),
    )
    .unwrap();
    keyfile::write_key(&dir.join(format!("{name}.next.jwk")), &next, None).unwrap();
}

async fn database(dir: &Path, postgres: bool) -> Option<String> {
    if !postgres {
        return Some(format!("sqlite:{}", dir.join("issuer.db").display()));
    }
    let admin = std::env::var("CIVIS_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!(
        "issuer_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

async fn env_with(postgres: bool, weak: Option<&[u8]>, limits: &str) -> Option<Env> {
    let dir = std::env::temp_dir().join(format!(
        "civis-issuer-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = database(&dir, postgres).await?;
    let gov = SoftwareKey::generate(&mut OsRng);
    let genesis = Genesis {
        chain_id: "civis-test".into(),
        time: 0,
        validators: vec![SoftwareKey::generate(&mut OsRng).public_key().clone()],
        governance: vec![(
            gov.public_key().clone(),
            KeyCommitment::to(SoftwareKey::generate(&mut OsRng).public_key()),
        )],
        governance_threshold: 1,
        epoch_length: 100,
    };
    std::fs::write(dir.join("genesis.json"), genesis.to_json()).unwrap();
    write_agency_keys(&dir, "alpha");
    write_agency_keys(&dir, "beta");
    std::fs::write(dir.join("b1.key"), hex::encode(TK)).unwrap();
    std::fs::write(dir.join("b9.key"), hex::encode([0x43; 32])).unwrap();
    let weak_line = weak.map(hex::encode).unwrap_or_default();
    std::fs::write(dir.join("weak.txt"), format!("# known bad\n{weak_line}\n")).unwrap();
    let text = format!(
        r#"database = "{db}"
registry = ["http://127.0.0.1:1"]
genesis = "genesis.json"
{limits}

[[agency]]
id = "alpha"
name = "Alpha Registry"
city = "Civitas"
districts = ["Harbour", "Old Town"]
key = "alpha.jwk"
next_key = "alpha.next.jwk"
status_list_size = 100000
pin_elements = ["birth_date"]
weak_keys = "weak.txt"
[agency.batches]
b1 = "b1.key"
b2 = "b1.key"

[[agency]]
id = "beta"
name = "Beta Registry"
city = "Elsewhere"
districts = ["North"]
key = "beta.jwk"
next_key = "beta.next.jwk"
[agency.batches]
b9 = "b9.key"
"#
    );
    let path = dir.join("issuer.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let mut svc = Service::open(config).await.unwrap();
    let skew = Arc::new(AtomicI64::new(0));
    let clock = Arc::clone(&skew);
    svc.clock = Arc::new(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        i64::try_from(now).unwrap() + clock.load(Ordering::Relaxed)
    });
    let svc = Arc::new(svc);
    let all = "enroll,personalize,status,audit,admin";
    let tok = |agency: &'static str, scopes: &'static str| {
        let svc = Arc::clone(&svc);
        async move {
            civis_issuer::api::issue_token(&svc.store, agency, scopes, "test", 0)
                .await
                .unwrap()
                .1
        }
    };
    let alpha = tok("alpha", all).await;
    let alpha_enroll = tok("alpha", "enroll").await;
    let beta = tok("beta", all).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = civis_issuer::router(Arc::clone(&svc));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(Env {
        dir,
        svc,
        base,
        alpha,
        alpha_enroll,
        beta,
        http: reqwest::Client::new(),
        skew,
    })
}

async fn env(postgres: bool) -> Option<Env> {
    env_with(postgres, None, "").await
}

fn mira(key: &str) -> EnrollRequest {
    EnrollRequest {
        request_key: key.into(),
        family_name: "Jansen".into(),
        given_name: "Mira".into(),
        birth_date: "1990-04-12".into(),
        resident_district: "Harbour".into(),
        document_number: "CIV-000042".into(),
    }
}

fn blank_card() -> CardClient<InProcess> {
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    CardClient::new(InProcess::new(CardState::blank(serial, TransportKey(TK))))
}

impl Env {
    fn client(&self, token: &str) -> IssuerClient {
        IssuerClient::new(&self.base, token).unwrap()
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut r = match method {
            "GET" => self.http.get(format!("{}{path}", self.base)),
            "DELETE" => self.http.delete(format!("{}{path}", self.base)),
            _ => self.http.post(format!("{}{path}", self.base)).body(body),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.raw(
            "POST",
            path,
            Some(token),
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn enroll(&self) -> String {
        self.client(&self.alpha)
            .enroll(&mira("enroll-1"))
            .await
            .unwrap()
            .resident
    }

    async fn personalize(
        &self,
        card: &mut CardClient<InProcess>,
        key: &str,
        resident: &str,
    ) -> String {
        let step = self
            .client(&self.alpha)
            .relay(
                card,
                &Counter {
                    request_key: key,
                    resident,
                    batch: "b1",
                    pin: "246810",
                    puk: "1357913579",
                },
                &mut |_| {},
            )
            .await
            .unwrap();
        assert!(step.done);
        step.credential.unwrap()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn both(test: impl Fn(bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
    for postgres in [false, true] {
        rt().block_on(test(postgres));
    }
}

#[test]
fn a_card_is_personalized_once_and_resumes_after_interruptions() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let alpha = env.client(&env.alpha);
            let first = alpha.enroll(&mira("enroll-1")).await.unwrap();
            assert!(first.created);
            let again = alpha.enroll(&mira("enroll-1")).await.unwrap();
            assert_eq!(
                (again.resident.as_str(), again.created),
                (first.resident.as_str(), false)
            );

            // Interrupt the counter again and again (round k plays only k commands, as if the
            // card left the field): each run resumes where the recorded state and the card's
            // facts say.
            let mut card = blank_card();
            let mut states = Vec::new();
            for round in 1..40 {
                let info = card.get_data().unwrap();
                let step = alpha
                    .personalize(&PersonalizeRequest {
                        request_key: "perso-1".into(),
                        resident: first.resident.clone(),
                        batch: "b1".into(),
                        card: (&info).into(),
                        pin: Some("246810".into()),
                        puk: Some("1357913579".into()),
                    })
                    .await
                    .unwrap();
                states.push(step.state.clone());
                if step.done {
                    break;
                }
                for c in step.commands.iter().take(round) {
                    let _ = card.transport().transmit(&hex::decode(c).unwrap());
                }
            }
            assert_eq!(
                states.last().map(String::as_str),
                Some("issued"),
                "{states:?}"
            );
            let info = card.info_with(&TransportKey(TK)).unwrap();
            assert!(info.locked && info.credentials == vec![0] && info.pin_tries == Some(3));
            // The relay with the same key now only confirms.
            let again = env.personalize(&mut card, "perso-1", &first.resident).await;
            let (creds, distinct) = env.svc.store.credential_counts("alpha").await.unwrap();
            assert_eq!((creds, distinct), (1, 1));
            let c = alpha.credential(&again).await.unwrap();
            assert_eq!(c.state, "issued");
            assert!(c.status_list.ends_with("/status/citizen-1"));
            // The stored credential is the one on the card, bound to the card's key.
            let stored = card.transport().state().credentials[0].clone().unwrap();
            let row = env
                .svc
                .store
                .credential("alpha", &again)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored, row.issuer_signed);
            // The audit names each step, the actor and the request key, and nothing personal.
            let audit = alpha.audit(0, 100).await.unwrap().entries;
            let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(actions, ["enroll", "personalize", "mint", "issue"]);
            assert!(
                audit
                    .iter()
                    .all(|e| !e.actor.is_empty() && !e.request_key.is_empty())
            );
            let text = serde_json::to_string(&audit).unwrap();
            assert!(!text.contains("Jansen") && !text.contains("246810"));
        })
    });
}

#[test]
fn concurrent_requests_for_one_card_yield_one_credential() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let resident = env.enroll().await;
            let mut card = blank_card();
            let alpha = env.client(&env.alpha);
            let req = |facts: CardFacts, key: &str| PersonalizeRequest {
                request_key: key.into(),
                resident: resident.clone(),
                batch: "b1".into(),
                card: facts,
                pin: None,
                puk: None,
            };
            let first = alpha
                .personalize(&req(
                    (&card.info_with(&TransportKey(TK)).unwrap()).into(),
                    "p",
                ))
                .await
                .unwrap();
            card.transport()
                .transmit(&hex::decode(&first.commands[0]).unwrap())
                .unwrap();
            let facts: CardFacts = (&card.info_with(&TransportKey(TK)).unwrap()).into();
            // 100 at once with one request key: one credential, one index.
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let (c, r) = (alpha.clone(), req(facts.clone(), "p"));
                tasks.push(tokio::spawn(async move { c.personalize(&r).await }));
            }
            let mut credentials = std::collections::BTreeSet::new();
            for t in tasks {
                let step = t.await.unwrap().unwrap();
                assert_eq!(step.state, "minted");
                assert_eq!(step.needs, ["pin", "puk"]);
                credentials.insert(step.credential.unwrap());
            }
            assert_eq!(credentials.len(), 1);
            assert_eq!(
                env.svc.store.credential_counts("alpha").await.unwrap(),
                (1, 1)
            );
            // Other request keys for the same card are refused, concurrently too.
            let mut tasks = Vec::new();
            for n in 0..20 {
                let (c, r) = (alpha.clone(), req(facts.clone(), &format!("other-{n}")));
                tasks.push(tokio::spawn(async move { c.personalize(&r).await }));
            }
            for t in tasks {
                let e = t.await.unwrap().unwrap_err();
                assert!(matches!(e, Error::Remote { status: 409, .. }), "{e}");
            }
            assert_eq!(
                env.svc.store.credential_counts("alpha").await.unwrap(),
                (1, 1)
            );
        })
    });
}

#[test]
fn concurrent_mints_get_unique_indexes_and_one_credential_per_key() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let resident = env.enroll().await;
            let alpha = env.client(&env.alpha);
            let device = SoftwareKey::generate(&mut OsRng)
                .public_key()
                .uncompressed()
                .to_vec();
            let mut tasks = Vec::new();
            for n in 0..200 {
                let c = alpha.clone();
                let req = MintRequest {
                    // Every key twice: 100 credentials.
                    request_key: format!("mint-{}", n % 100),
                    resident: resident.clone(),
                    device_key: device.clone(),
                };
                tasks.push(tokio::spawn(async move { c.mint(&req).await }));
            }
            let mut by_key = std::collections::BTreeMap::new();
            for t in tasks {
                let a = t.await.unwrap().unwrap();
                by_key
                    .entry(a.status_index)
                    .or_insert_with(Vec::new)
                    .push(a.credential);
            }
            for ids in by_key.values() {
                assert!(
                    ids.iter().all(|i| *i == ids[0]),
                    "one index, one credential"
                );
            }
            assert_eq!(by_key.len(), 100);
            assert_eq!(
                env.svc.store.credential_counts("alpha").await.unwrap(),
                (100, 100)
            );
        })
    });
}

#[test]
fn cloned_and_weak_card_keys_are_refused() {
    let weak = SoftwareKey::generate(&mut OsRng);
    rt().block_on(async {
        let env = env_with(false, Some(weak.public_key().uncompressed()), "")
            .await
            .unwrap();
        let resident = env.enroll().await;
        let mut card = blank_card();
        env.personalize(&mut card, "p1", &resident).await;
        let alpha = env.client(&env.alpha);
        let clone_key = card.info_with(&TransportKey(TK)).unwrap().public_key;
        // A second chip claiming the first one's key.
        let mut other = blank_card();
        let mut facts: CardFacts = (&other.info_with(&TransportKey(TK)).unwrap()).into();
        facts.public_key = clone_key.as_ref().map(hex::encode);
        let req = |facts: CardFacts, key: &str| PersonalizeRequest {
            request_key: key.into(),
            resident: resident.clone(),
            batch: "b1".into(),
            card: facts,
            pin: None,
            puk: None,
        };
        let e = alpha
            .personalize(&req(facts.clone(), "p2"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Remote { code, .. } if code == "card_key_refused"),
            "{e}"
        );
        // A key on the weak-key list.
        let mut weak_facts: CardFacts =
            (&blank_card().info_with(&TransportKey(TK)).unwrap()).into();
        weak_facts.public_key = Some(hex::encode(weak.public_key().uncompressed()));
        let e = alpha.personalize(&req(weak_facts, "p3")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Remote { message, .. } if message.contains("weak")),
            "{e}"
        );
        // Not a point on the curve.
        let mut bad: CardFacts = (&blank_card().info_with(&TransportKey(TK)).unwrap()).into();
        bad.public_key = Some(format!("04{}", "11".repeat(64)));
        let e = alpha.personalize(&req(bad, "p4")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Remote { message, .. } if message.contains("point")),
            "{e}"
        );
        assert_eq!(
            env.svc.store.credential_counts("alpha").await.unwrap(),
            (1, 1)
        );
        let _ = other.info_with(&TransportKey(TK));
    });
}

#[test]
fn an_agency_reaches_nothing_of_another_on_any_route() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let resident = env.enroll().await;
        let mut card = blank_card();
        let credential = env.personalize(&mut card, "p1", &resident).await;
        let serial = hex::encode(card.info_with(&TransportKey(TK)).unwrap().serial);
        let own_facts: CardFacts = (&card.info_with(&TransportKey(TK)).unwrap()).into();
        let facts: CardFacts = (&blank_card().info_with(&TransportKey(TK)).unwrap()).into();
        let alpha_token = &env.alpha["civis_".len().."civis_".len() + 16];
        let b = &env.beta;
        let perso = json!({"requestKey":"x","resident":resident,"batch":"b1","card":facts});
        let mint = json!({"requestKey":"x","resident":resident,
            "deviceKey": hex::encode(SoftwareKey::generate(&mut OsRng).public_key().uncompressed())});
        let cases: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/v1/credentials/{credential}"), None),
            ("GET", format!("/v1/credentials/{credential}/status"), None),
            ("POST", format!("/v1/credentials/{credential}/status"), Some(json!({"requestKey":"x","action":"revoke"}))),
            ("POST", "/v1/personalizations".into(), Some(perso)),
            ("POST", "/v1/credentials".into(), Some(mint)),
            ("POST", "/v1/batches/b1/suspend".into(), Some(json!({"requestKey":"x"}))),
            ("POST", format!("/v1/cards/{serial}/lost"), Some(json!({"requestKey":"x"}))),
            ("POST", "/v1/renewals".into(), Some(json!({"requestKey":"x","card":own_facts}))),
            ("DELETE", format!("/v1/tokens/{alpha_token}"), None),
        ];
        for (method, path, body) in &cases {
            let (status, answer) = env
                .raw(
                    method,
                    path,
                    Some(b),
                    Some("application/json"),
                    body.as_ref().map(|v| v.to_string().into_bytes()).unwrap_or_default(),
                )
                .await;
            assert_eq!(status, 404, "{method} {path}: {answer}");
            assert_eq!(answer["code"], "not_found", "{method} {path}");
        }
        // Beta starting a personalization for alpha's card serial learns nothing of it (a fresh
        // start, as for any serial) and blocks nothing: alpha's card is still alpha's.
        let mut claim_facts = own_facts.clone();
        claim_facts.locked = false;
        claim_facts.public_key = None;
        let claimed = json!({"requestKey":"claim","resident":"nobody","batch":"b9","card":claim_facts});
        let (status, answer) = env.post("/v1/personalizations", b, claimed).await;
        assert_ne!(answer["code"], "conflict", "{answer}");
        assert_eq!(status, 404, "beta has no such resident: {answer}");
        let mut north = mira("b-enroll");
        north.resident_district = "North".into();
        let beta_resident = env.client(b).enroll(&north).await.unwrap().resident;
        let claimed = json!({"requestKey":"claim","resident":beta_resident,"batch":"b9","card":claim_facts});
        let (status, answer) = env.post("/v1/personalizations", b, claimed).await;
        assert_eq!((status, answer["state"].as_str()), (200, Some("started")), "{answer}");
        let again = env.personalize(&mut card, "p1", &resident).await;
        assert_eq!(again, credential);
        // Beta's audit shows nothing of alpha's; alpha's credential is untouched.
        let audit = env.client(b).audit(0, 100).await.unwrap();
        assert!(
            audit
                .entries
                .iter()
                .all(|e| e.action == "enroll" || e.action == "personalize"),
            "{:?}",
            audit.entries
        );
        let st = env.client(&env.alpha).status(&credential).await.unwrap();
        assert_eq!((st.wanted.as_str(), st.pending.len()), ("valid", 0));
    });
}

#[test]
fn hostile_requests_get_clear_errors_and_no_internals() {
    rt().block_on(async {
        let env = env_with(
            false,
            None,
            "[limits]\nmax_body = 2048\nper_second = 1\nburst = 30",
        )
        .await
        .unwrap();
        let good = serde_json::to_vec(&mira("k")).unwrap();
        let p = "/v1/residents";
        let j = Some("application/json");
        // No token, a malformed one, a made-up one.
        assert_eq!(env.raw("POST", p, None, j, good.clone()).await.0, 401);
        assert_eq!(
            env.raw("POST", p, Some("nope"), j, good.clone()).await.0,
            401
        );
        let forged = format!("civis_{}.{}", "0".repeat(16), "1".repeat(64));
        let (s, a) = env.raw("POST", p, Some(&forged), j, good.clone()).await;
        assert_eq!((s, a["code"].as_str()), (401, Some("unauthorized")));
        // A real token id with a wrong secret.
        let (id, _) = env
            .alpha
            .trim_start_matches("civis_")
            .split_once('.')
            .unwrap();
        let wrong = format!("civis_{id}.{}", "2".repeat(64));
        assert_eq!(
            env.raw("POST", p, Some(&wrong), j, good.clone()).await.0,
            401
        );
        // Wrong scope.
        let (s, a) = env
            .raw("GET", "/v1/audit", Some(&env.alpha_enroll), None, vec![])
            .await;
        assert_eq!((s, a["code"].as_str()), (403, Some("forbidden")));
        // Wrong content type, invalid bodies, oversized body.
        let t = Some(env.alpha.as_str());
        let (s, a) = env
            .raw("POST", p, t, Some("text/plain"), good.clone())
            .await;
        assert_eq!(
            (s, a["code"].as_str()),
            (415, Some("unsupported_media_type"))
        );
        let (s, a) = env.raw("POST", p, t, j, b"{not json".to_vec()).await;
        assert_eq!((s, a["code"].as_str()), (400, Some("invalid_body")));
        let mut typed = serde_json::to_value(mira("k")).unwrap();
        typed["familyName"] = json!(12345);
        typed["givenName"] = json!("SecretGiven");
        let (s, a) = env
            .raw("POST", p, t, j, typed.to_string().into_bytes())
            .await;
        assert_eq!(s, 400);
        assert!(
            !a.to_string().contains("12345") && !a.to_string().contains("SecretGiven"),
            "{a}"
        );
        let mut bad = mira("k");
        bad.birth_date = "1990-13-45".into();
        let (s, a) = env
            .post(p, &env.alpha, serde_json::to_value(&bad).unwrap())
            .await;
        assert_eq!((s, a["code"].as_str()), (400, Some("invalid_field")));
        assert!(!a["message"].as_str().unwrap().contains("1990-13-45"));
        let big = json!({"requestKey": "k", "familyName": "x".repeat(4096)});
        let (s, a) = env.raw("POST", p, t, j, big.to_string().into_bytes()).await;
        assert_eq!((s, a["code"].as_str()), (413, Some("body_too_large")));
        // Names that would forge log lines are refused, with the field named.
        let mut inject = mira("k2");
        inject.family_name = "Eve\n2026-12-05T00:00:00Z INFO forged".into();
        let (s, a) = env
            .post(p, &env.alpha, serde_json::to_value(&inject).unwrap())
            .await;
        assert_eq!(s, 400);
        assert!(a["message"].as_str().unwrap().contains("familyName"));
        assert!(!a.to_string().contains("forged"));
        // The per-token allowance: a burst of 30, then 429 with Retry-After; another token is
        // unaffected.
        let mut limited = 0_u64;
        let started = std::time::Instant::now();
        for _ in 0..40 {
            let (s, _) = env.raw("GET", "/v1/audit", t, None, vec![]).await;
            if s == 429 {
                limited += 1;
            }
        }
        // At most 30 + 1 a second got through, however slow the loop ran; some were refused.
        let bound = 40_u64
            .saturating_sub(30 + started.elapsed().as_secs() + 1)
            .max(1);
        assert!(
            limited >= bound,
            "{limited} refused, at least {bound} expected"
        );
        let (s, _) = env
            .raw("GET", "/v1/audit", Some(&env.beta), None, vec![])
            .await;
        assert_eq!(s, 200);
        // Unknown routes answer JSON 404.
        let (s, a) = env.raw("GET", "/v1/nothing", t, None, vec![]).await;
        assert_eq!((s, a["code"].as_str()), (404, Some("not_found")));
    });
}

#[test]
fn status_changes_are_recorded_once_and_revocation_is_final() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let resident = env.enroll().await;
        let alpha = env.client(&env.alpha);
        let mut card = blank_card();
        let on_card = env.personalize(&mut card, "p1", &resident).await;
        let act = |action: &str, key: &str| StatusRequest {
            request_key: key.into(),
            action: action.into(),
        };
        let s = alpha
            .change_status(&on_card, &act("suspend", "s1"))
            .await
            .unwrap();
        assert_eq!((s.wanted.as_str(), s.pending.len()), ("suspended", 1));
        // The same request key again changes nothing.
        let s = alpha
            .change_status(&on_card, &act("suspend", "s1"))
            .await
            .unwrap();
        assert_eq!(s.pending.len(), 1);
        let s = alpha
            .change_status(&on_card, &act("unsuspend", "s2"))
            .await
            .unwrap();
        assert_eq!((s.wanted.as_str(), s.pending.len()), ("valid", 2));
        let s = alpha
            .change_status(&on_card, &act("revoke", "s3"))
            .await
            .unwrap();
        assert_eq!(s.wanted, "revoked");
        for (action, key) in [("unsuspend", "s4"), ("suspend", "s5")] {
            let e = alpha
                .change_status(&on_card, &act(action, key))
                .await
                .unwrap_err();
            assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        }
        let e = alpha
            .change_status(&on_card, &act("delete", "s6"))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 400, .. }), "{e}");
        // A lost card: its valid credential is suspended at once, once.
        let mut lost = blank_card();
        let lost_id = env.personalize(&mut lost, "lost-card", &resident).await;
        let serial = hex::encode(lost.info_with(&TransportKey(TK)).unwrap().serial);
        let done = alpha.card_lost(&serial, "l1").await.unwrap();
        assert_eq!((done.credentials, done.created), (1, true));
        assert_eq!(alpha.status(&lost_id).await.unwrap().wanted, "suspended");
        let again = alpha.card_lost(&serial, "l1").await.unwrap();
        assert_eq!(again.credentials, 0);
        let e = alpha.card_lost(&"00".repeat(16), "l2").await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 404, .. }), "{e}");
        // A batch: three more cards; suspending the batch suspends every credential not
        // revoked, in one step, once.
        let mut ids = Vec::new();
        for n in 0..3 {
            let mut c = blank_card();
            ids.push(env.personalize(&mut c, &format!("b{n}"), &resident).await);
        }
        // The lost card is suspended already; the three valid ones are suspended now.
        let done = alpha.suspend_batch("b1", "batch-1").await.unwrap();
        assert_eq!((done.credentials, done.created), (3, true));
        let again = alpha.suspend_batch("b1", "batch-2").await.unwrap();
        assert!(!again.created);
        for id in &ids {
            assert_eq!(alpha.status(id).await.unwrap().wanted, "suspended");
        }
        assert_eq!(alpha.status(&on_card).await.unwrap().wanted, "revoked");
        // A suspended batch's blank cards are refused at personalization.
        let mut late = blank_card();
        let e = alpha
            .relay(
                &mut late,
                &Counter {
                    request_key: "late",
                    resident: &resident,
                    batch: "b1",
                    pin: "1234",
                    puk: "12345678",
                },
                &mut |_| {},
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("suspended"), "{e}");
        // Every change is pending until the anchoring worker carries it to the chain.
        let pending = env.svc.store.unanchored_count().await.unwrap();
        assert_eq!(pending, 3 + 1 + 3);
    });
}

#[test]
fn the_openapi_document_names_exactly_the_routes_served() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let doc: Value = serde_json::from_str(civis_issuer::api::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: std::collections::BTreeSet<(String, String)> = civis_issuer::api::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(documented, served);
        // Every documented route is really routed: an unknown object is "no such credential",
        // never the router's "no such route"; every schema reference resolves.
        for (method, path) in &served {
            let concrete = path.replace("{id}", "x").replace("{serial}", "00");
            let (status, answer) = env
                .raw(
                    &method.to_uppercase(),
                    &concrete,
                    Some(&env.alpha),
                    Some("application/json"),
                    b"{}".to_vec(),
                )
                .await;
            assert_ne!(
                answer["message"], "no such route",
                "{method} {path}: {status}"
            );
            assert_ne!(status, 405, "{method} {path}");
        }
        let text = civis_issuer::api::OPENAPI;
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
        let (status, _) = env
            .raw("GET", "/v1/unknown", Some(&env.alpha), None, vec![])
            .await;
        assert_eq!(status, 404);
    });
}

#[test]
fn a_pkcs11_key_on_softhsm_signs_credentials_that_verify() {
    let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("CIVIS_TEST_PKCS11_MODULE"),
        std::env::var("CIVIS_TEST_PKCS11_TOKEN"),
        std::env::var("CIVIS_TEST_PKCS11_PIN"),
    ) else {
        eprintln!("skipped: no SoftHSM2 token (scripts/test.sh sets one up)");
        return;
    };
    rt().block_on(async {
        let dir = std::env::temp_dir().join(format!(
            "civis-issuer-hsm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let genesis = Genesis {
            chain_id: "civis-test".into(),
            time: 0,
            validators: vec![SoftwareKey::generate(&mut OsRng).public_key().clone()],
            governance: vec![(
                SoftwareKey::generate(&mut OsRng).public_key().clone(),
                KeyCommitment::to(SoftwareKey::generate(&mut OsRng).public_key()),
            )],
            governance_threshold: 1,
            epoch_length: 100,
        };
        std::fs::write(dir.join("genesis.json"), genesis.to_json()).unwrap();
        std::fs::write(dir.join("hsm.pin"), format!("{pin}\n")).unwrap();
        let label = format!("issuer-{}-{}", std::process::id(), OsRng.next_u32());
        let hsm = civis_issuer::config::Pkcs11Config {
            module: module.clone().into(),
            token: token.clone(),
            pin_file: dir.join("hsm.pin"),
            label: label.clone(),
            kid: String::new(),
        };
        let done = civis_issuer::init(
            &civis_issuer::InitOptions {
                dir: dir.join("iss"),
                agency: "hsm".into(),
                name: "HSM Registry".into(),
                city: "Civitas".into(),
                districts: vec!["Harbour".into()],
                registry: vec!["http://127.0.0.1:1".into()],
                genesis: dir.join("genesis.json"),
                database: None,
                listen: "127.0.0.1:0".parse().unwrap(),
                batch: None,
                pkcs11: Some(hsm),
            },
            &mut OsRng,
        )
        .await
        .unwrap();
        // No private key file: the key lives on the token, generated there.
        assert!(!dir.join("iss/agency.jwk").exists());
        let text = std::fs::read_to_string(&done.config).unwrap();
        assert!(text.contains("[agency.pkcs11]"), "{text}");
        let svc = Service::open(Config::load(&done.config).unwrap())
            .await
            .unwrap();
        let agency = Arc::clone(svc.agency("hsm").unwrap());
        let public = agency.keys().signer.public_key();
        assert_eq!(agency.did.to_string(), done.did);
        // Both keys are on the token: `label#1` signs, `label#2` is committed as the next.
        let on_token = civis_issuer::hsm::keys(module.as_ref(), &token, &pin, &label).unwrap();
        assert_eq!(on_token.len(), 2);
        assert_eq!((on_token[0].0, &on_token[0].1), (1, &public));
        assert_eq!(on_token[1].0, 2);
        assert_eq!(agency.keys().kid.to_string(), format!("{}#key-1", done.did));
        assert!(!dir.join("iss/agency.next.jwk").exists());
        let first = civis_issuer::hsm::key_label(&label, 1);
        assert!(
            civis_issuer::hsm::generate(module.as_ref(), &token, &pin, &first).is_err(),
            "a second key under one label"
        );
        assert!(
            civis_issuer::hsm::generate_first(module.as_ref(), &token, &pin, &label).is_err(),
            "a second agency on the same labels"
        );
        // Mint; the credential's MSO verifies with the token's public key, and only with it.
        let (resident, _) = {
            let req = mira("e");
            let today = time::macros::date!(2026 - 12 - 05);
            let attrs =
                civis_issuer::enroll::Attributes::check(&req, &agency.config, today).unwrap();
            let audit = civis_issuer::store::Audit {
                agency: "hsm",
                actor: "t",
                action: "enroll",
                object: "r",
                request_key: "e",
                at: 0,
            };
            svc.store
                .enroll("r", &attrs.to_bytes(), &audit)
                .await
                .unwrap()
        };
        let actor = civis_issuer::service::Actor {
            token: "t".into(),
            agency: "hsm".into(),
            scopes: vec![],
        };
        let device = SoftwareKey::generate(&mut OsRng);
        for n in 0..20 {
            let answer = civis_issuer::api::mint_for_key(
                &svc,
                &agency,
                &actor,
                &MintRequest {
                    request_key: format!("m{n}"),
                    resident: resident.clone(),
                    device_key: device.public_key().uncompressed().to_vec(),
                },
            )
            .await
            .unwrap();
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(answer.issuer_signed.unwrap())
                .unwrap();
            let stored = civis_wallet_core::holder::StoredCredential::from_bytes(&bytes).unwrap();
            let sign1 = &stored.issuer_signed.issuer_auth.cose;
            civis_core::cose::verify_sign1(
                sign1,
                &public,
                civis_core::cose::Domain::IsoIssuerAuth,
                None,
            )
            .unwrap();
            let other = SoftwareKey::generate(&mut OsRng);
            assert!(
                civis_core::cose::verify_sign1(
                    sign1,
                    other.public_key(),
                    civis_core::cose::Domain::IsoIssuerAuth,
                    None
                )
                .is_err()
            );
        }
        // A rotation started (the key after next generated) and cut short: after a restart the
        // service signs nothing until the rotation is finished on chain.
        civis_issuer::hsm::generate(
            module.as_ref(),
            &token,
            &pin,
            &civis_issuer::hsm::key_label(&label, 3),
        )
        .unwrap();
        drop(svc);
        let svc = Service::open(Config::load(&done.config).unwrap())
            .await
            .unwrap();
        let agency = Arc::clone(svc.agency("hsm").unwrap());
        assert!(agency.rotating());
        assert_eq!(
            agency.keys().signer.public_key(),
            public,
            "still key 1 until the chain says"
        );
        let err = civis_issuer::api::mint_for_key(
            &svc,
            &agency,
            &actor,
            &MintRequest {
                request_key: "during-rotation".into(),
                resident: resident.clone(),
                device_key: device.public_key().uncompressed().to_vec(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!((err.http_status(), err.code()), (503, "unavailable"));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn racing_status_requests_never_undo_a_revocation() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let resident = env.enroll().await;
            let alpha = env.client(&env.alpha);
            for round in 0..12 {
                let mut card = blank_card();
                let id = env
                    .personalize(&mut card, &format!("p{round}"), &resident)
                    .await;
                let serial = hex::encode(card.info_with(&TransportKey(TK)).unwrap().serial);
                alpha
                    .change_status(
                        &id,
                        &StatusRequest {
                            request_key: format!("s{round}"),
                            action: "suspend".into(),
                        },
                    )
                    .await
                    .unwrap();
                // Revocations, unsuspensions and a lost-card report, all at once.
                let mut tasks = Vec::new();
                for k in 0..6 {
                    let (c, id) = (alpha.clone(), id.clone());
                    let action = if k % 2 == 0 { "revoke" } else { "unsuspend" };
                    let req = StatusRequest {
                        request_key: format!("r{round}-{k}"),
                        action: action.into(),
                    };
                    tasks.push(tokio::spawn(async move {
                        c.change_status(&id, &req).await.map(drop)
                    }));
                }
                let (c, serial2) = (alpha.clone(), serial.clone());
                tasks.push(tokio::spawn(async move {
                    c.card_lost(&serial2, &format!("l{round}")).await.map(drop)
                }));
                for t in tasks {
                    let _ = t.await.unwrap();
                }
                let st = alpha.status(&id).await.unwrap();
                assert_eq!(st.wanted, "revoked", "round {round}");
                // After the first revocation nothing else was recorded.
                let values: Vec<&str> = st.pending.iter().map(|c| c.value.as_str()).collect();
                let first = values.iter().position(|v| *v == "revoked").unwrap();
                assert_eq!(values.len(), first + 1, "round {round}: {values:?}");
            }
        })
    });
}

#[test]
fn a_request_key_names_one_request() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let alpha = env.client(&env.alpha);
        let r1 = alpha.enroll(&mira("e1")).await.unwrap().resident;
        let mut other = mira("e1");
        other.given_name = "Eve".into();
        let e = alpha.enroll(&other).await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        let mut second = mira("e2");
        second.document_number = "CIV-2".into();
        let r2 = alpha.enroll(&second).await.unwrap().resident;
        let key = SoftwareKey::generate(&mut OsRng).public_key().uncompressed().to_vec();
        let mint = |resident: &str, device: Vec<u8>| MintRequest {
            request_key: "k".into(),
            resident: resident.into(),
            device_key: device,
        };
        let first = alpha.mint(&mint(&r1, key.clone())).await.unwrap();
        let e = alpha.mint(&mint(&r2, key.clone())).await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        let again = alpha.mint(&mint(&r1, key.clone())).await.unwrap();
        assert_eq!(again.credential, first.credential);
        // The same key for the same resident but another device key: never the credential
        // bound to the first key.
        let another = SoftwareKey::generate(&mut OsRng).public_key().uncompressed().to_vec();
        let e = alpha.mint(&mint(&r1, another)).await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        let other_cred = alpha
            .mint(&MintRequest {
                request_key: "k2".into(),
                ..mint(&r2, key.clone())
            })
            .await
            .unwrap();
        let act = |k: &str| StatusRequest {
            request_key: k.into(),
            action: "suspend".into(),
        };
        alpha.change_status(&first.credential, &act("s")).await.unwrap();
        let e = alpha
            .change_status(&other_cred.credential, &act("s"))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        // The same key for the same credential but another action.
        let unsuspend = StatusRequest {
            request_key: "s".into(),
            action: "unsuspend".into(),
        };
        let e = alpha
            .change_status(&first.credential, &unsuspend)
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        let st = alpha.change_status(&first.credential, &act("s")).await.unwrap();
        assert_eq!(st.wanted, "suspended");
        // A key whose request changed nothing still names it: a late retry of a no-op
        // unsuspend does not lift a later suspension, and the key takes no other request.
        let fresh = alpha
            .mint(&MintRequest {
                request_key: "k3".into(),
                ..mint(&r1, SoftwareKey::generate(&mut OsRng).public_key().uncompressed().to_vec())
            })
            .await
            .unwrap()
            .credential;
        let noop = StatusRequest {
            request_key: "kx".into(),
            action: "unsuspend".into(),
        };
        let st = alpha.change_status(&fresh, &noop).await.unwrap();
        assert_eq!((st.wanted.as_str(), st.pending.len()), ("valid", 0));
        alpha.change_status(&fresh, &act("ky")).await.unwrap();
        let st = alpha.change_status(&fresh, &noop).await.unwrap();
        assert_eq!((st.wanted.as_str(), st.pending.len()), ("suspended", 1), "the retry created nothing");
        let revoke = StatusRequest {
            request_key: "kx".into(),
            action: "revoke".into(),
        };
        let e = alpha.change_status(&fresh, &revoke).await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        // The same for lost cards and batches.
        let mut lost_card = blank_card();
        env.personalize(&mut lost_card, "p-lost", &r1).await;
        let lost_serial = hex::encode(lost_card.info_with(&TransportKey(TK)).unwrap().serial);
        alpha.card_lost(&lost_serial, "lost-a").await.unwrap();
        let again = alpha.card_lost(&lost_serial, "lost-b").await.unwrap();
        assert_eq!((again.credentials, again.created), (0, false));
        let e = alpha.card_lost(&"00".repeat(16), "lost-b").await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 404, .. }), "{e}");
        let mut other_card = blank_card();
        env.personalize(&mut other_card, "p-other", &r1).await;
        let other_serial = hex::encode(other_card.info_with(&TransportKey(TK)).unwrap().serial);
        let e = alpha.card_lost(&other_serial, "lost-b").await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        alpha.suspend_batch("b2", "batch-k").await.unwrap();
        let e = alpha.suspend_batch("b1", "batch-k").await.unwrap_err();
        assert!(matches!(&e, Error::Remote { status: 409, .. }), "{e}");
        // Device keys: empty, compressed, off the curve, the generator, a card's key.
        let g = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        let mut card = blank_card();
        env.personalize(&mut card, "p", &r1).await;
        let card_key = card.info_with(&TransportKey(TK)).unwrap().public_key.unwrap();
        let compressed = SoftwareKey::generate(&mut OsRng).public_key().compressed();
        for (n, bad) in [
            vec![],
            compressed,
            vec![4; 65],
            hex::decode(g).unwrap(),
            card_key,
        ]
        .into_iter()
        .enumerate()
        {
            let e = alpha
                .mint(&MintRequest {
                    request_key: format!("bad{n}"),
                    ..mint(&r1, bad)
                })
                .await
                .unwrap_err();
            assert!(matches!(&e, Error::Remote { status: 400, .. }), "{n}: {e}");
        }
    });
}

#[test]
fn every_error_is_json_with_its_code() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let t = Some(env.alpha.as_str());
        let resp = env
            .http
            .delete(format!("{}/v1/residents", env.base))
            .bearer_auth(&env.alpha)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
        let resp = env
            .http
            .get(format!("{}/v1/credentials/%FF%FE", env.base))
            .bearer_auth(&env.alpha)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
        let resp = env
            .http
            .get(format!("{}/v1/audit", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(resp.headers().contains_key("www-authenticate"));
        // The scheme is case-insensitive.
        let resp = env
            .http
            .get(format!("{}/v1/audit", env.base))
            .header("authorization", format!("bearer {}", env.alpha))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let big = vec![b' '; 70 * 1024];
        let (s, a) = env
            .raw("POST", "/v1/residents", t, Some("application/json"), big)
            .await;
        assert_eq!(s, 413);
        assert!(a["message"].as_str().unwrap().contains("65536"), "{a}");
    });
}

#[test]
fn a_flood_of_made_up_tokens_from_one_address_does_not_lock_out_another() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        // Serve the same router as `civis issuer run` does, with peer addresses.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = civis_issuer::router(Arc::clone(&env.svc));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        tokio::spawn(civis_http_serve::serve(
            listener,
            app,
            civis_http_serve::ServeLimits::default(),
            async move { stopped.notified().await },
        ));
        // One address floods with made-up tokens until it is refused…
        let mut limited = 0;
        let started = std::time::Instant::now();
        for n in 0..200 {
            let forged = format!("civis_{:016x}.{}", n, "1".repeat(64));
            let r = env
                .http
                .get(format!("{base}/v1/audit"))
                .bearer_auth(forged)
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == 429 {
                limited += 1;
            }
        }
        // The allowance is a burst of 40 and 20 a second: whatever the loop's pace on a loaded
        // machine, no more than that got through, and some were refused.
        let allowed = 40 + 20 * (started.elapsed().as_secs() + 1);
        let bound = 200_u64.saturating_sub(allowed).max(1);
        assert!(
            limited >= bound,
            "{limited} refused, at least {bound} expected"
        );
        // …while a real token not used before, from another address, gets in.
        let fresh = civis_issuer::api::issue_token(&env.svc.store, "alpha", "audit", "late", 0)
            .await
            .unwrap()
            .1;
        let other = reqwest::Client::builder()
            .local_address(Some("127.0.0.2".parse().unwrap()))
            .build()
            .unwrap();
        let r = other
            .get(format!("{base}/v1/audit"))
            .bearer_auth(fresh)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);

        // Made-up tokens from 50 addresses at once, each within its own allowance: a token
        // made meanwhile in the database (as another process sharing it would) is admitted
        // within a second and stays admitted; nothing but 401 and 429 reaches the flooders.
        let late = civis_issuer::api::issue_token(&env.svc.store, "alpha", "audit", "later", 0)
            .await
            .unwrap()
            .1;
        let mut flood = Vec::new();
        for a in 1..=50u8 {
            let (base, client) = (
                base.clone(),
                reqwest::Client::builder()
                    .local_address(Some(std::net::IpAddr::from([127, 0, 1, a])))
                    .build()
                    .unwrap(),
            );
            flood.push(tokio::spawn(async move {
                let mut seen = std::collections::BTreeSet::new();
                for n in 0..60u32 {
                    let forged = format!("civis_{:08x}{n:08x}.{}", u32::from(a), "2".repeat(64));
                    let r = client
                        .get(format!("{base}/v1/audit"))
                        .bearer_auth(forged)
                        .send()
                        .await
                        .unwrap();
                    seen.insert(r.status().as_u16());
                }
                seen
            }));
        }
        let operator = reqwest::Client::builder()
            .local_address(Some("127.0.0.3".parse().unwrap()))
            .build()
            .unwrap();
        let mut statuses = Vec::new();
        for _ in 0..50 {
            let r = operator
                .get(format!("{base}/v1/audit"))
                .bearer_auth(&late)
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
            if statuses.len() >= 5 && statuses.iter().rev().take(5).all(|s| *s == 200) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let first_ok = statuses
            .iter()
            .position(|s| *s == 200)
            .expect("never admitted");
        assert!(first_ok <= 20, "{statuses:?}");
        assert!(
            statuses[first_ok..].iter().all(|s| *s == 200),
            "{statuses:?}"
        );
        // A real token is never told it is unknown: at worst asked to retry.
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        for f in flood {
            let seen = f.await.unwrap();
            assert!(seen.iter().all(|s| *s == 401 || *s == 429), "{seen:?}");
        }
        stop.notify_one();
    });
}

#[test]
fn health_says_when_anchoring_fails() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let health = |env: &Env| {
            let c = env.client(&env.alpha);
            async move { c.health().await.unwrap() }
        };
        assert!(health(&env).await.anchoring_failing.is_empty());
        // The config's registry (127.0.0.1:1) is unreachable: the worker's rounds fail.
        let stop = Arc::new(tokio::sync::Notify::new());
        let worker = tokio::spawn(civis_issuer::anchor::run(
            Arc::clone(&env.svc),
            env.svc.registry().unwrap(),
            Arc::clone(&stop),
        ));
        let mut failing = Vec::new();
        for _ in 0..100 {
            failing = health(&env).await.anchoring_failing;
            if failing.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(failing, ["alpha", "beta"]);
        stop.notify_waiters();
        worker.abort();
    });
}

/// Play a renewal step's commands on the card; the last answer's data is the receipt.
fn play(card: &mut CardClient<InProcess>, step: &RenewStep) -> Option<RenewReceipt> {
    let mut data = None;
    for c in &step.commands {
        let r = civis_core::apdu::Response::parse(
            &card.transport().transmit(&hex::decode(c).unwrap()).unwrap(),
        )
        .unwrap();
        if r.sw != civis_core::apdu::StatusWord::Ok {
            return None;
        }
        data = Some(r.data);
    }
    Some(RenewReceipt {
        counter: step.counter.unwrap(),
        signature: data?,
    })
}

fn renewal(
    key: &str,
    card: &mut CardClient<InProcess>,
    receipt: Option<RenewReceipt>,
) -> RenewRequest {
    RenewRequest {
        request_key: key.into(),
        card: (&card.get_data().unwrap()).into(),
        receipt,
    }
}

#[test]
fn a_locked_cards_credential_is_renewed_once_and_the_old_one_revoked_only_when_the_card_holds_the_new()
 {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let alpha = env.client(&env.alpha);
            let resident = env.enroll().await;
            let mut card = blank_card();
            let old = env.personalize(&mut card, "p1", &resident).await;
            let old_bytes = card.transport().state().credentials[0].clone().unwrap();

            // Asked twice without playing anything: one new credential, sealed anew each time.
            let first = alpha.renew(&renewal("r1", &mut card, None)).await.unwrap();
            let second = alpha.renew(&renewal("r1", &mut card, None)).await.unwrap();
            assert_eq!(
                (first.state.as_str(), first.replaces.as_str()),
                ("minted", old.as_str())
            );
            assert_eq!(first.credential, second.credential);
            assert_ne!(
                first.commands, second.commands,
                "a fresh ephemeral key each time"
            );
            let new = first.credential.clone().unwrap();
            assert_eq!(
                env.svc.store.credential_counts("alpha").await.unwrap(),
                (2, 2)
            );
            // Another request key for the same credential is a conflict while this one runs.
            let err = alpha
                .renew(&renewal("r2", &mut card, None))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Remote { status: 409, .. }), "{err}");

            // The card stores it, but the receipt is lost on the way: nothing is revoked yet,
            // and the old credential stays valid.
            let lost = play(&mut card, &second).unwrap();
            let new_bytes = card.transport().state().credentials[0].clone().unwrap();
            assert_ne!(new_bytes, old_bytes);
            // Both bind the card's VRF key (its election pseudonyms stay the same across a
            // renewal), and let the card device-sign the pseudonym.
            let vrf = card
                .transport()
                .state()
                .vrf_public_key()
                .unwrap()
                .to_bytes();
            for bytes in [&old_bytes, &new_bytes] {
                let c = civis_wallet_core::holder::StoredCredential::from_bytes(bytes).unwrap();
                assert_eq!(
                    c.element(
                        civis_core::mdoc::citizen::NAMESPACE,
                        civis_core::evote::VRF_KEY
                    ),
                    Some(&ciborium::Value::Bytes(vrf.to_vec()))
                );
                let mso = civis_core::mdoc::MobileSecurityObject::from_issuer_auth(
                    &c.issuer_signed.issuer_auth,
                )
                .unwrap();
                assert!(
                    mso.device_may_sign(civis_core::evote::NAMESPACE, civis_core::evote::PSEUDONYM)
                );
                assert!(!mso.device_may_sign(civis_core::mdoc::citizen::NAMESPACE, "age_over_18"));
            }
            assert_eq!(alpha.status(&old).await.unwrap().wanted, "valid");
            // A forged receipt, or one for another counter, is refused.
            let mut forged = lost.clone();
            forged.signature[10] ^= 1;
            for bad in [
                forged,
                RenewReceipt {
                    counter: lost.counter + 1,
                    ..lost.clone()
                },
            ] {
                let err = alpha
                    .renew(&renewal("r1", &mut card, Some(bad)))
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, Error::Remote { ref code, .. } if code == "card_refused"),
                    "{err}"
                );
            }
            assert_eq!(alpha.status(&old).await.unwrap().wanted, "valid");
            // The relay, run again with the same key, writes the same credential again and
            // finishes.
            let done = alpha
                .relay_renewal(&mut card, "r1", &mut |_| {})
                .await
                .unwrap();
            assert!(done.done && done.credential.as_deref() == Some(new.as_str()));
            assert_eq!(
                card.transport().state().credentials[0].as_ref(),
                Some(&new_bytes)
            );
            let row = env
                .svc
                .store
                .credential("alpha", &new)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (row.issuer_signed, row.state.as_str()),
                (new_bytes, "issued")
            );
            let old_status = alpha.status(&old).await.unwrap();
            assert_eq!(
                (old_status.wanted.as_str(), old_status.pending.len()),
                ("revoked", 1)
            );
            assert_eq!(alpha.status(&new).await.unwrap().wanted, "valid");
            assert!(card.info_with(&TransportKey(TK)).unwrap().locked);
            assert_eq!(
                env.svc.store.credential_counts("alpha").await.unwrap(),
                (2, 2)
            );
            let audit = alpha.audit(0, 100).await.unwrap().entries;
            let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(
                actions,
                [
                    "enroll",
                    "personalize",
                    "mint",
                    "issue",
                    "renewal",
                    "mint",
                    "renew"
                ]
            );

            // The next renewal replaces the new credential, never the revoked one.
            let next = alpha.renew(&renewal("r3", &mut card, None)).await.unwrap();
            assert_eq!(next.replaces, new);

            // Refused: an unlocked card, a card showing another key, a card never issued here,
            // and a credential past its expiry.
            // Facts the card sealed under another batch's key (or garbage) open under none.
            let mut facts = renewal("r4", &mut card, None);
            facts.card.sealed = Some(hex::encode([7u8; 60]));
            let err = alpha.renew(&facts).await.unwrap_err();
            assert!(
                matches!(err, Error::Remote { ref code, .. } if code == "card_refused"),
                "{err}"
            );
            // Open facts, as a counter could claim them.
            let open = CardFacts::from(&card.info_with(&TransportKey(TK)).unwrap());
            let mut facts = renewal("r4", &mut card, None);
            facts.card = open.clone();
            facts.card.locked = false;
            let err = alpha.renew(&facts).await.unwrap_err();
            assert!(
                matches!(err, Error::Remote { ref code, .. } if code == "card_refused"),
                "{err}"
            );
            let mut facts = renewal("r4", &mut card, None);
            facts.card = open.clone();
            facts.card.public_key = Some(hex::encode(
                SoftwareKey::generate(&mut OsRng)
                    .public_key()
                    .uncompressed(),
            ));
            let err = alpha.renew(&facts).await.unwrap_err();
            assert!(
                matches!(err, Error::Remote { ref code, .. } if code == "card_refused"),
                "{err}"
            );
            let err = alpha
                .renew(&renewal("r4", &mut blank_card(), None))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Remote { status: 404, .. }), "{err}");
            let mut other = blank_card();
            env.personalize(&mut other, "p2", &resident).await;
            env.skew.store(6 * 365 * 86_400, Ordering::Relaxed);
            let err = alpha
                .renew(&renewal("r5", &mut other, None))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Remote { ref code, ref message, .. }
                if code == "card_refused" && message.contains("expired")),
                "{err}"
            );
            env.skew.store(0, Ordering::Relaxed);
        })
    });
}

#[test]
fn a_card_reported_lost_during_its_renewal_keeps_its_status_on_the_new_credential() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let alpha = env.client(&env.alpha);
            let resident = env.enroll().await;
            // Lost before the card got the new credential: nothing more is written to it.
            let mut card = blank_card();
            let old = env.personalize(&mut card, "p1", &resident).await;
            let serial = hex::encode(card.info_with(&TransportKey(TK)).unwrap().serial);
            let step = alpha.renew(&renewal("r1", &mut card, None)).await.unwrap();
            alpha.card_lost(&serial, "lost-1").await.unwrap();
            let err = alpha
                .renew(&renewal("r1", &mut card, None))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Remote { ref code, .. } if code == "card_refused"),
                "{err}"
            );
            // Lost after the card stored it but before the receipt came back: the receipt
            // finishes the renewal, and the new credential is suspended like the old.
            let receipt = play(&mut card, &step).unwrap();
            let done = alpha
                .renew(&renewal("r1", &mut card, Some(receipt)))
                .await
                .unwrap();
            assert!(done.done);
            let new = done.credential.unwrap();
            assert_eq!(alpha.status(&new).await.unwrap().wanted, "suspended");
            assert_eq!(alpha.status(&old).await.unwrap().wanted, "revoked");
        })
    });
}

#[test]
fn a_revoked_token_stops_working_at_once() {
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let admin = env.client(&env.alpha);
        let made = env
            .post(
                "/v1/tokens",
                &env.alpha,
                json!({"scopes": ["audit"], "label": "desk 4"}),
            )
            .await;
        assert_eq!(made.0, 201, "{}", made.1);
        let (id, token) = (
            made.1["id"].as_str().unwrap().to_owned(),
            made.1["token"].as_str().unwrap().to_owned(),
        );
        let desk = env.client(&token);
        desk.audit(0, 1).await.unwrap();
        // Beta cannot revoke it; alpha's admin can, and it fails on its next request (it was
        // in the token cache).
        let err = env.client(&env.beta).revoke_token(&id).await.unwrap_err();
        assert!(matches!(err, Error::Remote { status: 404, .. }), "{err}");
        desk.audit(0, 1).await.unwrap();
        admin.revoke_token(&id).await.unwrap();
        let err = desk.audit(0, 1).await.unwrap_err();
        assert!(matches!(err, Error::Remote { status: 401, .. }), "{err}");
        // Revoking again is no error; an unknown id is not found; the audit names it.
        admin.revoke_token(&id).await.unwrap();
        let err = admin.revoke_token("0000000000000000").await.unwrap_err();
        assert!(matches!(err, Error::Remote { status: 404, .. }), "{err}");
        let audit = admin.audit(0, 100).await.unwrap().entries;
        let revocations = audit
            .iter()
            .filter(|e| e.action == "token-revoke" && e.object == id)
            .count();
        assert_eq!(revocations, 1, "audited once, when it was revoked");
        // Audit pages: negative or out-of-range numbers are refused, not clamped.
        for q in ["after=-1", "limit=-5", "limit=0", "limit=1001", "after=x"] {
            let (status, body) = env
                .raw(
                    "GET",
                    &format!("/v1/audit?{q}"),
                    Some(&env.alpha),
                    None,
                    vec![],
                )
                .await;
            assert_eq!(status, 400, "{q}: {body}");
        }
    });
}

#[test]
fn concurrent_renewal_requests_for_one_card_yield_one_new_credential() {
    both(|pg| {
        Box::pin(async move {
            let Some(env) = env(pg).await else { return };
            let alpha = env.client(&env.alpha);
            let resident = env.enroll().await;
            let mut card = blank_card();
            env.personalize(&mut card, "p1", &resident).await;
            // 40 requests at once: half under one request key, half each under its own.
            let mut tasks = Vec::new();
            for k in 0..40 {
                let key = if k % 2 == 0 {
                    "same".to_owned()
                } else {
                    format!("other-{k}")
                };
                let (c, req) = (alpha.clone(), renewal(&key, &mut card, None));
                tasks.push(tokio::spawn(async move { (key, c.renew(&req).await) }));
            }
            let mut minted = std::collections::BTreeSet::new();
            let mut winners = std::collections::BTreeSet::new();
            for t in tasks {
                match t.await.unwrap() {
                    (key, Ok(step)) => {
                        winners.insert(key);
                        minted.insert(step.credential.unwrap());
                    }
                    (_, Err(Error::Remote { status: 409, .. })) => {}
                    (_, Err(e)) => panic!("{e}"),
                }
            }
            // One renewal (one request key) won, and it minted one credential.
            assert_eq!(
                (winners.len(), minted.len()),
                (1, 1),
                "{winners:?} {minted:?}"
            );
            let (creds, distinct) = env.svc.store.credential_counts("alpha").await.unwrap();
            assert_eq!((creds, distinct), (2, 2));
        })
    });
}

#[test]
fn a_slow_body_is_cut_and_a_request_without_a_token_is_refused_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt().block_on(async {
        let env = env(false).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = civis_http_serve::ServeLimits {
            body_timeout: std::time::Duration::from_millis(300),
            ..civis_http_serve::ServeLimits::default()
        };
        let app = civis_issuer::router(Arc::clone(&env.svc));
        tokio::spawn(civis_http_serve::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        // A body dripped a byte at a time under a valid token: 408, closed.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/residents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            env.alpha
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..100 {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_millis(100), s.read(&mut buf))
                .await
            {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"body_timeout\""), "{answer}");
        // A declared length over the limit: 413 from the head, without waiting for the body.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/residents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
            env.alpha
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answered before the body deadline")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        // Without a token, or with a made-up one, a body that does not parse is still 401:
        // nothing is read or parsed before the token is checked.
        for token in [
            None,
            Some("civis_0123456789abcdef.".to_owned() + &"0".repeat(64)),
        ] {
            let (status, body) = env
                .raw(
                    "POST",
                    "/v1/residents",
                    token.as_deref(),
                    Some("application/json"),
                    b"{\"zz\":1}".to_vec(),
                )
                .await;
            assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
        }
        // A token without the route's scope: 403 before the body.
        let (status, _) = env
            .raw(
                "POST",
                "/v1/credentials/x/status",
                Some(&env.alpha_enroll),
                Some("text/plain"),
                b"not json".to_vec(),
            )
            .await;
        assert_eq!(status, 403);
    });
}
