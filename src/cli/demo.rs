//! `civis demo`: the life of a citizen credential, printed step by step, on the embedded
//! defaults: a one-validator registry chain (commonware consensus, SQLite) started in this
//! process on free loopback ports, its HTTP API, a citizen card (the applet, reached through the
//! in-process transport) and a kiosk that syncs the registry state and verifies offline.
//!
//! It covers: a did:civis issuer and a kiosk registered and accredited on chain (the kiosk's
//! accreditation statement is what the card checks), a status list, a blank card generating its
//! key and being personalized, a tap (NFC handover, encrypted session, ReaderAuth), selective
//! disclosure by the card, offline verification against the synced snapshot, revocation through
//! the chain and a delta sync, and the refusals (revoked, tampered, clone, an element the kiosk
//! is not accredited for, stale registry state).

use std::sync::Arc;
use std::time::Instant;

use civis_core::Timestamp;
use civis_core::api::TxOutcome;
use civis_core::cbor::CborForm;
use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, DidDocument, DidUrl, KeyCommitment};
use civis_core::issuer_api::{EnrollRequest, StatusRequest};
use civis_core::kiosk::{ElementGrants as Grants, KioskAccreditation};
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{self, DeviceRequest, DeviceResponse, SessionTranscript};
use civis_core::verify::{TrustSnapshot, Verdict};
use civis_firmware_bridge::reader::{CardClient, Personalizer};
use civis_firmware_bridge::transport::InProcess;
use civis_firmware_bridge::virtual_card;
use civis_issuer::client::{Counter, IssuerClient};
use civis_registry::consensus::engine::Timing;
use civis_registry::files::{Endpoint, Network, PORT_BASE, RegistryDir};
use civis_registry::node::{self, NodeOptions};
use civis_registry_client::Client;
use civis_registry_client::keyfile::{read_key, write_key};
use civis_verifier::intake::read_card;
use civis_verifier::messages::{self, Lang};
use civis_verifier::policy::KioskPolicy;
use civis_verifier::station::{self, Trust};
use civis_verifier::sync::sync_snapshot;
use civis_wallet_core::applet::CardState;
use civis_wallet_core::holder;
use clap::Args;
use rand_core::OsRng;

/// Flags of `civis demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the presentation bytes as hex too.
    #[arg(long)]
    verbose: bool,
    /// After the demo, leave the registry, the issuer service and the kiosk screen running
    /// (until Ctrl-C) with a freshly personalized card to tap through pcscd.
    #[arg(long)]
    keep_running: bool,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn show(v: &Verdict) -> String {
    match v {
        Verdict::Accept(docs) => {
            let els: Vec<String> = docs
                .iter()
                .flat_map(|d| d.disclosed.iter().flat_map(|(_, e)| e.iter()))
                .map(|(k, v)| format!("{k}={}", mdoc::json::to_json(v)))
                .collect();
            format!("ACCEPT  {}", els.join(", "))
        }
        other => format!(
            "{}  ({})",
            other.name().to_uppercase(),
            other.reason().unwrap_or_default()
        ),
    }
}

/// Run the demo; returns the exit code.
pub fn run(args: &DemoArgs) -> i32 {
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("civis demo failed: {e}");
            1
        }
    }
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A one-validator registry in a temporary directory, running on a background thread.
struct Registry {
    dir: std::path::PathBuf,
    url: String,
    client: Client,
    chain: String,
    gov_key: SoftwareKey,
    gov_kid: DidUrl,
    gov_seq: u64,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Registry {
    async fn start() -> DemoResult<Self> {
        // A fresh folder only this user can enter: a random name, created here and failing if
        // it exists, so nobody can have made it beforehand and watch what the demo writes.
        let mut tag = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut tag);
        let dir = std::env::temp_dir().join(format!(
            "civis-demo-{}-{}",
            std::process::id(),
            hex::encode(tag)
        ));
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the demo's folder {}: {e}", dir.display()))?;
        let reg = RegistryDir::new(&dir);
        let genesis = reg.init(
            "civis-demo",
            1,
            PORT_BASE,
            civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
            now_secs(),
            &mut OsRng,
        )?;
        // Free ports rather than the defaults, so the demo runs beside anything else.
        let endpoint = Endpoint {
            p2p: std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            http: std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            key: None,
        };
        reg.set_network(&Network {
            validators: vec![endpoint.clone()],
        })?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let opts = NodeOptions {
            dir: reg.clone(),
            index: 0,
            db: None,
            listen: None,
            timing: Timing::default(),
            gossip: true,
            stop: Some(Arc::clone(&stop)),
            quiet: true,
            bulk_limits: Default::default(),
        };
        let thread = std::thread::spawn(move || {
            if let Err(e) = node::run(opts) {
                eprintln!("registry node failed: {e}");
            }
        });
        let url = format!("http://{}", endpoint.http);
        let client = Client::new(&url)?;
        let mut up = false;
        for _ in 0..200 {
            if client.health().await.is_ok_and(|h| h.height >= 1) {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !up {
            return Err("the registry node did not start".into());
        }
        let (gov_key, kid) = read_key(&reg.governance_key())?;
        let gov_kid = DidUrl::parse(&kid.ok_or("governance key has no kid")?)?;
        Ok(Self {
            dir,
            url,
            client,
            chain: genesis.chain_id,
            gov_key,
            gov_kid,
            gov_seq: 0,
            stop,
            thread: Some(thread),
        })
    }

    /// Sign, submit and wait for finality; prints the block height.
    async fn tx(&self, signer: &DidUrl, key: &SoftwareKey, seq: u64, op: Op) -> DemoResult<()> {
        let name = op.name();
        let tx = SignedTx::sign(
            Tx {
                chain: self.chain.clone(),
                seq,
                op,
            },
            signer.clone(),
            key,
        )?;
        let out = self
            .client
            .submit_and_wait(tx.bytes(), std::time::Duration::from_secs(30))
            .await?;
        let TxOutcome::Included { height } = out.outcome else {
            return Err(format!("{name} was not included: {:?}", out.outcome).into());
        };
        println!(
            "    {name:<18} tx {}…  final in block {height}",
            out.id.get(..12).unwrap_or(&out.id),
        );
        Ok(())
    }

    async fn governance(&mut self, op: Op) -> DemoResult<()> {
        let (kid, key) = (self.gov_kid.clone(), self.gov_key.clone());
        self.tx(&kid, &key, self.gov_seq, op).await?;
        self.gov_seq += 1;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The issuer service, in this process on a free port: the Civil Registry (accredited in the
/// demo) and the Tax Office (another agency sharing the service, never accredited here).
struct IssuerService {
    did: Did,
    url: String,
    token: String,
    other_token: String,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<civis_issuer::Result<()>>,
}

impl IssuerService {
    async fn start(registry: &Registry) -> DemoResult<Self> {
        let dir = registry.dir.join("issuer");
        let port = free_port()?;
        let done = civis_issuer::init(
            &civis_issuer::InitOptions {
                dir: dir.clone(),
                agency: "civil-registry".into(),
                name: "Civitas Civil Registry".into(),
                city: "Civitas".into(),
                districts: vec!["Harbour".into(), "Old Town".into(), "Riverside".into()],
                registry: vec![registry.url.clone()],
                genesis: registry.dir.join("genesis.json"),
                database: None,
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                batch: Some(("dev".into(), virtual_card::development_transport_key().0)),
                pkcs11: None,
            },
            &mut OsRng,
        )
        .await?;
        // A second agency in the same service.
        let tax = SoftwareKey::generate(&mut OsRng);
        let tax_next = SoftwareKey::generate(&mut OsRng);
        let tax_doc =
            DidDocument::inception(tax.public_key(), &KeyCommitment::to(tax_next.public_key()));
        write_key(
            &dir.join("tax.jwk"),
            &tax,
            Some(tax_doc.id.key_url(1).to_string()),
        )?;
        write_key(&dir.join("tax.next.jwk"), &tax_next, None)?;
        let mut text = std::fs::read_to_string(&done.config)?;
        text.push_str(
            "\n[[agency]]\nid = \"tax-office\"\nname = \"Civitas Tax Office\"\ncity = \"Civitas\"\n\
             districts = [\"Harbour\"]\nkey = \"tax.jwk\"\nnext_key = \"tax.next.jwk\"\n",
        );
        std::fs::write(&done.config, text)?;
        let svc =
            Arc::new(civis_issuer::Service::open(civis_issuer::Config::load(&done.config)?).await?);
        let (_, other_token) = civis_issuer::api::issue_token(
            &svc.store,
            "tax-office",
            "enroll,personalize,status,audit",
            "tax clerk",
            now_secs(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(civis_issuer::run_service(svc, listener, Arc::clone(&stop)));
        Ok(Self {
            did: Did::parse(&done.did)?,
            url: format!("http://127.0.0.1:{port}"),
            token: done.token,
            other_token,
            stop,
            task,
        })
    }

    fn client(&self, token: &str) -> DemoResult<IssuerClient> {
        Ok(IssuerClient::new(&self.url, token)?)
    }

    /// Until the Civil Registry's DID and status list are on chain.
    async fn wait_registered(&self) -> DemoResult<()> {
        let c = self.client(&self.token)?;
        for _ in 0..400 {
            if c.health()
                .await
                .is_ok_and(|h| !h.unregistered.iter().any(|a| a == "civil-registry"))
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err("the issuer's status list never reached the chain".into())
    }
}

impl Drop for IssuerService {
    fn drop(&mut self) {
        self.stop.notify_waiters();
        self.task.abort();
    }
}

/// What the counter sends to enroll the resident of `record`.
fn enrollment(request_key: &str, record: &CitizenRecord) -> EnrollRequest {
    EnrollRequest {
        request_key: request_key.into(),
        family_name: record.family_name.clone(),
        given_name: record.given_name.clone(),
        birth_date: record.birth_date.clone(),
        resident_district: record.resident_district.clone(),
        document_number: record.document_number.clone(),
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn demo(args: &DemoArgs) -> DemoResult<()> {
    // Two workers: the kept-running kiosk's card reader thread drives the runtime from outside.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let serving = std::sync::atomic::AtomicBool::new(false);
    rt.block_on(async {
        // The demo owns the signals from its first step: on any of them the demo's future is
        // dropped, and with it the registry, the issuer and the kiosk, which remove their folder.
        tokio::select! {
            done = demo_async(args, &serving) => done,
            signal = interrupted() => {
                if serving.load(std::sync::atomic::Ordering::SeqCst) {
                    println!("    {signal}: stopping");
                    Ok(())
                } else {
                    Err(format!("interrupted by {signal}; the demo's folder is removed").into())
                }
            }
        }
    })
}

/// The first of SIGINT, SIGTERM and SIGHUP.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = wait(SignalKind::interrupt()) => "SIGINT",
        () = wait(SignalKind::terminate()) => "SIGTERM",
        () = wait(SignalKind::hangup()) => "SIGHUP",
    }
}

async fn demo_async(args: &DemoArgs, serving: &std::sync::atomic::AtomicBool) -> DemoResult<()> {
    let mut rng = OsRng;
    let now = Timestamp(now_secs());

    step(
        0,
        "A registry chain starts: one validator (commonware simplex + marshal), SQLite, HTTP API",
    );
    let mut registry = Registry::start().await?;
    let health = registry.client.health().await?;
    println!(
        "    chain {}   height {}   state root {}…",
        health.chain_id,
        health.height,
        hex::encode(health.state_root).get(..16).unwrap_or_default()
    );

    step(
        1,
        "The Civil Registry's issuer service starts (embedded SQLite, key file) and registers its DID on chain",
    );
    let issuer = IssuerService::start(&registry).await?;
    let did = issuer.did.clone();
    println!("    issuer DID      {did}");
    let mut resolved = None;
    for _ in 0..200 {
        if let Ok(answer) = registry.client.did(&did).await {
            resolved = Some(answer.verify(&did)?);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let resolved = resolved.ok_or("the issuer's DID never reached the chain")?;
    println!(
        "    created by the service itself; resolved online with a Merkle proof against block {}",
        resolved.header.height
    );

    step(
        2,
        "Governance accredits it for citizen credentials; it opens a revocation list; a kiosk is registered and accredited",
    );
    registry
        .governance(Op::AccreditIssuer {
            issuer: did.clone(),
            doc_types: vec![citizen::DOC_TYPE.into()],
            until: now.0 + 365 * 86_400,
        })
        .await?;
    issuer.wait_registered().await?;
    println!("    the issuer service created its status list once accredited");
    // A kiosk: its own DID, accredited by governance to read three elements. The accreditation
    // statement is what the card checks; the chain records the same.
    let wanted = ["given_name", "age_over_18", "resident_district"];
    let kiosk = accredit_kiosk(
        &mut registry,
        vec![(
            citizen::DOC_TYPE.into(),
            vec![(
                citizen::NAMESPACE.into(),
                wanted.iter().map(|e| (*e).to_owned()).collect(),
            )],
        )],
        "service counter: name, age and district",
        (now.0 - 60, now.0 + 365 * 86_400),
        &mut rng,
    )
    .await?;
    println!("    kiosk DID       {}", kiosk.did);
    let (kiosk_key, statement) = (kiosk.key, kiosk.statement);
    let kiosk_did = kiosk.did;
    println!(
        "    the kiosk may read {} (statement of {} bytes for its ReaderAuth)",
        wanted.join(", "),
        statement.len()
    );

    step(
        3,
        "A blank card generates its key; the counter relays it to the issuer service, which checks the key, mints and personalizes",
    );
    let mut card = CardClient::new(InProcess::new(CardState::blank(
        [0x5A; 16],
        virtual_card::development_transport_key(),
    )));
    let operator = issuer.client(&issuer.token)?;
    let record = CitizenRecord::example();
    let resident = operator
        .enroll(&enrollment("demo-enroll-1", &record))
        .await?
        .resident;
    println!("    enrolled: resident {resident} (the issuer keeps only what a credential needs)");
    let counter = Counter {
        request_key: "demo-counter-1",
        resident: &resident,
        batch: "dev",
        pin: "246810",
        puk: "1357913579",
    };
    let done = operator
        .relay(&mut card, &counter, &mut |s| {
            let what = match s.state.as_str() {
                "started" => "GENERATE KEY on the card",
                "minted" if !s.needs.is_empty() => "minted; the counter enters PIN and PUK",
                "minted" => "PIN, PUK, governance set, PIN elements, credential",
                "written" => "LOCK",
                "issued" => "recorded as issued",
                _ => "",
            };
            println!("    {:<16} {} APDU(s)  {what}", s.state, s.commands.len());
        })
        .await?;
    let credential = done.credential.ok_or("no credential")?;
    // A locked card seals its facts to the batch's transport key, which the issuer holds.
    let card_info = card.info_with(&virtual_card::development_transport_key())?;
    let recorded = operator.credential(&credential).await?;
    println!(
        "    issued: credential {}…, status list entry {}; card locked: {}",
        credential.get(..12).unwrap_or_default(),
        recorded.status_index,
        card_info.locked
    );
    println!(
        "    card key {}… was generated on the card and never seen on any other card",
        hex::encode(card_info.public_key.unwrap_or_default())
            .get(..24)
            .unwrap_or_default()
    );
    let stranger = issuer.client(&issuer.other_token)?;
    match stranger.credential(&credential).await {
        Err(civis_issuer::Error::Remote { status, code, .. }) => println!(
            "    an operator of the Tax Office asks for this credential: {status} {code} (it is not theirs)"
        ),
        other => {
            return Err(format!("another agency's operator was not refused: {other:?}").into());
        }
    }

    step(
        4,
        "A kiosk syncs the registry state it will verify against offline (certified checkpoint)",
    );
    let genesis = RegistryDir::new(&registry.dir).genesis()?;
    let snapshot_file = registry.dir.join("kiosk.snapshot");
    let synced = sync_snapshot(&registry.client, &genesis, &snapshot_file).await?;
    println!(
        "    cold sync: {} bytes, certified height {}, state root {}…",
        synced.bundle_bytes,
        synced.height,
        hex::encode(synced.state_root).get(..16).unwrap_or_default()
    );
    let kiosk_trust = |path: &std::path::Path| -> DemoResult<TrustSnapshot> {
        let snap = KioskSnapshot::decode(&genesis, &std::fs::read(path)?)?;
        Ok(snap.trust_snapshot())
    };
    let snapshot = kiosk_trust(&snapshot_file)?;
    let rotations =
        KioskSnapshot::decode(&genesis, &std::fs::read(&snapshot_file)?)?.governance_rotations();

    step(
        5,
        "The kiosk taps the card: NFC handover, encrypted session, ReaderAuth with its accreditation",
    );
    // A tap as the kiosk makes it (`intake::read_card`), asking for `elements`.
    let tap = |card: &mut CardClient<InProcess>,
               elements: &[&str]|
     -> DemoResult<(Vec<u8>, SessionTranscript, DeviceRequest)> {
        card.transport().reset();
        let asks = KioskPolicy::parse(&format!("service:counter={}", elements.join(",")))?;
        let t = read_card(
            card, &asks, &kiosk_key, &statement, &rotations, None, &mut OsRng,
        )?;
        Ok((t.response, t.transcript, t.request))
    };
    let _ = card.take_stats();
    let (response, transcript, request) = tap(&mut card, &wanted)?;
    let link = card.take_stats();
    println!(
        "    {} APDUs, {} bytes to the card, {} bytes back; DeviceResponse {} bytes, signed on the card",
        link.apdus,
        link.bytes_out,
        link.bytes_in,
        response.len()
    );
    if args.verbose {
        println!("    {}", hex::encode(&response));
    }

    step(
        6,
        "The kiosk verifies offline against the registry state it synced",
    );
    // The kiosk's own code path: its policy for this counter, judged as `civis kiosk run`
    // and `civis kiosk verify` judge, with the reason its screen would show.
    let policy = KioskPolicy::parse(&format!("service:counter={}", wanted.join(",")))?;
    println!(
        "    policy {:?}; `civis kiosk run --config kiosk.toml` serves this screen at http://127.0.0.1:8480/ (specs/kiosk-screen.md)",
        format!("service:counter={}", wanted.join(","))
    );
    let judge = |bytes: &[u8],
                 transcript: &SessionTranscript,
                 request: &DeviceRequest,
                 snap: &TrustSnapshot| {
        let trust = Trust {
            trust: snap.clone(),
            height: 0,
            state_time: snap.as_of.map_or(0, |t| t.0),
        };
        let (verdict, outcome) = station::judge(
            &policy,
            Some(&trust),
            bytes,
            transcript,
            Some(request),
            now_secs(),
        );
        let says = messages::reason(Lang::En, &outcome.reason, None);
        if !says.is_empty() {
            println!(
                "    the kiosk screen says: {} ({})",
                says,
                outcome.reason.code()
            );
        }
        verdict
    };
    let check = |bytes: &[u8], snap: &TrustSnapshot| judge(bytes, &transcript, &request, snap);
    let started = Instant::now();
    let verdict = check(&response, &snapshot);
    let took = started.elapsed();
    println!("    {}", show(&verdict));
    println!("    (verified in {:.2} ms)", took.as_secs_f64() * 1e3);
    let accepted = matches!(verdict, Verdict::Accept(_));

    step(
        7,
        "The kiosk asks for the birth date, which its accreditation does not cover",
    );
    let (refused, refused_transcript, refused_request) =
        tap(&mut card, &["age_over_18", "birth_date"])?;
    let verdict = judge(&refused, &refused_transcript, &refused_request, &snapshot);
    println!("    {}", show(&verdict));
    let code = DeviceResponse::from_slice(&refused)?
        .documents
        .unwrap_or_default()
        .into_iter()
        .flat_map(|d| d.errors.unwrap_or_default())
        .flat_map(|(_, els)| els)
        .find(|(e, _)| e == "birth_date")
        .map(|(_, c)| c);
    match code {
        Some(holder::codes::NOT_ACCREDITED) => println!(
            "    the card refused birth_date: the kiosk is not accredited for it (error code {})",
            holder::codes::NOT_ACCREDITED
        ),
        other => return Err(format!("the card did not refuse birth_date: {other:?}").into()),
    }

    step(
        8,
        "A polling station authenticates the voter for an election: eligibility, PIN, election pseudonym",
    );
    let voted = evote_demo(
        &mut registry,
        &genesis,
        &snapshot_file,
        &mut card,
        counter.pin,
        &mut rng,
    )
    .await?;

    step(
        9,
        "The issuer revokes the credential on chain; the kiosk's delta sync carries it",
    );
    operator
        .change_status(
            &credential,
            &StatusRequest {
                request_key: "demo-revoke-1".into(),
                action: "revoke".into(),
            },
        )
        .await?;
    let mut anchored = None;
    for _ in 0..600 {
        let st = operator.status(&credential).await?;
        if st.pending.is_empty() {
            anchored = st.anchored;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let anchored = anchored.ok_or("the revocation was never anchored")?;
    println!(
        "    the issuer recorded the revocation and anchored it in an update-status transaction (block {})",
        anchored.height.unwrap_or_default()
    );
    let delta = sync_snapshot(&registry.client, &genesis, &snapshot_file).await?;
    println!(
        "    delta sync: {} bytes, height {} -> {}",
        delta.bundle_bytes,
        delta.from.unwrap_or_default(),
        delta.height
    );
    let revoked = kiosk_trust(&snapshot_file)?;
    println!("    {}", show(&check(&response, &revoked)));

    step(10, "Someone edits a disclosed value in transit");
    let mut tampered = response.clone();
    if let Some(b) = tampered
        .windows(7)
        .position(|w| w == b"Harbour")
        .and_then(|pos| tampered.get_mut(pos))
    {
        *b = b'h';
    }
    println!("    {}", show(&check(&tampered, &snapshot)));

    step(
        11,
        "The credential is copied onto another card with a different key (a clone)",
    );
    let mut clone = CardClient::new(InProcess::new(CardState::blank(
        [0x66; 16],
        virtual_card::development_transport_key(),
    )));
    Personalizer::start(&mut clone, virtual_card::development_transport_key())?.generate_key()?;
    let mut cloned = clone.transport().state().clone();
    let original = card.transport().state().clone();
    cloned.credentials = original.credentials.clone();
    cloned.governance = original.governance.clone();
    cloned.locked = true;
    let mut clone = CardClient::new(InProcess::new(cloned));
    let (clone_response, clone_transcript, clone_request) = tap(&mut clone, &wanted)?;
    let verdict = judge(
        &clone_response,
        &clone_transcript,
        &clone_request,
        &snapshot,
    );
    println!("    {}", show(&verdict));

    step(
        12,
        "A kiosk that has been offline for three days cannot vouch for current registry state",
    );
    let mut stale = snapshot.clone();
    stale.as_of = stale.as_of.map(|t| t.plus_secs(-3 * 24 * 3600));
    println!("    {}", show(&check(&response, &stale)));

    if !accepted {
        return Err("the honest presentation was not accepted".into());
    }
    if !voted {
        return Err("the polling station did not catch the double authentication".into());
    }
    if args.keep_running {
        let kiosk = DemoKiosk {
            key: &kiosk_key,
            kid: kiosk_did.key_url(1),
            statement: &statement,
            policy: format!("service:counter={}", wanted.join(",")),
        };
        keep_running(&registry, &issuer, &operator, &kiosk, serving).await?;
    }
    drop(registry);
    println!();
    if accepted {
        println!("demo complete: one accept, and every refusal for the right reason.");
        Ok(())
    } else {
        Err("the honest presentation was not accepted".into())
    }
}

/// A kiosk registered on chain: its key, its DID and its governance-signed accreditation.
struct AccreditedKiosk {
    key: SoftwareKey,
    did: Did,
    statement: Vec<u8>,
}

/// Register a kiosk's DID and have governance accredit it for `grants`: the statement is what
/// cards check; the chain records the same.
async fn accredit_kiosk(
    registry: &mut Registry,
    grants: Grants,
    purpose: &str,
    (not_before, not_after): (i64, i64),
    rng: &mut (impl rand_core::CryptoRngCore + Send),
) -> DemoResult<AccreditedKiosk> {
    let key = SoftwareKey::generate(rng);
    let next = SoftwareKey::generate(rng);
    let commitment = KeyCommitment::to(next.public_key());
    let doc = DidDocument::inception(key.public_key(), &commitment);
    registry
        .tx(
            &doc.id.key_url(1),
            &key,
            0,
            Op::CreateDid {
                key: key.public_key().clone(),
                next: commitment,
            },
        )
        .await?;
    let accreditation = KioskAccreditation {
        chain: registry.chain.clone(),
        kiosk: doc.id.clone(),
        key: key.public_key().clone(),
        grants,
        purpose: purpose.into(),
        not_before,
        not_after,
    };
    let statement = accreditation.sign(&registry.gov_kid, &registry.gov_key)?;
    registry
        .governance(Op::AccreditKiosk {
            kiosk: doc.id.clone(),
            grants: accreditation.grants,
            purpose: accreditation.purpose,
            not_before,
            not_after,
            statement: statement.clone(),
        })
        .await?;
    Ok(AccreditedKiosk {
        key,
        did: doc.id,
        statement,
    })
}

/// A polling station: accredited for the eligibility elements, the VRF key the issuer bound
/// and the pseudonym — not for names, birth dates or document numbers.
async fn polling_station(
    registry: &mut Registry,
    election: &str,
    now: i64,
    rng: &mut (impl rand_core::CryptoRngCore + Send),
) -> DemoResult<AccreditedKiosk> {
    use civis_core::evote;
    let grants = vec![(
        citizen::DOC_TYPE.into(),
        vec![
            (
                citizen::NAMESPACE.into(),
                vec![
                    "age_over_18".into(),
                    "resident_district".into(),
                    evote::VRF_KEY.into(),
                ],
            ),
            (evote::NAMESPACE.into(), vec![evote::PSEUDONYM.into()]),
        ],
    )];
    accredit_kiosk(
        registry,
        grants,
        &format!("polling station, election {election}"),
        (now - 60, now + 86_400),
        rng,
    )
    .await
}

/// Step 8: governance registers an election and accredits two polling stations; they sync,
/// the card is tapped at the first with a wrong PIN, with the PIN, and again (caught there), then
/// at the second, offline (it knows nothing yet); the stations exchange signed records and both
/// find the double authentication. Returns whether they did.
async fn evote_demo(
    registry: &mut Registry,
    genesis: &civis_core::chain::state::Genesis,
    snapshot_file: &std::path::Path,
    card: &mut CardClient<InProcess>,
    pin: &str,
    rng: &mut (impl rand_core::CryptoRngCore + Send),
) -> DemoResult<bool> {
    use civis_core::evote::{Reauth, StationRecords};
    use civis_verifier::ledger::{self, Authentication, Recorded};
    use civis_verifier::store::KioskStore;

    let now = now_secs();
    let election = "council-2027";
    let districts = ["Harbour", "Old Town"];
    registry
        .governance(Op::RegisterElection {
            id: election.into(),
            eligibility: vec![
                ("age_over_18".into(), ciborium::Value::Bool(true)),
                (
                    "resident_district".into(),
                    ciborium::Value::Array(
                        districts
                            .iter()
                            .map(|d| ciborium::Value::Text((*d).into()))
                            .collect(),
                    ),
                ),
            ],
            opens: now - 60,
            closes: now + 86_400,
            reauth: Reauth::Refuse,
        })
        .await?;
    println!(
        "    election {election}: aged 18 or over, resident of {}; a second authentication is refused",
        districts.join(" or ")
    );
    let a = polling_station(registry, election, now, rng).await?;
    let b = polling_station(registry, election, now, rng).await?;
    let delta = sync_snapshot(&registry.client, genesis, snapshot_file).await?;
    println!(
        "    polling stations A {} and B {} synced to height {}",
        a.did, b.did, delta.height
    );
    let snap = KioskSnapshot::decode(genesis, &std::fs::read(snapshot_file)?)?;
    let mut policy = KioskPolicy::parse(&format!("evote:{election}"))?;
    policy.resolve(&snap, &genesis.chain_id)?;
    for s in [&a, &b] {
        civis_verifier::intake::check_accreditation(&snap, &s.statement, &policy, now)?;
    }
    let trust = Trust {
        trust: snap.trust_snapshot(),
        height: delta.height,
        state_time: now,
    };
    // Each station its own ledger: offline, they know only their own taps.
    let ledger_a = KioskStore::open(&registry.dir.join("station-a.db")).await?;
    let ledger_b = KioskStore::open(&registry.dir.join("station-b.db")).await?;
    let mut caught_here = false;
    for (what, (station, store), pin) in [
        ("A: tap with a wrong PIN", (&a, &ledger_a), "000000"),
        ("A: tap with the PIN", (&a, &ledger_a), pin),
        ("A: the same card again", (&a, &ledger_a), pin),
        ("B, offline: the same card", (&b, &ledger_b), pin),
    ] {
        card.transport().reset();
        let started = Instant::now();
        let tap = read_card(
            card,
            &policy,
            &station.key,
            &station.statement,
            &snap.governance_rotations(),
            Some(pin),
            &mut OsRng,
        )?;
        let (verdict, outcome) = station::judge(
            &policy,
            Some(&trust),
            &tap.response,
            &tap.transcript,
            Some(&tap.request),
            now_secs(),
        );
        let (verdict, recorded) =
            ledger::admit(store, &policy, verdict, station.did.as_str(), now_ms()).await?;
        let took = started.elapsed();
        // What the station shows: the policy's elements, never the VRF key or the proof.
        let said = match &verdict {
            Verdict::Accept(_) => format!(
                "ACCEPT  {}",
                outcome
                    .shown
                    .iter()
                    .map(|(e, v)| format!("{e}={}", messages::element_value(Lang::En, v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => show(other),
        };
        println!(
            "    {what}: {said} ({:.0} ms, tap to recorded)",
            took.as_secs_f64() * 1e3
        );
        if let Some(Recorded::Again { first, .. }) = &recorded {
            caught_here = matches!(verdict, Verdict::Reject(_));
            println!(
                "    double authentication caught at the station: first authenticated there {} ms earlier",
                now_ms().saturating_sub(first.at)
            );
        }
        if let (Some(Recorded::First), Verdict::Accept(docs)) = (&recorded, &verdict)
            && let Some(p) = docs.first().and_then(|d| policy.pseudonym(d))
        {
            println!(
                "    recorded pseudonym {}… (the VRF output for this chain and election; no name, no birth date, no key)",
                p.hex().get(..16).unwrap_or_default()
            );
        }
    }
    // The exchange: each station signs its records with its kiosk key; the other checks the
    // signature and the accreditation against the chain before it imports anything.
    let mut found = Vec::new();
    for ((from, from_ledger), to_ledger) in
        [((&a, &ledger_a), &ledger_b), ((&b, &ledger_b), &ledger_a)]
    {
        let own = from_ledger
            .station_records(election, from.did.as_str())
            .await?;
        let signed = StationRecords {
            chain: genesis.chain_id.clone(),
            election: election.into(),
            station: from.did.to_string(),
            records: own.iter().map(|a| (a.pseudonym, a.at)).collect(),
        }
        .sign(&from.key, &from.statement)?;
        let checked = StationRecords::verify(&signed, &genesis.chain_id, |did| {
            civis_verifier::intake::recorded_statement(&snap, did)
        })?;
        let records: Vec<Authentication> = checked
            .records
            .iter()
            .map(|(p, at)| Authentication {
                pseudonym: *p,
                station: checked.station.clone(),
                at: *at,
            })
            .collect();
        let imported = to_ledger.import_authentications(election, &records).await?;
        found.push(imported.duplicates);
    }
    println!(
        "    the stations exchange signed records: B finds {} double authentication(s) in A's, A finds {} in B's",
        found.first().copied().unwrap_or_default(),
        found.get(1).copied().unwrap_or_default()
    );
    let tally = ledger_a.tally(election).await?;
    ledger_a.close().await;
    ledger_b.close().await;
    let stations_seen = tally.duplicates.first().map_or(0, |(_, _, s)| s.len());
    println!(
        "    civis evote tally-auth at A: {} authentications, {} voter(s), {} duplicate(s), seen at {} station(s)",
        tally.authentications,
        tally.voters,
        tally.duplicates.len(),
        stations_seen
    );
    Ok(caught_here
        && found.iter().all(|n| *n > 0)
        && tally.voters == 1
        && tally.duplicates.len() == 1
        && stations_seen == 2)
}

/// The demo kiosk, as `--keep-running` hands it to a real kiosk screen.
struct DemoKiosk<'a> {
    key: &'a SoftwareKey,
    kid: DidUrl,
    statement: &'a [u8],
    policy: String,
}

/// The PC/SC name of vsmartcard's vpcd reader, where `civis card serve` plugs the virtual card.
const VPCD_READER: &str = "Virtual PCD 00 00";

/// `--keep-running`: personalize a second, unrevoked card into a state file `civis card serve`
/// can present, write a kiosk configuration beside it and serve the kiosk screen from it until
/// Ctrl-C, with the registry and the issuer service still up.
async fn keep_running(
    registry: &Registry,
    issuer: &IssuerService,
    operator: &IssuerClient,
    kiosk: &DemoKiosk<'_>,
    serving: &std::sync::atomic::AtomicBool,
) -> DemoResult<()> {
    step(
        12,
        "Kept running: a fresh card for you to tap, and the kiosk screen serving from this chain",
    );
    let record = CitizenRecord {
        given_name: "Noor".into(),
        family_name: "Haddad".into(),
        birth_date: "2001-09-30".into(),
        resident_district: "Old Town".into(),
        document_number: "CIV-000043".into(),
        ..CitizenRecord::example()
    };
    let resident = operator
        .enroll(&enrollment("demo-enroll-2", &record))
        .await?
        .resident;
    let mut card = CardClient::new(InProcess::new(CardState::blank(
        [0x77; 16],
        virtual_card::development_transport_key(),
    )));
    let counter = Counter {
        request_key: "demo-counter-2",
        resident: &resident,
        batch: "dev",
        pin: "246810",
        puk: "1357913579",
    };
    operator.relay(&mut card, &counter, &mut |_| {}).await?;
    let dir = &registry.dir;
    let card_file = dir.join("card.state");
    virtual_card::save(&card_file, card.transport().state())?;
    write_key(
        &dir.join("kiosk.jwk"),
        kiosk.key,
        Some(kiosk.kid.to_string()),
    )?;
    std::fs::write(dir.join("kiosk.accreditation"), kiosk.statement)?;
    // The usual kiosk port when it is free, so the address is easy to type.
    let port = if std::net::TcpListener::bind(("127.0.0.1", 8480)).is_ok() {
        8480
    } else {
        free_port()?
    };
    let reader = if cfg!(feature = "nfc") {
        format!(
            "\n[reader]\nname = \"{VPCD_READER}\"\nkey = \"kiosk.jwk\"\naccreditation = \"kiosk.accreditation\"\n"
        )
    } else {
        String::new()
    };
    let config = dir.join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndb = \"kiosk.db\"\ngenesis = \"genesis.json\"\n\
             registries = [\"{}\"]\nsync_interval_secs = 10\npolicy = \"{}\"\n{reader}",
            registry.url, kiosk.policy
        ),
    )?;
    let cfg = civis_verifier::config::KioskConfig::load(&config)?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let screen = tokio::spawn(civis_verifier::kiosk::run(cfg, Arc::clone(&stop), |addr| {
        let _ = ready_tx.send(addr);
    }));
    let Ok(addr) = ready_rx.await else {
        return match screen.await {
            Ok(Err(e)) => Err(format!("the kiosk screen did not start: {e}").into()),
            _ => Err("the kiosk screen did not start".into()),
        };
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "civis".into());
    println!("    registry node    {}/v1/health", registry.url);
    println!(
        "    issuer service   {}/health   (operator token {}, specs/issuer-api.md)",
        issuer.url, issuer.token
    );
    println!("    kiosk screen     http://{addr}/   (open it in a browser)");
    println!("    kiosk config     {}", config.display());
    println!(
        "    a card for {} {} ({}), personalized and locked: {}",
        record.given_name,
        record.family_name,
        record.resident_district,
        card_file.display()
    );
    if cfg!(feature = "nfc") {
        println!(
            "    tap it: in another terminal, with pcscd and vpcd running (./scripts/demo.sh --keep-running starts them),\n\
             \x20     {exe} card serve --state {}\n\
             \x20   the kiosk reads it through the reader {VPCD_READER:?}; stop that command (Ctrl-C) to take the card away",
            card_file.display()
        );
    } else {
        println!(
            "    this binary has no card reader support: build with `--features nfc` (./scripts/demo.sh --keep-running does) to tap the card"
        );
    }
    println!("    Ctrl-C stops everything and deletes {}", dir.display());
    // Until a signal ends the demo (see `demo`): the kiosk stops with this future.
    let _stop_kiosk = NotifyOnDrop(stop);
    serving.store(true, std::sync::atomic::Ordering::SeqCst);
    match screen.await {
        Ok(Err(e)) => Err(format!("the kiosk screen stopped: {e}").into()),
        _ => Err("the kiosk screen stopped".into()),
    }
}

/// Tells the kiosk to stop when the demo's future is dropped.
struct NotifyOnDrop(Arc<tokio::sync::Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}
