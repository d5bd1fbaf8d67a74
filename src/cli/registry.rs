//! `civis registry …`: run the registry chain and talk to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use civis_core::api::TxOutcome;
use civis_core::chain::tx::{ElementGrants, Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, DidUrl, KeyCommitment};
use civis_core::status::StatusDelta;
use civis_registry::bulk_reads::{Allowance, BulkLimits};
use civis_registry::consensus::engine::Timing;
use civis_registry::files::RegistryDir;
use civis_registry::node::{self, NodeOptions};
use civis_registry_client::Client;
use civis_registry_client::keyfile::{read_key, write_key, write_secret};
use civis_verifier::sync::sync_snapshot;
use clap::{Args, Subcommand};

/// Registry commands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Create a registry: genesis, validator keys, a governance key, network.json.
    Init {
        /// Directory to create.
        #[arg(long)]
        dir: PathBuf,
        /// Number of validators.
        #[arg(long, default_value_t = 1)]
        validators: usize,
        /// Chain id (also the consensus namespace).
        #[arg(long, default_value = "civis-local")]
        chain_id: String,
        /// First port: validator I listens for p2p on BASE+I and HTTP on BASE+100+I.
        #[arg(long, default_value_t = civis_registry::files::PORT_BASE)]
        port_base: u16,
        /// Blocks per consensus epoch: a validator-set change takes effect at the end of the
        /// epoch it is approved in.
        #[arg(long, default_value_t = civis_core::chain::state::DEFAULT_EPOCH_LENGTH)]
        epoch_length: u64,
    },
    /// Prepare one more validator: a key file and a network.json entry (vote it in with
    /// `tx set-validators`, then run it).
    AddValidator {
        /// Registry directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run a validator until SIGINT/SIGTERM.
    Run {
        /// Registry directory.
        #[arg(long)]
        dir: PathBuf,
        /// Which validator.
        #[arg(long, default_value_t = 0)]
        validator: usize,
        /// Database: sqlite:PATH or postgres://… (default: SQLite in DIR/validator-I/).
        #[arg(long)]
        db: Option<String>,
        /// HTTP listen address (default: from network.json).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Do not gossip client transactions to the other validators (each then waits for
        /// this node to lead a view, and is lost if this node is).
        #[arg(long)]
        no_gossip: bool,
        /// `/v1/sync` requests one client address may make at once.
        #[arg(long, default_value_t = 10)]
        sync_burst: u32,
        /// `/v1/sync` requests a client address regains per second.
        #[arg(long, default_value_t = 1.0)]
        sync_per_second: f64,
    },
    /// Generate a DID key pair: FILE (key-1) and FILE's `.next.jwk` (the pre-rotation key).
    Keygen {
        /// Key file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign and submit a transaction, then wait for it.
    Tx(TxArgs),
    /// Resolve a DID online and check its proof.
    Resolve {
        /// Node URL.
        #[arg(long)]
        node: String,
        /// The DID.
        did: String,
    },
    /// Create or advance a kiosk snapshot from a node's sync bundle.
    Sync {
        /// Node URL.
        #[arg(long)]
        node: String,
        /// The pinned genesis.json.
        #[arg(long)]
        genesis: PathBuf,
        /// Snapshot file (created if absent).
        #[arg(long)]
        snapshot: PathBuf,
    },
}

/// `civis evote register`.
#[derive(Debug, Args)]
pub struct ElectionArgs {
    /// Node URL.
    #[arg(long)]
    node: String,
    /// A governance member's key file (private JWK; kid = DID URL).
    #[arg(long)]
    key: PathBuf,
    /// Election id (1–64 bytes).
    #[arg(long)]
    id: String,
    /// Voters must be 18 or over (`age_over_18 = true`).
    #[arg(long)]
    age_over_18: bool,
    /// A district whose residents may vote (repeat for several; none: any district).
    #[arg(long = "district")]
    districts: Vec<String>,
    /// Any other rule, `element=JSON value` (repeat).
    #[arg(long = "require")]
    require: Vec<String>,
    /// Opening time (Unix seconds).
    #[arg(long)]
    opens: i64,
    /// Closing time (Unix seconds, exclusive).
    #[arg(long)]
    closes: i64,
    /// A second authentication of one voter: `refuse` it, or let the `last-counts`.
    #[arg(long, default_value = "refuse", value_parser = ["refuse", "last-counts"])]
    reauth: String,
}

/// Run `civis evote register`: a `register-election` transaction, waited for. The id, the
/// window and the rule are checked here first (exit 64 with the reason), so nothing is signed
/// that the chain would refuse for them.
pub fn register_election(args: ElectionArgs) -> i32 {
    let mut require = args.require;
    if args.age_over_18 {
        require.push("age_over_18=true".into());
    }
    if !args.districts.is_empty() {
        require.push(format!(
            "resident_district={}",
            serde_json::Value::from(args.districts)
        ));
    }
    let checked = (|| -> Result<()> {
        anyhow::ensure!(
            civis_core::evote::valid_election_id(&args.id),
            "--id must be 1 to 64 bytes without control characters"
        );
        anyhow::ensure!(args.closes > args.opens, "--closes must be after --opens");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        anyhow::ensure!(args.closes > now, "--closes is in the past");
        election_rule(&require).map(drop)
    })();
    if let Err(e) = checked {
        eprintln!("error: {}", civis_verifier::kiosk::tame(&format!("{e:#}")));
        return crate::cli::EXIT_USAGE;
    }
    run(RegistryCommand::Tx(TxArgs {
        node: args.node,
        key: args.key,
        seq: None,
        no_wait: false,
        op: TxOp::RegisterElection {
            id: args.id,
            require,
            opens: args.opens,
            closes: args.closes,
            reauth: args.reauth,
        },
    }))
}

/// `civis registry tx`.
#[derive(Debug, Args)]
pub struct TxArgs {
    /// Node URL.
    #[arg(long)]
    node: String,
    /// Signer key file (private JWK; kid = DID URL).
    #[arg(long)]
    key: PathBuf,
    /// Sequence number (default: the node's next free one).
    #[arg(long)]
    seq: Option<u64>,
    /// Return once submitted instead of waiting for inclusion.
    #[arg(long)]
    no_wait: bool,
    #[command(subcommand)]
    op: TxOp,
}

/// Operations.
#[derive(Debug, Subcommand)]
pub enum TxOp {
    /// Register the key file's DID (key-1, committing to the `.next.jwk` key).
    CreateDid,
    /// Rotate to the committed `.next.jwk` key, committing to a fresh one.
    Rotate,
    /// Deactivate the DID for good.
    Deactivate,
    /// Governance: accredit an issuer.
    AccreditIssuer {
        /// Issuer DID.
        #[arg(long)]
        issuer: String,
        /// docType it may issue (repeat).
        #[arg(long = "doc-type", required = true)]
        doc_types: Vec<String>,
        /// Until (Unix seconds).
        #[arg(long)]
        until: i64,
    },
    /// Governance: withdraw an issuer's accreditation.
    RevokeIssuer {
        /// Issuer DID.
        #[arg(long)]
        issuer: String,
    },
    /// Governance: accredit a kiosk.
    AccreditKiosk {
        /// Kiosk DID.
        #[arg(long)]
        kiosk: String,
        /// `docType/namespace/element` it may read (repeat).
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Why it reads them.
        #[arg(long)]
        purpose: String,
        /// Start (Unix seconds).
        #[arg(long)]
        not_before: i64,
        /// End (Unix seconds).
        #[arg(long)]
        not_after: i64,
        /// Also write the signed accreditation statement (COSE_Sign1, what the kiosk puts in
        /// ReaderAuth) to this file.
        #[arg(long)]
        statement_out: Option<PathBuf>,
    },
    /// An accredited issuer creates a status list.
    CreateStatusList {
        /// List name.
        #[arg(long)]
        list: String,
        /// Bits per entry (1, 2, 4, 8).
        #[arg(long, default_value_t = 1)]
        bits: u8,
        /// Entries.
        #[arg(long)]
        size: u64,
    },
    /// The list's issuer sets entries: `--set INDEX=VALUE` (repeat).
    StatusUpdate {
        /// List name.
        #[arg(long)]
        list: String,
        /// `INDEX=VALUE`.
        #[arg(long = "set", required = true)]
        set: Vec<String>,
    },
    /// Governance: the validator set from the end of the current epoch on.
    SetValidators {
        /// A validator: its public key (Multikey) or its key file (repeat, in any order).
        #[arg(long = "validator", required = true)]
        validators: Vec<String>,
    },
    /// Governance: register an election.
    RegisterElection {
        /// Election id.
        #[arg(long)]
        id: String,
        /// `element=JSON value` a voter must prove (repeat), e.g. `age_over_18=true`.
        #[arg(long = "require")]
        require: Vec<String>,
        /// Opening time (Unix seconds).
        #[arg(long)]
        opens: i64,
        /// Closing time (Unix seconds).
        #[arg(long)]
        closes: i64,
        /// A second authentication of one voter: `refuse` it, or let the `last-counts`.
        #[arg(long, default_value = "refuse", value_parser = ["refuse", "last-counts"])]
        reauth: String,
    },
}

/// Run a registry command; returns the exit code.
pub fn run(cmd: RegistryCommand) -> i32 {
    match execute(cmd) {
        Ok(()) => 0,
        Err(e) => {
            // A registry's answer or a flag's text may reach this line: no escape sequences.
            eprintln!("error: {}", civis_verifier::kiosk::tame(&format!("{e:#}")));
            1
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A validator's public key from a Multikey string or a key file.
fn validator_key(v: &str) -> Result<civis_core::crypto::EcPublicKey> {
    if Path::new(v).is_file() {
        return Ok(read_key(Path::new(v))?.0.public_key().clone());
    }
    civis_core::did::multikey_decode(v)
        .map_err(|e| anyhow!("--validator {v:?} is neither a key file nor a Multikey: {e}"))
}

/// `alice.jwk` → `alice.next.jwk`.
pub fn next_key_path(key: &Path) -> PathBuf {
    sibling_key_path(key, "next")
}

/// `alice.jwk` → `alice.WHICH.jwk`.
fn sibling_key_path(key: &Path, which: &str) -> PathBuf {
    let stem = key
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    key.with_file_name(format!("{stem}.{which}.jwk"))
}

fn execute(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Init {
            dir,
            validators,
            chain_id,
            port_base,
            epoch_length,
        } => {
            let reg = RegistryDir::new(&dir);
            let g = reg.init(
                &chain_id,
                validators,
                port_base,
                epoch_length,
                now(),
                &mut rand_core::OsRng,
            )?;
            println!(
                "created {}: chain {:?}, {} validator(s), governance key {}",
                dir.display(),
                g.chain_id,
                g.validators.len(),
                reg.governance_key().display()
            );
            Ok(())
        }
        RegistryCommand::AddValidator { dir } => {
            let reg = RegistryDir::new(&dir);
            let (i, key) = reg.add_validator(&mut rand_core::OsRng)?;
            println!(
                "validator {i}: key file {}, public key {}",
                reg.validator_key(i).display(),
                civis_core::did::multikey_encode(key.public_key())
            );
            Ok(())
        }
        RegistryCommand::Run {
            dir,
            validator,
            db,
            listen,
            no_gossip,
            sync_burst,
            sync_per_second,
        } => Ok(node::run(NodeOptions {
            dir: RegistryDir::new(dir),
            index: validator,
            db,
            listen,
            timing: Timing::default(),
            gossip: !no_gossip,
            stop: None,
            quiet: false,
            bulk_limits: BulkLimits {
                sync: Allowance {
                    burst: sync_burst,
                    per_second: sync_per_second,
                },
                ..BulkLimits::default()
            },
        })?),
        RegistryCommand::Keygen { out } => {
            let key = SoftwareKey::generate(&mut rand_core::OsRng);
            let next = SoftwareKey::generate(&mut rand_core::OsRng);
            let did = Did::from_inception(key.public_key(), &KeyCommitment::to(next.public_key()));
            write_key(&out, &key, Some(did.key_url(1).to_string()))?;
            write_key(
                &next_key_path(&out),
                &next,
                Some(did.key_url(2).to_string()),
            )?;
            println!("{did}");
            Ok(())
        }
        RegistryCommand::Tx(args) => runtime()?.block_on(tx(args)),
        RegistryCommand::Resolve { node, did } => runtime()?.block_on(async move {
            let did = Did::parse(&did)?;
            let client = Client::new(&node)?;
            let verified = client.did(&did).await?.verify(&did)?;
            // The document printed is the one the proven record describes, not the node's.
            println!("{}", serde_json::to_string_pretty(&verified.document)?);
            eprintln!(
                "record proven against public root {} of the header at height {} (the header \
                 itself is as trusted as the node; a synced snapshot or certificate vouches for it)",
                hex::encode(verified.header.public_root),
                verified.header.height
            );
            Ok(())
        }),
        RegistryCommand::Sync {
            node,
            genesis,
            snapshot,
        } => runtime()?.block_on(async move {
            let text = std::fs::read_to_string(&genesis)
                .with_context(|| format!("cannot read {}", genesis.display()))?;
            let genesis = civis_core::chain::state::Genesis::from_json(&text)?;
            let client = Client::new(&node)?;
            let r = sync_snapshot(&client, &genesis, &snapshot).await?;
            let age = now().saturating_sub(r.time).max(0);
            println!(
                "{} {}: height {}, state root {}, age {age} s, bundle {} bytes, \
                 validator set of epoch {} ({} change(s) followed)",
                if r.from.is_some() {
                    "updated"
                } else {
                    "created"
                },
                snapshot.display(),
                r.height,
                hex::encode(r.state_root),
                r.bundle_bytes,
                r.set_epoch,
                r.set_changes
            );
            Ok(())
        }),
    }
}

fn parse_grants(grants: &[String]) -> Result<ElementGrants> {
    let mut out: ElementGrants = Vec::new();
    for g in grants {
        let [doc_type, ns, element] = g.splitn(3, '/').collect::<Vec<_>>()[..] else {
            bail!("grant {g:?} is not docType/namespace/element");
        };
        let (doc_type, ns, element) = (doc_type.to_owned(), ns.to_owned(), element.to_owned());
        let pos = match out.iter().position(|(d, _)| *d == doc_type) {
            Some(p) => p,
            None => {
                out.push((doc_type, Vec::new()));
                out.len() - 1
            }
        };
        let Some((_, namespaces)) = out.get_mut(pos) else {
            bail!("grant bookkeeping");
        };
        match namespaces.iter_mut().find(|(n, _)| *n == ns) {
            Some((_, elements)) => elements.push(element),
            None => namespaces.push((ns, vec![element])),
        }
    }
    Ok(out)
}

/// `--require element=JSON …` as an election's eligibility rule, checked
/// (`Election::check_rule`).
fn election_rule(require: &[String]) -> Result<Vec<(String, ciborium::Value)>> {
    let mut eligibility = Vec::new();
    for r in require {
        let (k, v) = r
            .split_once('=')
            .ok_or_else(|| anyhow!("--require {r:?} is not element=value"))?;
        let json = serde_json::from_str(v).with_context(|| format!("--require {k}"))?;
        eligibility.push((k.to_owned(), json_to_cbor(&json)?));
    }
    civis_core::evote::Election::check_rule(&eligibility)?;
    Ok(eligibility)
}

fn json_to_cbor(v: &serde_json::Value) -> Result<ciborium::Value> {
    Ok(match v {
        serde_json::Value::Bool(b) => ciborium::Value::Bool(*b),
        serde_json::Value::Number(n) => ciborium::Value::Integer(
            n.as_i64()
                .ok_or_else(|| anyhow!("only integers are supported, not {n}"))?
                .into(),
        ),
        serde_json::Value::String(s) => ciborium::Value::Text(s.clone()),
        // "Any one of" (e.g. a set of districts); one level only.
        serde_json::Value::Array(items) if items.iter().all(|i| !i.is_array()) => {
            ciborium::Value::Array(items.iter().map(json_to_cbor).collect::<Result<_>>()?)
        }
        other => bail!("unsupported requirement value {other}"),
    })
}

async fn tx(args: TxArgs) -> Result<()> {
    let (key, kid) = read_key(&args.key)?;
    let client = Client::new(&args.node)?;
    let chain = client.health().await?.chain_id;
    let next_path = next_key_path(&args.key);
    let mut rotated: Option<(SoftwareKey, SoftwareKey)> = None;
    let (signer, op) = match args.op {
        TxOp::CreateDid => {
            let (next, _) = read_key(&next_path)
                .with_context(|| format!("create-did needs {}", next_path.display()))?;
            let commitment = KeyCommitment::to(next.public_key());
            let did = Did::from_inception(key.public_key(), &commitment);
            (
                did.key_url(1),
                Op::CreateDid {
                    key: key.public_key().clone(),
                    next: commitment,
                },
            )
        }
        other => {
            let kid = kid.ok_or_else(|| anyhow!("{} has no kid (DID URL)", args.key.display()))?;
            let signer = DidUrl::parse(&kid)?;
            let op = match other {
                TxOp::CreateDid => unreachable!("handled above"),
                TxOp::Rotate => {
                    let (next, _) = read_key(&next_path)?;
                    // The key after `next` is committed to by this transaction: it is on disk
                    // before the transaction leaves (reused if an earlier attempt left it), so
                    // no crash can lose the only key the chain will accept next.
                    let after_path = sibling_key_path(&args.key, "after");
                    let after = if after_path.exists() {
                        read_key(&after_path)?.0
                    } else {
                        let k = SoftwareKey::generate(&mut rand_core::OsRng);
                        write_key(&after_path, &k, None)?;
                        k
                    };
                    let op = Op::RotateKey {
                        key: next.public_key().clone(),
                        next: KeyCommitment::to(after.public_key()),
                    };
                    rotated = Some((next, after));
                    op
                }
                TxOp::Deactivate => Op::Deactivate,
                TxOp::AccreditIssuer {
                    issuer,
                    doc_types,
                    until,
                } => Op::AccreditIssuer {
                    issuer: Did::parse(&issuer)?,
                    doc_types,
                    until,
                },
                TxOp::RevokeIssuer { issuer } => Op::RevokeIssuer {
                    issuer: Did::parse(&issuer)?,
                },
                TxOp::AccreditKiosk {
                    kiosk,
                    grants,
                    purpose,
                    not_before,
                    not_after,
                    statement_out,
                } => {
                    // Cards check the statement against the kiosk's current key, so take it
                    // from the chain (with its proof), not from the operator.
                    let kiosk = Did::parse(&kiosk)?;
                    let record = client.did(&kiosk).await?.verify(&kiosk)?.record;
                    let accreditation = civis_core::kiosk::KioskAccreditation {
                        chain: chain.clone(),
                        kiosk: kiosk.clone(),
                        key: record.key,
                        grants: parse_grants(&grants)?,
                        purpose,
                        not_before,
                        not_after,
                    };
                    let statement = accreditation.sign(&signer, &key)?;
                    if let Some(path) = statement_out {
                        std::fs::write(&path, &statement)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    Op::AccreditKiosk {
                        kiosk,
                        grants: accreditation.grants,
                        purpose: accreditation.purpose,
                        not_before,
                        not_after,
                        statement,
                    }
                }
                TxOp::CreateStatusList { list, bits, size } => {
                    Op::CreateStatusList { list, bits, size }
                }
                TxOp::StatusUpdate { list, set } => {
                    let mut changes = Vec::new();
                    for s in &set {
                        let (i, v) = s
                            .split_once('=')
                            .ok_or_else(|| anyhow!("--set {s:?} is not INDEX=VALUE"))?;
                        changes.push((i.parse()?, v.parse()?));
                    }
                    Op::UpdateStatus {
                        list,
                        delta: StatusDelta::from_changes(changes),
                    }
                }
                // Enough for a governance threshold of one (what `init` creates); co-signed
                // approvals for larger thresholds are built with `civis_core::chain::tx::approve`.
                TxOp::SetValidators { validators } => Op::SetValidators {
                    validators: validators
                        .iter()
                        .map(|v| validator_key(v))
                        .collect::<Result<_>>()?,
                    approvals: Vec::new(),
                },
                TxOp::RegisterElection {
                    id,
                    require,
                    opens,
                    closes,
                    reauth,
                } => {
                    let eligibility = election_rule(&require)?;
                    Op::RegisterElection {
                        id,
                        eligibility,
                        opens,
                        closes,
                        reauth: civis_core::evote::Reauth::parse(&reauth)
                            .ok_or_else(|| anyhow!("--reauth {reauth:?}"))?,
                    }
                }
            };
            (signer, op)
        }
    };
    let seq = match (args.seq, &op) {
        (Some(s), _) => s,
        (None, Op::CreateDid { .. }) => 0,
        (None, _) => client.did(&signer.did).await?.next_seq,
    };
    let name = op.name();
    let signed = SignedTx::sign(Tx { chain, seq, op }, signer.clone(), &key)?;
    let submitted = client.submit(signed.bytes()).await?;
    if args.no_wait {
        println!("{}", serde_json::to_string(&submitted)?);
        return Ok(());
    }
    let answer = client.wait(&submitted.id, Duration::from_secs(60)).await?;
    println!("{}", serde_json::to_string(&answer)?);
    match &answer.outcome {
        TxOutcome::Included { .. } => {}
        TxOutcome::Refused { reason } => bail!("{name} was refused: {reason}"),
        TxOutcome::Pending => bail!("{name} was not included"),
    }
    if let Some((next, after)) = rotated {
        // The chain moved to the committed key: the key files follow.
        let index = signer
            .fragment
            .trim_start_matches("key-")
            .parse::<u32>()
            .unwrap_or(1);
        let jwk = |k: &SoftwareKey, n: u32| {
            civis_core::jwk::Jwk::from_private(k, Some(signer.did.key_url(n).to_string())).to_json()
        };
        // Each step leaves every key on disk: `after` stays in its own file until both
        // replacements are durable.
        write_secret(&args.key, jwk(&next, index + 1).as_bytes())?;
        write_secret(&next_path, jwk(&after, index + 2).as_bytes())?;
        let _ = std::fs::remove_file(sibling_key_path(&args.key, "after"));
    }
    if name == "create-did" {
        eprintln!("{}", signer.did);
    }
    Ok(())
}
