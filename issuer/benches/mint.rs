//! Credentials minted per second: reserve a status index, build and sign the mdoc, record it
//! with its audit entry (no card, no HTTP), with a key file, on SQLite and (when
//! `CIVIS_TEST_POSTGRES_URL` is set) PostgreSQL, by 1 and 8 concurrent clients.
//!
//! `source scripts/env.sh && start_postgres && cargo bench -p civis-issuer --bench mint`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::{DidDocument, KeyCommitment};
use civis_core::issuer_api::{EnrollRequest, MintRequest};
use civis_issuer::service::Actor;
use civis_issuer::{Config, Service};
use civis_registry_client::keyfile;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_core::OsRng;

static KEYS: AtomicU64 = AtomicU64::new(0);

/// A SoftHSM2 token from `scripts/env.sh`'s `start_softhsm`: module, token, PIN.
fn softhsm() -> Option<(String, String, String)> {
    Some((
        std::env::var("CIVIS_TEST_PKCS11_MODULE").ok()?,
        std::env::var("CIVIS_TEST_PKCS11_TOKEN").ok()?,
        std::env::var("CIVIS_TEST_PKCS11_PIN").ok()?,
    ))
}

async fn service(
    dir: &std::path::Path,
    database: &str,
    hsm: Option<&(String, String, String)>,
) -> Arc<Service> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let genesis = Genesis {
        chain_id: "bench".into(),
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
    let next = SoftwareKey::generate(&mut OsRng);
    keyfile::write_key(&dir.join("a.next.jwk"), &next, None).unwrap();
    let key_lines = match hsm {
        None => {
            let key = SoftwareKey::generate(&mut OsRng);
            let doc =
                DidDocument::inception(key.public_key(), &KeyCommitment::to(next.public_key()));
            keyfile::write_key(
                &dir.join("a.jwk"),
                &key,
                Some(doc.id.key_url(1).to_string()),
            )
            .unwrap();
            "key = \"a.jwk\"\nnext_key = \"a.next.jwk\"\n".to_owned()
        }
        Some((module, token, pin)) => {
            let label = format!(
                "bench-{}-{}",
                std::process::id(),
                KEYS.fetch_add(1, Ordering::Relaxed)
            );
            let (public, next) =
                civis_issuer::hsm::generate_first(module.as_ref(), token, pin, &label).unwrap();
            let doc = DidDocument::inception(&public, &KeyCommitment::to(&next));
            std::fs::write(dir.join("pin"), pin).unwrap();
            format!(
                "[agency.pkcs11]\nmodule = {module:?}\ntoken = {token:?}\npin_file = \"pin\"\n\
                 label = {label:?}\nkid = {:?}\n",
                doc.id.key_url(1).to_string()
            )
        }
    };
    let text = format!(
        "database = \"{database}\"\nregistry = [\"http://127.0.0.1:1\"]\ngenesis = \"genesis.json\"\n\
         [[agency]]\nid = \"a\"\nname = \"A\"\ncity = \"C\"\ndistricts = [\"Harbour\"]\n\
         status_list_size = 100000000\n{key_lines}"
    );
    std::fs::write(dir.join("issuer.toml"), text).unwrap();
    let config = Config::load(&dir.join("issuer.toml")).unwrap();
    Arc::new(Service::open(config).await.unwrap())
}

async fn postgres_url(name: &str) -> Option<String> {
    let admin = std::env::var("CIVIS_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .ok()?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .ok()?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let (base, _) = admin.rsplit_once('/')?;
    Some(format!("{base}/{name}"))
}

/// Mint `n` credentials with `clients` concurrent callers; returns the elapsed time.
async fn run(svc: &Arc<Service>, resident: &str, n: u64, clients: u64) -> Duration {
    let device = SoftwareKey::generate(&mut OsRng)
        .public_key()
        .uncompressed()
        .to_vec();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (svc, resident, device) = (Arc::clone(svc), resident.to_owned(), device.clone());
        let each = n.div_ceil(clients);
        tasks.push(tokio::spawn(async move {
            let agency = Arc::clone(svc.agency("a").unwrap());
            let actor = Actor {
                token: "bench".into(),
                agency: "a".into(),
                scopes: vec!["personalize".into()],
            };
            for _ in 0..each {
                let req = MintRequest {
                    request_key: format!("m{}", KEYS.fetch_add(1, Ordering::Relaxed)),
                    resident: resident.clone(),
                    device_key: device.clone(),
                };
                civis_issuer::api::mint_for_key(&svc, &agency, &actor, &req)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = std::env::temp_dir().join(format!("civis-mint-bench-{}", std::process::id()));
    let mut stores = vec![(
        "sqlite",
        format!("sqlite:{}", base.join("sqlite/issuer.db").display()),
    )];
    if let Some(pg) = rt.block_on(postgres_url("issuer_mint_bench")) {
        stores.push(("postgres", pg));
    }
    let mut g = c.benchmark_group("mint");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    let hsm = softhsm();
    let mut runs: Vec<(&str, &str, String)> = Vec::new();
    for (name, url) in &stores {
        runs.push(("key-file", name, url.clone()));
        if hsm.is_some() {
            runs.push(("softhsm2", name, url.clone()));
        }
    }
    for (key, name, url) in &runs {
        let url = if *name == "sqlite" {
            format!(
                "sqlite:{}",
                base.join(format!("{key}-{name}/issuer.db")).display()
            )
        } else {
            url.clone()
        };
        let svc = rt.block_on(service(
            &base.join(format!("{key}-{name}")),
            &url,
            (*key == "softhsm2").then_some(hsm.as_ref()).flatten(),
        ));
        let actor_token = rt.block_on(async {
            civis_issuer::api::issue_token(&svc.store, "a", "enroll", "b", 0).await
        });
        drop(actor_token);
        let resident = rt.block_on(async {
            let now = svc.now();
            let today = time::OffsetDateTime::from_unix_timestamp(now)
                .unwrap()
                .date();
            let req = EnrollRequest {
                request_key: "r".into(),
                family_name: "Jansen".into(),
                given_name: "Mira".into(),
                birth_date: "1990-04-12".into(),
                resident_district: "Harbour".into(),
                document_number: "CIV-1".into(),
            };
            let agency = svc.agency("a").unwrap();
            let attrs =
                civis_issuer::enroll::Attributes::check(&req, &agency.config, today).unwrap();
            let audit = civis_issuer::store::Audit {
                agency: "a",
                actor: "bench",
                action: "enroll",
                object: "r",
                request_key: "r",
                at: now,
            };
            svc.store
                .enroll("r1", &attrs.to_bytes(), &audit)
                .await
                .unwrap()
                .0
        });
        for clients in [1u64, 8] {
            g.bench_function(format!("{key}/{name}/{clients}-clients"), |b| {
                b.iter_custom(|iters| rt.block_on(run(&svc, &resident, iters, clients)))
            });
        }
        rt.block_on(svc.store.close());
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group!(benches, bench);
criterion_main!(benches);
